"""Which stylizations run together as one batch on the device, and at which batch size.

Jobs of one `batch_key` run as one batch (`nst_jax.transfer.stylize_batch`): Adam is
elementwise, so a batch gives each job what it gives alone. A batch runs at one of a few sizes
(`batch_sizes`), padded with copies whose work is thrown away (`Padding`), so that a server
compiles, and a warm-up builds, the programs of those sizes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nst_jax import shapes

if TYPE_CHECKING:
    from nst_jax.transfer import Job


def batch_key(job: Job) -> tuple | None:
    """Jobs with equal keys can run together in one batch: Adam jobs of the same shapes at every
    scale, content and style layers (what a compiled program depends on), and steps and time budget
    (a batch runs on one clock). None for a job that runs alone: L-BFGS would share one line
    search across a batch, and a result must not depend on what it was batched with."""
    o = job.options
    if o.optimizer != "adam":
        return None
    # the layers as given: a job that leaves them to the network gets the same ones as another that does
    return (shapes.scale_shapes(job.content.shape, o), o.steps, o.step_ratio, o.max_seconds, o.content_layer,
            *(tuple(name for name, _ in layers or ()) for layers in (o.style_layers, o.fine_style_layers)))


def check_batch(jobs: Sequence[Job], batch_size: int | None = None) -> None:
    """Raise ValueError unless `jobs` may run as one batch of `batch_size` (default: as many as
    they are): one `batch_key`, not None where there are several, and no fewer places than jobs."""
    keys = {batch_key(job) for job in jobs}
    if len(jobs) > 1 and (len(keys) != 1 or None in keys):
        raise ValueError("jobs of one batch need the same batch_key, not None")
    if jobs and batch_size is not None and (batch_size < len(jobs) or None in keys and batch_size > 1):
        raise ValueError(f"a batch of {len(jobs)} jobs cannot run as {batch_size}")


def batch_size_for(jobs: int, max_batch: int) -> int:
    """The size of the batch that `jobs` jobs run as where at most `max_batch` run together: the
    next power of two, at most `max_batch`, never fewer than `jobs`. A batch of 3 then runs the
    programs of 4 (a quarter of its work wasted), so that a server compiles a few batch sizes,
    and a warm-up can build them all (`batch_sizes`), rather than one per number of requests."""
    size = 1
    while size < jobs:
        size *= 2
    return max(jobs, min(size, max_batch))


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """Every `batch_size_for` where at most `max_batch` jobs run together: 1, 2, 4, ..., `max_batch`."""
    return tuple(sorted({batch_size_for(n, max_batch) for n in range(1, max_batch + 1)}))


class Padding(Exception):
    """The outcome of a copy of a job that only fills its batch up to its batch size: no one waits
    for it, so it is done from the start (no reports, no result; the batch does not wait for it)."""

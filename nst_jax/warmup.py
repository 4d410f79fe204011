"""Compile ahead of the first request: every program a request at given sizes can need.

A request compiles, per scale shape, the Adam loop (`optim.run_steps`), the content and style
feature programs (`model.extract_features` at the content layer and at the style layers),
`optim.resize_carry` between consecutive scales, and a few dozen small programs for the eager
operations around them (Gram matrices, blending, the averaged image, previews). Rather than
list those, `warmup` runs one real one-step stylization per *shape family*: each distinct
sequence of scale shapes (`shapes.scale_shapes`) a content image can give at a size. That
fills the persistent compilation cache (`model.enable_compilation_cache`) for later processes
and this process's own in-memory caches, so its first request compiles nothing.

What it cannot cover: the style is analysed at `shapes.style_longest`, which for a style image
smaller than the scale's longest side is that image's own size (rounded down to SIZE_STEP), so
such a style still compiles its feature program (and its Gram operations) on first use;
`styles` warms given images (a server's built-in styles) exactly. Batches of several requests
are warmed where asked (`max_batch`: each of `batching.batch_sizes`, the sizes a server pads
its batches to). Options other than the defaults' shapes (`multiscale`, `min_scale`,
`scale_ratio`, `max_scales`, `content_layer`) and L-BFGS are not warmed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from nst_jax import batching, images, shapes, transfer
from nst_jax.model import Model, load_model
from nst_jax.options import Options

# Wraps every compilation, whether XLA compiles or the persistent cache supplies the program.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
# The steps before it: tracing the Python function to a jaxpr, and lowering that to MLIR. JAX's
# own timings of the three, by event name (a server adds them up per request).
COMPILE_PHASES = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower", _COMPILE_EVENT: "compile"}


@dataclass(frozen=True)
class SizeReport:
    """What warming one size did: `families` shape families run, `programs` programs
    built (`loaded` of them read from the persistent cache, the rest compiled by XLA),
    `by_function` {jitted function or eager operation: (programs, seconds building them)},
    `phases` {"trace", "lower", "compile" (or load): seconds summed over threads}, all in
    `seconds` of wall time."""

    size: int
    families: int
    programs: int
    loaded: int
    by_function: dict[str, tuple[int, float]]
    phases: dict[str, float]
    seconds: float

    def line(self) -> str:
        top = sorted(self.by_function.items(), key=lambda item: -item[1][1])[:4]
        return (f"{self.size} px: {self.families} shape families, {self.programs} programs "
                f"({self.programs - self.loaded} compiled, {self.loaded} from the cache) in {self.seconds:.1f} s ("
                + ", ".join(f"{phase} {secs:.1f} s" for phase, secs in self.phases.items()) + "); most time: "
                + ", ".join(f"{name} {n} in {secs:.1f} s" for name, (n, secs) in top))


class ProgramCount:
    """Programs built while counting (`counting_programs`), from JAX's monitoring events."""

    def __init__(self):
        self.by_function: dict[str, tuple[int, float]] = {}
        self.phases = {phase: 0.0 for phase in COMPILE_PHASES.values()}
        self.loaded = 0
        self._lock = threading.Lock()  # events come from every thread that compiles

    def total(self) -> int:
        return sum(n for n, _ in self.by_function.values())

    def on_duration(self, event: str, seconds: float, fun_name: str = "?", **_) -> None:
        with self._lock:
            if event in COMPILE_PHASES:
                self.phases[COMPILE_PHASES[event]] += seconds
            if event == _COMPILE_EVENT:
                name = fun_name.removeprefix("jit(").removesuffix(")")
                n, total = self.by_function.get(name, (0, 0.0))
                self.by_function[name] = (n + 1, total + seconds)

    def on_event(self, event: str, **_) -> None:
        if event == _CACHE_HIT_EVENT:
            with self._lock:
                self.loaded += 1


@contextlib.contextmanager
def counting_programs() -> Iterator[ProgramCount]:
    """Within: a `ProgramCount` of the programs built (compiled or read from the persistent
    cache), readable after the block too."""
    count = ProgramCount()
    jax.monitoring.register_event_duration_secs_listener(count.on_duration)
    jax.monitoring.register_event_listener(count.on_event)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(count.on_duration)
        jax.monitoring.unregister_event_listener(count.on_event)


def families(size: int, options: Options = Options(),
             aspects: Sequence[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """One content shape (H, W) per distinct `shapes.scale_shapes` at `size` px, over every
    aspect ratio, portrait and landscape (a sweep of the short side 1 px at a time, finer than
    any bucket), or only the families of `aspects` [(width, height), ...]. The long side is
    at least 1024 px and `size`, so a style image of the same shape is analysed at full scale."""
    options = dataclasses.replace(options, size=size)
    long_side = max(1024, size)
    if aspects is None:
        candidates = [shape for short in range(1, long_side + 1) for shape in ((short, long_side), (long_side, short))]
    else:
        candidates = [images.fit_shape(h, w, long_side) for w, h in aspects]
    found: dict[tuple, tuple[int, int]] = {}
    for shape in candidates:
        found.setdefault(shapes.scale_shapes(shape, options), shape)
    return list(found.values())


def noise_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A (H, W, 3) float32 image in [0, 1] of uniform noise (any pixels compile the same programs)."""
    return np.random.default_rng(seed).random((*shape, 3), np.float32)


def warm_family(model: Model, shape: tuple[int, int], options: Options, batch: int = 1) -> None:
    """One real stylization of a `shape` content image, one step per scale, with a style image
    of the same shape, reporting progress as a server does (previews included); as a batch of
    `batch` such jobs, each reporting (a preview is taken out of the batch per job)."""
    image = noise_image(shape)
    # the colours of the photo change no program: the transfer's seconds are not worth spending here
    job = transfer.Job(image, [image], dataclasses.replace(options, steps=1, match_colors=False),
                       on_progress=lambda _: None)
    transfer.stylize_batch([job] * batch, model)


def warm_styles(model: Model, styles: Sequence[np.ndarray], size: int, options: Options) -> None:
    """The Gram targets of `styles` (h, w, 3) at every scale of `size`, as a request computes
    them (kept in `gram_cache.style_grams`, so a request with one of them skips that too)."""
    options = dataclasses.replace(options, size=size)
    for scale, longest in enumerate(shapes.scale_sides(options)):
        for style in styles:
            transfer.style_targets(model, [style], np.ones(1), longest, options.style_scale,
                                   tuple(dict(options.style_layers_at(scale, model.weights.edge_tuned))))


def cache_summary() -> str:
    """Where the persistent compilation cache is and how big: "DIR: N files, X MB", or "off"."""
    folder = jax.config.jax_compilation_cache_dir
    if not folder or not jax.config.jax_enable_compilation_cache:
        return "off"
    files = [f for f in Path(folder).rglob("*") if f.is_file()]
    return f"{folder}: {len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.1f} MB"


def default_workers() -> int:
    """Families warmed at once: XLA compiles a program on one core, so one per core (at most 4:
    the Python tracing of each shares one interpreter lock)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def warmup(sizes: Sequence[int], options: Options = Options(), model: Model | None = None,
           styles: Sequence[np.ndarray] = (), log: Callable[[str], None] | None = None,
           workers: int | None = None, aspects: Sequence[tuple[int, int]] | None = None,
           max_batch: int = 1) -> list[SizeReport]:
    """Build every program a request with `options` (the defaults) at `sizes` px can need,
    into the persistent compilation cache and this process, `workers` families at once
    (default `default_workers()`); only those of content images of `aspects` [(width,
    height), ...] if given. `styles` (h, w, 3) float32 in [0, 1]: style images to analyse
    exactly at every scale. `max_batch`: batches of up to this many such requests too (each
    of `batching.batch_sizes`, which a server pads its batches to; every one more costs about
    one more warm-up of batch 1). `log` gets a line per size."""
    model = model or load_model()
    reports = []
    for size in sizes:
        start = time.perf_counter()
        shapes_ = families(size, options, aspects)
        runs = [(shape, batch) for batch in batching.batch_sizes(max_batch) for shape in shapes_]
        with counting_programs() as count, ThreadPoolExecutor(workers or default_workers()) as pool:
            list(pool.map(lambda run: warm_family(model, run[0], dataclasses.replace(options, size=size), run[1]),
                          runs))
            warm_styles(model, styles, size, options)
        reports.append(SizeReport(size, len(shapes_), count.total(), count.loaded, count.by_function,
                                  {k: round(v, 1) for k, v in count.phases.items()}, time.perf_counter() - start))
        if log:
            log(reports[-1].line())
    return reports


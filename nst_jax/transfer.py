"""Stylization end to end: targets from the images, the optimisation scale by scale, the result.

`stylize` runs one job; `stylize_batch` runs jobs of one `batch_key` together as one batch on
the device. The pieces: `nst_jax.shapes` (the scales and their bucketed shapes),
`nst_jax.problem` (the loss), `nst_jax.losses` (its terms), `nst_jax.optim` (the optimisers).
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color, losses, optim, problem, shapes
from nst_jax import images as image_ops
from nst_jax.model import Model, load_model
from nst_jax.errors import OptionsError
from nst_jax.options import Options
from nst_jax.vgg import layer_names


@dataclass(frozen=True)
class Progress:
    """A progress report, handed to the `on_progress` callback between chunks of steps.

    step/total count optimizer steps (Adam steps or L-BFGS iterations) over all scales;
    scale is the 0-based index of the current scale of `scales`; shape is its (H, W);
    loss the weighted total loss of the last step; elapsed seconds since the start;
    preview the current image (H, W, 3) in [0, 1], included now and then, else None;
    evaluations of the loss at this scale so far (Adam: one a step; L-BFGS: its line
    searches may take more).
    """

    step: int
    total: int
    scale: int
    scales: int
    shape: tuple[int, int]
    loss: float
    elapsed: float
    preview: np.ndarray | None = None
    evaluations: int = 0


class _GramCache:
    """Bounded LRU of a style's Gram matrices, keyed by the model, the style's pixels and the
    size it is analysed at, so a repeated style (common for a web service) is not recomputed."""

    def __init__(self, capacity: int = 64):
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, model: Model, style: np.ndarray, longest: int, layers: tuple[str, ...]) -> dict[str, jax.Array]:
        """{layer: (1, C, C)} of `layers` of `style` (h, w, 3) resized to longest side `longest`."""
        # The model itself, not id(model): an id can be reused by a later object.
        key = (model, longest, layers, style.shape, hashlib.sha1(np.ascontiguousarray(style).tobytes()).hexdigest())
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        shape = shapes.working_shape(*style.shape[:2], longest)
        feats = model.features(image_ops.resize(style, *shape)[None], layers)
        grams = {name: losses.gram(f) for name, f in feats.items()}
        with self._lock:
            self._items[key] = grams
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return grams


style_grams = _GramCache()


def style_targets(model: Model, styles: Sequence[np.ndarray], blend: np.ndarray, longest: int,
                  style_scale: float, layers: tuple[str, ...]) -> dict[str, jax.Array]:
    """The `blend`-weighted mean of the styles' Grams {layer: (1, C, C)} of `layers` for a
    content scale of longest side `longest` px (each style analysed at `shapes.style_longest`).
    Blending Grams equals blending the style losses up to a constant."""
    grams = [style_grams.get(model, s, shapes.style_longest(s.shape, longest, style_scale), layers) for s in styles]
    return {n: sum(float(w) * g[n] for w, g in zip(blend, grams)) for n in layers}


def targets(model: Model, content: np.ndarray, styles: Sequence[np.ndarray], blend: np.ndarray,
            options: Options) -> dict:
    """The targets of one image at one scale, by loss term (`nst_jax.losses.TERMS`): content
    {layer: activations (1, h, w, C)} of `content` (1, H, W, 3) at `options.content_layer`;
    style {"grams": `style_targets` at this scale, "layer_weights": {layer: (1,)}}; tv None."""
    layers = tuple(dict(options.style_layers))
    return {"content": model.features(content, (options.content_layer,)),
            "style": {"grams": style_targets(model, styles, blend, max(content.shape[1:3]), options.style_scale,
                                             layers),
                      "layer_weights": {n: jnp.asarray([w], jnp.float32) for n, w in options.style_layers}},
            "tv": None}


@dataclass(frozen=True)
class Job:
    """One stylization: images (H, W, 3) float32 RGB in [0, 1], its options and progress callback."""

    content: np.ndarray
    styles: Sequence[np.ndarray]
    options: Options = Options()
    on_progress: Callable[[Progress], None] | None = None


def scale_shapes(content_shape: tuple[int, ...], options: Options) -> tuple[tuple[int, int], ...]:
    """Working (H, W) of each scale, coarse to fine, for a content image of `content_shape`."""
    sizes = (shapes.scale_sizes(options.size, options.min_scale, options.scale_ratio) if options.multiscale
             else [shapes.round_up(options.size)])
    return tuple(shapes.working_shape(*content_shape[:2], s) for s in sizes)


def batch_key(job: Job) -> tuple | None:
    """Jobs with equal keys can run together in one batch: Adam jobs of the same shapes at every
    scale, steps, content and style layers (everything a compiled program depends on). None for a job
    that runs alone: L-BFGS would share one line search across a batch, and a result must not
    depend on what it was batched with."""
    if job.options.optimizer != "adam":
        return None
    return (scale_shapes(job.content.shape, job.options), job.options.steps, job.options.content_layer,
            tuple(name for name, _ in job.options.style_layers))


@dataclass
class _Prepared:
    """A job as the optimisation sees it (luminance only when colours are preserved)."""

    job: Job
    content: np.ndarray
    styles: list[np.ndarray]
    blend: np.ndarray
    outcome: np.ndarray | BaseException | None = None  # set when the job is stopped or done

    @classmethod
    def of(cls, job: Job) -> "_Prepared":
        if not job.styles:
            raise ValueError("at least one style image is needed")
        job.options.validate(n_styles=len(job.styles))
        blend = np.asarray(job.options.style_blend or [1.0] * len(job.styles), np.float64)
        content, styles = job.content, list(job.styles)
        if job.options.preserve_color:
            content = color.luminance_rgb(content)
            styles = [color.match_luminance(color.luminance_rgb(s), content) for s in styles]
        return cls(job, content, styles, blend / blend.sum())

    def finish(self, image: np.ndarray) -> np.ndarray:
        out_shape = image_ops.fit_shape(*self.content.shape[:2], self.job.options.size)
        result = image_ops.resize(np.asarray(image, np.float32), *out_shape)
        if self.job.options.preserve_color:
            result = color.transfer_luminance(result, image_ops.resize(self.job.content, *out_shape))
        return result


def _batch_targets(model: Model, prepared: Sequence[_Prepared], contents: np.ndarray) -> dict:
    """`targets` of each job at this scale, stacked on the batch axis; `contents` (N, H, W, 3)."""
    per_job = [targets(model, contents[i:i + 1], p.styles, p.blend, p.job.options) for i, p in enumerate(prepared)]
    return jax.tree_util.tree_map(lambda *t: jnp.concatenate(t), *per_job)


def _first_image(prepared: Sequence[_Prepared], contents: np.ndarray) -> np.ndarray:
    """Each job's start at the coarsest scale: its content (N, H, W, 3), or uniform noise of its seed."""
    return np.concatenate([
        jax.random.uniform(jax.random.PRNGKey(p.job.options.seed), contents[i:i + 1].shape)
        if p.job.options.init == "noise" else contents[i:i + 1]
        for i, p in enumerate(prepared)])


def stylize_batch(jobs: Sequence[Job], model: Model | None = None) -> list[np.ndarray | BaseException]:
    """Run jobs of one `batch_key` together, as one batch on the device.

    A job whose `on_progress` raises is stopped: it gets no more reports, and its slot in
    the returned list holds the exception instead of an image. The batch ends early when
    every job has stopped. Returns, per job, (H', W', 3) float32 in [0, 1] or an exception.
    """
    keys = {batch_key(job) for job in jobs}
    if len(jobs) > 1 and (len(keys) != 1 or None in keys):
        raise ValueError("jobs of one batch need the same batch_key, not None")
    if not jobs:
        return []
    first = jobs[0].options
    model = model or load_model()
    prepared = [_Prepared.of(job) for job in jobs]  # validates the options
    for name, layers in (("content_layer", [first.content_layer]), ("style_layers", dict(first.style_layers))):
        for layer in layers:
            if layer not in layer_names(model.weights.arch):
                raise OptionsError(f"option {name!r} {layer!r} is not a layer of {model.weights.arch}, "
                                   "this deployment's network")
    loss_weights = problem.loss_weights([j.options for j in jobs])
    lr = jnp.asarray([j.options.lr for j in jobs], jnp.float32)
    decay = jnp.asarray([j.options.average_decay for j in jobs], jnp.float32)
    scales = scale_shapes(jobs[0].content.shape, first)
    steps = first.steps
    preview_every = max(1, steps // 10)
    start = time.perf_counter()
    image, carry = None, None
    for index, shape in enumerate(scales):
        contents = np.stack([image_ops.resize(p.content, *shape) for p in prepared])
        objective = problem.Problem.of(model, _batch_targets(model, prepared, contents), loss_weights)
        if image is None:
            image = _first_image(prepared, contents)
        else:  # the previous scale's result
            image = np.stack([image_ops.resize(np.asarray(im), *shape) for im in image])
        image = jnp.asarray(image, jnp.float32)

        def report(done, losses_, current, evaluations, index=index, shape=shape):
            with_preview = done == steps or done % preview_every == 0
            for i, p in enumerate(prepared):
                if p.outcome is not None or p.job.on_progress is None:
                    continue
                try:
                    p.job.on_progress(Progress(
                        step=index * steps + done, total=steps * len(scales), scale=index, scales=len(scales),
                        shape=shape, loss=float(losses_[i]), elapsed=time.perf_counter() - start,
                        preview=np.asarray(current[i]) if with_preview else None, evaluations=evaluations))
                except Exception as e:  # noqa: BLE001  (the job's own choice to stop, e.g. Cancelled)
                    p.outcome = e
            return any(p.outcome is None for p in prepared)

        if first.optimizer == "lbfgs":
            image = optim.lbfgs(image, objective, steps, report)
        else:
            carry = optim.AdamCarry.start(image) if carry is None else optim.resize_carry(carry, image)
            carry = optim.adam(carry, objective, lr, decay, steps, report)
            image = carry.result()
        if all(p.outcome is not None for p in prepared):
            break
    for p, im in zip(prepared, np.asarray(image)):
        if p.outcome is None:
            p.outcome = p.finish(im)
    return [p.outcome for p in prepared]


def stylize(content: np.ndarray, styles: Sequence[np.ndarray], options: Options = Options(),
            model: Model | None = None, on_progress: Callable[[Progress], None] | None = None) -> np.ndarray:
    """Repaint `content` in the style of `styles`.

    Args:
      content: (H, W, 3) float32 RGB in [0, 1].
      styles: one or more (h, w, 3) images in [0, 1]; their weights are `options.style_blend`.
      options: see `Options` (validated here against the default `Limits`).
      model: a loaded `Model`; default `load_model()`.
      on_progress: called with a `Progress` between chunks of steps; raising from it
        (e.g. `nst_jax.errors.Cancelled`) stops the run and propagates.
    Returns:
      (H', W', 3) float32 in [0, 1], longest side `options.size`, aspect ratio of `content`.
    """
    outcome = stylize_batch([Job(content, styles, options, on_progress)], model)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome

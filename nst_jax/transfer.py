"""The optimisation: Adam or L-BFGS on the pixels of the image, coarse to fine, compiled once per shape.

Everything here works on float32 RGB arrays in [0, 1]. A batch axis N runs
independent stylizations side by side in one program (Adam is elementwise, so
stacking images is exactly the same as running them apart). L-BFGS would minimise a
batch's summed loss as one problem (one line search), so each L-BFGS job is a batch of its own.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from nst_jax import color
from nst_jax import images as image_ops
from nst_jax import losses
from nst_jax.model import Model, load_model, preprocess
from nst_jax.options import Options
from nst_jax.vgg import VGG

CONTENT_LAYER = "block5_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
MIN_SCALE = 128  # px, longest side of the coarsest scale
# Shapes are bucketed so that a stream of arbitrary requests compiles few programs: the
# optimisation runs at a longest side rounded up to SIZE_STEP (the result is resized to the
# exact size at the end) with the other side a multiple of 1/ASPECT_BUCKETS of it. So each
# scale of a working size has at most 2 * ASPECT_BUCKETS shapes (portrait and landscape).
SIZE_STEP = 32
ASPECT_BUCKETS = 16
# Adam's moment estimates only; the learning rate is applied per image afterwards,
# so it is a traced value (changing it does not recompile) and may differ within a batch.
ADAM = optax.scale_by_adam()


@dataclass(frozen=True)
class Progress:
    """A progress report, handed to the `on_progress` callback between chunks of steps.

    step/total count optimizer steps (Adam steps or L-BFGS iterations) over all scales;
    scale is the 0-based index of the current scale of `scales`; shape is its (H, W);
    loss the weighted total loss of the last step; elapsed seconds since the start;
    preview the current image (H, W, 3) in [0, 1], included now and then, else None.
    """

    step: int
    total: int
    scale: int
    scales: int
    shape: tuple[int, int]
    loss: float
    elapsed: float
    preview: np.ndarray | None = None


def objective(image, net: VGG, params, input_scale, input_offset, targets, loss_weights):
    """Total loss summed over the batch, and the (N, 3) [content, style, tv] terms.

    image (N, H, W, 3) in [0, 1]; targets {"content": (N, h, w, C), "grams": {layer: (N, C, C)}};
    loss_weights (N, 3) [content, style, tv].
    """
    feats = net.apply(params, preprocess(image, input_scale, input_offset),
                      layers=(CONTENT_LAYER, *STYLE_LAYERS))
    terms = jnp.stack([
        losses.content_loss(feats[CONTENT_LAYER], targets["content"]),
        losses.style_loss(feats, targets["grams"], STYLE_LAYERS),
        losses.total_variation(image),
    ], axis=-1)
    return jnp.sum(terms * loss_weights), terms


def adam_step(carry, net, params, input_scale, input_offset, targets, loss_weights, lr):
    """One Adam step on the pixels, then clipping to [0, 1]. carry = (image, adam_state)."""
    image, adam_state = carry
    grad, terms = jax.grad(objective, has_aux=True)(image, net, params, input_scale, input_offset,
                                                    targets, loss_weights)
    direction, adam_state = ADAM.update(grad, adam_state)
    image = jnp.clip(image - lr[:, None, None, None] * direction, 0.0, 1.0)
    return (image, adam_state), jnp.sum(terms * loss_weights, axis=-1)


@functools.partial(jax.jit, static_argnames=("net",), donate_argnums=(0,))
def run_steps(carry, n_steps, net, params, input_scale, input_offset, targets, loss_weights, lr):
    """`n_steps` (traced: one program for every chunk length) steps inside one compiled loop.
    Returns the new carry and the (N,) losses of the last step. On accelerators per-step
    dispatch would leave the device idle; on XLA:CPU the loop is as fast per step as one compiled
    call per step, or faster (BENCHMARKS.md)."""
    def body(_, state):
        carry, _ = state
        return adam_step(carry, net, params, input_scale, input_offset, targets, loss_weights, lr)
    return jax.lax.fori_loop(0, n_steps, body, (carry, jnp.zeros(carry[0].shape[0])))


@functools.partial(jax.jit, static_argnames=("net",))
def loss_and_grad(image, net, params, input_scale, input_offset, targets, loss_weights):
    """For L-BFGS: (total loss summed over the batch, its gradient (N, H, W, 3), per-image
    weighted losses (N,)) at `image` (N, H, W, 3). One compiled call per loss evaluation; SciPy's
    line search runs on the host between them."""
    (total, terms), grad = jax.value_and_grad(objective, has_aux=True)(
        image, net, params, input_scale, input_offset, targets, loss_weights)
    return total, grad, jnp.sum(terms * loss_weights, axis=-1)


# Steps per compiled call are sized so that a report (and a chance to stop: a cancelled
# request, a deadline) comes about this often, and at least every 1/20 of the run. Longer
# calls are a little faster on CPU too (512 px: 1.29 s per step one step per call, 1.23 s two,
# 1.17 s six), so this is seconds, not a fraction of one.
REPORT_EVERY_S = 3.0


MIN_SIDE = 32  # px: block5 sits behind four 2x2 pools, so a shorter side would leave it empty


def working_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """The bucketed (H, W) an image of `height` x `width` is optimised at, longest side `longest`,
    neither side under MIN_SIDE (a very wide image is optimised less wide, then resized back)."""
    h, w = image_ops.fit_shape(height, width, longest, multiple=max(1, longest // ASPECT_BUCKETS))
    return max(h, MIN_SIDE), max(w, MIN_SIDE)


def scale_sizes(size: int, multiscale: bool) -> list[int]:
    """Longest sides of the scales, coarse to fine: halving from `size` while >= MIN_SCALE."""
    sizes = [size]
    while multiscale and sizes[-1] // 2 >= MIN_SCALE:
        sizes.append(sizes[-1] // 2)
    return sizes[::-1]


class _GramCache:
    """Bounded LRU of style Gram targets, keyed by the style's pixels, shape and model,
    so a repeated style (a common case for a web service) is not recomputed."""

    def __init__(self, capacity: int = 64):
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, model: Model, style: np.ndarray, longest: int) -> dict[str, jax.Array]:
        # The model itself, not id(model): an id can be reused by a later object.
        key = (model, longest, style.shape, hashlib.sha1(np.ascontiguousarray(style).tobytes()).hexdigest())
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        shape = working_shape(*style.shape[:2], longest)
        feats = model.features(image_ops.resize(style, *shape)[None], STYLE_LAYERS)
        grams = {name: losses.gram(f) for name, f in feats.items()}
        with self._lock:
            self._items[key] = grams
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return grams


style_grams = _GramCache()


def make_targets(model: Model, content: np.ndarray, styles: Sequence[np.ndarray],
                 blend: np.ndarray, longest: int) -> dict:
    """Targets for one image: content activations of `content` (1, H, W, 3) and the
    `blend`-weighted mean of the styles' Grams, each style resized so its longest side is
    `longest`. Blending Grams equals blending the style losses up to a constant."""
    grams = [style_grams.get(model, s, longest) for s in styles]
    return {
        "content": model.features(content, (CONTENT_LAYER,))[CONTENT_LAYER],
        "grams": {n: sum(float(w) * g[n] for w, g in zip(blend, grams)) for n in STYLE_LAYERS},
    }


Report = Callable[[int, np.ndarray, jax.Array], bool]


def optimize(model: Model, image: jax.Array, targets: dict, loss_weights: jax.Array, lr: jax.Array,
             n_steps: int, report: Report, optimizer: str = "adam") -> jax.Array:
    """Run `n_steps` steps of `optimizer` ("adam" or "lbfgs", see `Options.optimizer`) from
    `image` (N, H, W, 3) with per-image `loss_weights` (N, 3) and Adam's `lr` (N,). Now and then
    `report(steps_done, losses (N,), image)` is called, last with steps_done == n_steps unless
    stopped; it returns False to stop early. Returns the last image."""
    args = (model.net, model.params, model.input_scale, model.input_offset, targets, loss_weights)
    if optimizer == "lbfgs":
        return _lbfgs(image, args, n_steps, report)
    carry = (image, ADAM.init(image))
    done, chunk = 0, 1  # the first call compiles: time the next ones
    while done < n_steps:
        n = min(chunk, n_steps - done)
        start = time.perf_counter()
        carry, losses_ = run_steps(carry, n, *args, lr)
        losses_ = np.asarray(losses_)  # waits for the device
        seconds = time.perf_counter() - start
        done += n
        if not report(done, losses_, carry[0]):
            break
        chunk = max(1, min(n_steps // 20, int(n * REPORT_EVERY_S / max(seconds, 1e-6))))
    return carry[0]


def _lbfgs(image: jax.Array, args: tuple, n_steps: int, report: Report) -> jax.Array:
    """At most `n_steps` iterations of SciPy's L-BFGS-B within [0, 1], reporting after each.

    SciPy works on float64 flat vectors on the host; the loss runs as one compiled call
    (`loss_and_grad`) per evaluation. An iteration may evaluate more than once (line search),
    so evaluations are capped too. If L-BFGS-B stops before `n_steps` (converged, or out of
    evaluations), one last report with steps_done == n_steps completes the progress.
    """
    shape = image.shape
    latest = {}  # image (N, H, W, 3) and per-image losses (N,) of the latest evaluation
    done, going = 0, True

    def fun(flat):
        x = jnp.asarray(flat.reshape(shape), jnp.float32)
        total, grad, losses_ = loss_and_grad(x, *args)
        latest.update(image=x, losses=losses_)
        return float(total), np.asarray(grad, np.float64).ravel()

    def callback(intermediate_result):
        # L-BFGS-B calls back right after the line search's last evaluation, which is the new
        # iterate: `latest` is the image and losses of `intermediate_result.x`.
        nonlocal done, going
        done += 1
        going = report(done, np.asarray(latest["losses"]), latest["image"])
        if not going:
            raise StopIteration  # SciPy >= 1.11 ends the minimisation, keeping this iterate

    result = scipy.optimize.minimize(fun, np.asarray(image, np.float64).ravel(), jac=True, method="L-BFGS-B",
                                     bounds=scipy.optimize.Bounds(0.0, 1.0), callback=callback,
                                     options={"maxiter": n_steps, "maxfun": 2 * n_steps + 20})
    image = jnp.asarray(result.x.reshape(shape), jnp.float32)
    if going and done < n_steps:
        # result.x is the last iterate, but the last evaluation may have been a rejected trial point.
        report(n_steps, np.asarray(loss_and_grad(image, *args)[2]), image)
    return image


@dataclass(frozen=True)
class Job:
    """One stylization: images (H, W, 3) float32 RGB in [0, 1], its options and progress callback."""

    content: np.ndarray
    styles: Sequence[np.ndarray]
    options: Options = Options()
    on_progress: Callable[[Progress], None] | None = None


def working_sizes(options: Options) -> list[int]:
    """Longest side of each scale, coarse to fine: `options.size` rounded up to SIZE_STEP, halved."""
    return scale_sizes(-(-options.size // SIZE_STEP) * SIZE_STEP, options.multiscale)


def scale_shapes(content_shape: tuple[int, ...], options: Options) -> tuple[tuple[int, int], ...]:
    """Working (H, W) of each scale, coarse to fine, for a content image of `content_shape`."""
    return tuple(working_shape(*content_shape[:2], s) for s in working_sizes(options))


def batch_key(job: Job) -> tuple | None:
    """Jobs with equal keys can run together in one batch: Adam jobs of the same shapes at every
    scale and the same steps. None for a job that runs alone: L-BFGS would share one line search
    across a batch, and a result must not depend on what it was batched with."""
    if job.options.optimizer != "adam":
        return None
    return scale_shapes(job.content.shape, job.options), job.options.steps


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


def stylize_batch(jobs: Sequence[Job], model: Model | None = None) -> list[np.ndarray | BaseException]:
    """Run jobs of one `batch_key` together, as one batch on the device.

    A job whose `on_progress` raises is stopped: it gets no more reports, and its slot in
    the returned list holds the exception instead of an image. The batch ends early when
    every job has stopped. Returns, per job, (H', W', 3) float32 in [0, 1] or an exception.
    """
    keys = {batch_key(job) for job in jobs}
    if len(jobs) > 1 and (len(keys) != 1 or None in keys):
        raise ValueError("jobs of one batch need the same batch_key, not None")
    first = jobs[0].options
    shapes, steps, optimizer = scale_shapes(jobs[0].content.shape, first), first.steps, first.optimizer
    model = model or load_model()
    prepared = [_Prepared.of(job) for job in jobs]
    loss_weights = jnp.asarray([[j.options.content_weight, j.options.style_weight, j.options.tv_weight]
                                for j in jobs], jnp.float32)
    lr = jnp.asarray([j.options.lr for j in jobs], jnp.float32)
    sizes = working_sizes(jobs[0].options)
    preview_every = max(1, steps // 10)
    start = time.perf_counter()
    image = None
    for index, (shape, longest) in enumerate(zip(shapes, sizes)):
        contents = np.stack([image_ops.resize(p.content, *shape) for p in prepared])
        targets = jax.tree_util.tree_map(lambda *t: jnp.concatenate(t), *[
            make_targets(model, contents[i:i + 1], p.styles, p.blend, longest) for i, p in enumerate(prepared)])
        if image is not None:
            image = np.stack([image_ops.resize(np.asarray(im), *shape) for im in image])
        else:
            image = np.concatenate([
                jax.random.uniform(jax.random.PRNGKey(p.job.options.seed), (1, *shape, 3))
                if p.job.options.init == "noise" else contents[i:i + 1]
                for i, p in enumerate(prepared)])
        image = jnp.asarray(image, jnp.float32)

        def report(done, losses_, current, index=index, shape=shape):
            with_preview = done == steps or done % preview_every == 0
            for i, p in enumerate(prepared):
                if p.outcome is not None or p.job.on_progress is None:
                    continue
                try:
                    p.job.on_progress(Progress(
                        step=index * steps + done, total=steps * len(shapes), scale=index, scales=len(shapes),
                        shape=shape, loss=float(losses_[i]), elapsed=time.perf_counter() - start,
                        preview=np.asarray(current[i]) if with_preview else None))
                except Exception as e:  # noqa: BLE001  (the job's own choice to stop, e.g. Cancelled)
                    p.outcome = e
            return any(p.outcome is None for p in prepared)

        image = optimize(model, image, targets, loss_weights, lr, steps, report, optimizer)
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

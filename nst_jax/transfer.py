"""Stylization end to end: targets from the images, the optimisation scale by scale, the result.

`stylize` runs one job; `stylize_batch` runs jobs of one `batch_key` together as one batch on
the device. The pieces: `nst_jax.shapes` (the scales and their bucketed shapes),
`nst_jax.problem` (the loss), `nst_jax.losses` (its terms), `nst_jax.optim` (the optimisers).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color, losses, optim, problem, schedule, shapes
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
    searches may take more); seconds_left the estimated seconds until the run ends, from
    step costs measured in this process (`nst_jax.schedule`); budget_cut whether the time
    budget (`Options.max_seconds`) cut the recipe's steps, in which case `total` is the
    steps of the plan cut to fit, and the last report's `step == total` the steps that ran.
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
    seconds_left: float | None = None
    budget_cut: bool = False


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
            options: Options, scale: int) -> dict:
    """The targets of one image at scale `scale` (0: the coarsest), by loss term
    (`nst_jax.losses.TERMS`): content {layer: activations (1, h, w, C)} of `content` (1, H, W, 3)
    at `options.content_layer`; style {"grams": `style_targets` at this scale, "layer_weights":
    {layer: (1,)}} of `options.style_layers_at(scale)`; tv None."""
    style_layers = options.style_layers_at(scale)
    return {"content": model.features(content, (options.content_layer,)),
            "style": {"grams": style_targets(model, styles, blend, max(content.shape[1:3]), options.style_scale,
                                             tuple(dict(style_layers))),
                      "layer_weights": {n: jnp.asarray([w], jnp.float32) for n, w in style_layers}},
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
    o = job.options
    if o.optimizer != "adam":
        return None
    return (scale_shapes(job.content.shape, o), o.steps, o.step_ratio, o.max_seconds, o.content_layer,
            tuple(name for name, _ in o.style_layers_at(0)), tuple(name for name, _ in o.style_layers_at(1)))


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


def plan(content_shape: tuple[int, ...], options: Options) -> schedule.Plan:
    """The recipe's steps at each scale of `scale_shapes`, before any time budget."""
    return schedule.plan_for(scale_shapes(content_shape, options), options.steps, options.step_ratio)


def step_costs(model: Model) -> schedule.StepCosts:
    """This process's measured step costs on `model`'s device."""
    return schedule.device_costs(model.device)


def check_time_budget(content_shape: tuple[int, ...], options: Options, model: Model, batch: int = 1) -> None:
    """Raise OptionsError where `options.max_seconds` is too small for a useful picture of a
    `content_shape` content image at `options.size` on this machine (`schedule.minimum_seconds`)."""
    if options.max_seconds is None:
        return
    need = schedule.minimum_seconds(plan(content_shape, options), step_costs(model), batch)
    if options.max_seconds < need:
        raise OptionsError(f"option 'max_seconds' {options.max_seconds:g} is too small for a {options.size} px "
                           f"picture on this machine ({model.device}): it needs at least {math.ceil(need)} s")


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


def _batch_targets(model: Model, prepared: Sequence[_Prepared], contents: np.ndarray, scale: int) -> dict:
    """`targets` of each job at scale `scale`, stacked on the batch axis; `contents` (N, H, W, 3)."""
    per_job = [targets(model, contents[i:i + 1], p.styles, p.blend, p.job.options, scale)
               for i, p in enumerate(prepared)]
    return jax.tree_util.tree_map(lambda *t: jnp.concatenate(t), *per_job)


def _first_image(prepared: Sequence[_Prepared], contents: np.ndarray) -> np.ndarray:
    """Each job's start at the coarsest scale: its content (N, H, W, 3), or uniform noise of its seed."""
    return np.concatenate([
        jax.random.uniform(jax.random.PRNGKey(p.job.options.seed), contents[i:i + 1].shape)
        if p.job.options.init == "noise" else contents[i:i + 1]
        for i, p in enumerate(prepared)])


class _Padding(Exception):
    """The outcome of a copy of a job that only fills its batch up to `batch_size`: no one waits
    for it, so it is done from the start (no reports, no result; the batch does not wait for it)."""


def stylize_batch(jobs: Sequence[Job], model: Model | None = None,
                  batch_size: int | None = None) -> list[np.ndarray | BaseException]:
    """Run jobs of one `batch_key` together, as one batch on the device.

    A job whose `on_progress` raises is stopped: it gets no more reports, and its slot in
    the returned list holds the exception instead of an image. The batch ends early when
    every job has stopped. `batch_size` (at least len(jobs)): run as a batch of this many, the
    rest copies of the first job whose work is thrown away, so that the programs of that batch
    size serve (`batch_size_for`). Returns, per job, (H', W', 3) float32 in [0, 1] or an exception.
    """
    keys = {batch_key(job) for job in jobs}
    if len(jobs) > 1 and (len(keys) != 1 or None in keys):
        raise ValueError("jobs of one batch need the same batch_key, not None")
    if not jobs:
        return []
    if batch_size is not None and (batch_size < len(jobs) or None in keys and batch_size > 1):
        raise ValueError(f"a batch of {len(jobs)} jobs cannot run as {batch_size}")
    first = jobs[0].options
    model = model or load_model()
    prepared = [_Prepared.of(job) for job in jobs]  # validates the options
    prepared += [dataclasses.replace(prepared[0], outcome=_Padding()) for _ in range((batch_size or 0) - len(jobs))]
    for name, layers in (("content_layer", [first.content_layer]), ("style_layers", dict(first.style_layers)),
                         ("fine_style_layers", dict(first.fine_style_layers or {}))):
        for layer in layers:
            if layer not in layer_names(model.weights.arch):
                raise OptionsError(f"option {name!r} {layer!r} is not a layer of {model.weights.arch}, "
                                   "this deployment's network")
    lr = jnp.asarray([p.job.options.lr for p in prepared], jnp.float32)
    decay = jnp.asarray([p.job.options.average_decay for p in prepared], jnp.float32)
    costs, batch = step_costs(model), len(prepared)
    check_time_budget(jobs[0].content.shape, first, model, batch)
    start = time.perf_counter()
    end = math.inf if first.max_seconds is None else start + first.max_seconds
    recipe = plan(jobs[0].content.shape, first)
    run = _Run(recipe, recipe)
    image, carry = None, None
    for index, shape in enumerate(recipe.shapes):
        scale_start = time.perf_counter()
        run.replan(index, end - scale_start, costs, batch)
        if index > 0 and end - scale_start < costs.setup(shape, batch) + costs.step(shape, batch):
            run.end_here()  # no time for this scale: the picture of the last one is the result
            break
        steps = run.plan.steps[index]
        contents = np.stack([image_ops.resize(p.content, *shape) for p in prepared])
        objective = problem.Problem.of(model, _batch_targets(model, prepared, contents, index),
                                       problem.loss_weights([p.job.options for p in prepared], index))
        if image is None:
            image = _first_image(prepared, contents)
        else:  # the previous scale's result
            image = np.stack([image_ops.resize(np.asarray(im), *shape) for im in image])
        image = jnp.asarray(image, jnp.float32)
        clock = _ScaleClock(costs, shape, batch, scale_start)
        # the time the later scales need, at their planned steps, is kept for them
        deadline = end - run.plan.seconds(costs, batch, index + 1)

        def report(done, losses_, current, evaluations, index=index, shape=shape, clock=clock, deadline=deadline):
            now = clock.observe(done)
            run.losses = losses_
            left = min(end - now, schedule.seconds_left(run.plan, index, done, costs, batch))
            _emit(prepared, lambda i: Progress(
                step=run.steps_before(index) + done, total=run.plan.total, scale=index, scales=len(recipe.shapes),
                shape=shape, loss=float(losses_[i]), elapsed=now - start, preview=np.asarray(current[i]),
                evaluations=evaluations, seconds_left=max(0.0, left), budget_cut=run.cut))
            clock.done = done
            return any(p.outcome is None for p in prepared) and (first.optimizer == "adam" or now < deadline)

        if first.optimizer == "lbfgs":
            image = optim.run_lbfgs(image, objective, steps, report)
        else:
            carry = optim.AdamCarry.start(image) if carry is None else optim.resize_carry(carry, image)
            carry = optim.run_adam(carry, objective, lr, decay, steps, report, deadline=deadline)
            image = carry.result()
        run.ran(index, clock.done)
        if all(p.outcome is not None for p in prepared):
            break
    if run.cut:  # the last report said what was planned then: say what ran
        now = time.perf_counter()
        last = max(0, len(run.ran_steps) - 1)
        _emit(prepared, lambda i: Progress(
            step=run.plan.total, total=run.plan.total, scale=last, scales=len(recipe.shapes),
            shape=recipe.shapes[last], loss=float(run.losses[i]) if run.losses is not None else math.nan, elapsed=now - start, preview=np.asarray(image[i]),
            seconds_left=0.0, budget_cut=True))
    for p, im in zip(prepared, np.asarray(image)):
        if p.outcome is None:
            p.outcome = p.finish(im)
    return [p.outcome for p in prepared[:len(jobs)]]


@dataclass
class _Run:
    """The steps of a run as it goes: the plan (the recipe's, cut to the time budget, and cut
    again where a scale ran short), the steps each finished scale ran."""

    plan: schedule.Plan
    recipe: schedule.Plan
    ran_steps: list[int] = field(default_factory=list)
    losses: np.ndarray | None = None  # (N,) of the latest report

    @property
    def cut(self) -> bool:
        return self.plan.steps != self.recipe.steps

    def replan(self, index: int, seconds: float, costs: schedule.StepCosts, batch: int) -> None:
        """At the start of scale `index`: the recipe's steps from here on, cut to fit `seconds` by
        the costs measured so far (which may give back steps an earlier estimate took)."""
        rest = schedule.Plan(self.recipe.shapes, (*self.ran_steps, *self.recipe.steps[index:]))
        self.plan = rest.fit(seconds, costs, batch, first_scale=index)

    def steps_before(self, index: int) -> int:
        return sum(self.ran_steps[:index])

    def ran(self, index: int, steps: int) -> None:
        """Scale `index` ran `steps` steps; a scale not reached runs none."""
        self.ran_steps.append(steps)
        self.plan = schedule.Plan(self.plan.shapes, (*self.ran_steps, *self.plan.steps[index + 1:]))

    def end_here(self) -> None:
        """No later scale runs."""
        self.plan = schedule.Plan(self.plan.shapes, (*self.ran_steps, *[0] * (len(self.plan.steps) - len(self.ran_steps))))


class _ScaleClock:
    """Measures a scale's costs from its progress reports into `costs`: the seconds before the
    first report, less its steps, are the scale's setup (targets, compiling); the seconds between
    reports over the steps between them, the cost of a step (reporting included)."""

    def __init__(self, costs: schedule.StepCosts, shape, batch: int, start: float):
        self.costs, self.shape, self.batch = costs, shape, batch
        self.start, self.last, self.last_done, self.done = start, None, 0, 0

    def observe(self, done: int) -> float:
        """A report after `done` steps of this scale; returns the time now."""
        now = time.perf_counter()
        if self.last is None:
            step = self.costs.step(self.shape, self.batch)
            self.costs.record(self.shape, self.batch, setup_s=max(0.0, now - self.start - done * step))
        elif done > self.last_done:
            self.costs.record(self.shape, self.batch, steps=done - self.last_done, seconds=now - self.last)
        self.last, self.last_done = now, done
        return now


def _emit(prepared: Sequence[_Prepared], progress: Callable[[int], Progress]) -> None:
    """Hand `progress(i)` to each job still going that has a callback; a job whose callback
    raises is stopped, with the exception as its outcome (its own choice, e.g. Cancelled)."""
    for i, p in enumerate(prepared):
        if p.outcome is not None or p.job.on_progress is None:
            continue
        try:
            p.job.on_progress(progress(i))
        except Exception as e:  # noqa: BLE001
            p.outcome = e


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

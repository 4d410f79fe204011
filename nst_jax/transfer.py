"""Stylization end to end: the scales, coarse to fine, each one's targets and optimisation, the result.

`stylize` runs one job; `stylize_batch` runs jobs of one `nst_jax.batching.batch_key` together as
one batch on the device. The pieces: `nst_jax.shapes` (the scales and their bucketed shapes),
`nst_jax.schedule` (the run's clock: steps per scale, their time, the budget), `nst_jax.problem`
(the loss), `nst_jax.losses` (its terms), `nst_jax.optim` (the optimisers), `nst_jax.strokes`
(the picture between scales), `nst_jax.gram_cache` (the styles' Gram matrices, kept).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import batching, brushwork, color, gram_cache, optim, problem, schedule, shapes, strokes
from nst_jax import images as image_ops
from nst_jax.errors import OptionsError
from nst_jax.messages import Progress
from nst_jax.model import Model, load_model
from nst_jax.options import Options
from nst_jax.vgg import layer_names


def style_targets(model: Model, styles: Sequence[np.ndarray], blend: np.ndarray, longest: int,
                  style_scale: float, layers: tuple[str, ...]) -> dict[str, jax.Array]:
    """The `blend`-weighted mean of the styles' Grams {layer: (1, C, C)} of `layers` for a
    content scale of longest side `longest` px (each style analysed at `shapes.style_longest`).
    Blending Grams equals blending the style losses up to a constant."""
    grams = [gram_cache.style_grams.get(model, s, shapes.style_longest(s.shape, longest, style_scale), layers)
             for s in styles]
    return {n: sum(float(w) * g[n] for w, g in zip(blend, grams)) for n in layers}


def targets(model: Model, content: np.ndarray, styles: Sequence[np.ndarray], blend: np.ndarray,
            options: Options, scale: int) -> dict:
    """The targets of one image at scale `scale` (0: the coarsest), by loss term
    (`nst_jax.losses.TERMS`): content {layer: activations (1, h, w, C)} of `content` (1, H, W, 3)
    at `options.content_layer`; style {"grams": `style_targets` at this scale, "layer_weights":
    {layer: (1,)}} of `options.style_layers_at(scale)` on `model`'s network; tv None."""
    style_layers = options.style_layers_at(scale, model.weights.edge_tuned)
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


def plan(content_shape: tuple[int, ...], options: Options) -> schedule.Plan:
    """The recipe's steps at each scale of `shapes.scale_shapes`, before any time budget."""
    return schedule.plan_for(shapes.scale_shapes(content_shape, options), options.steps, options.step_ratio)


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
    """A job as the optimisation sees it: the content in the styles' colours (`match_colors`), or
    content and styles in luminance only (`preserve_color`)."""

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
        blend = blend / blend.sum()
        content, styles = job.content, list(job.styles)
        if job.options.preserve_color:
            content = color.luminance_rgb(content)
            styles = [color.match_luminance(color.luminance_rgb(s), content) for s in styles]
        elif job.options.match_colors:
            # at the finest scale's size, not the upload's: a 12-megapixel photo would take seconds
            longest = shapes.round_up(job.options.size)
            if max(content.shape[:2]) > longest:
                content = image_ops.resize(content, *image_ops.fit_shape(*content.shape[:2], longest))
            content = color.transfer_colors(content, styles, blend)
        return cls(job, content, styles, blend)

    def with_brushwork(self, image: np.ndarray, strength: float) -> np.ndarray:
        """`image` (H, W, 3), the finished picture at its working shape, with the paintings' brush
        strokes (`brushwork.copy_brushwork`), `strength` times as strong as in the painting, each
        painting at the size it was stylized against. Where the photo is flat, and what follows
        its edges, is the upload's own light: the recoloured photo's is three quarters the
        painting's, flatter, and the layout it keeps is less the photo's."""
        if strength == 0:
            return image
        longest, style_scale = max(image.shape[:2]), self.job.options.style_scale
        paintings = [gram_cache.analysed(s, shapes.style_longest(s.shape, longest, style_scale)) for s in self.styles]
        return brushwork.copy_brushwork(image, image_ops.resize(self.job.content, *image.shape[:2]), paintings,
                                        self.blend, strength)

    def finish(self, image: np.ndarray) -> np.ndarray:
        out_shape = image_ops.fit_shape(*self.job.content.shape[:2], self.job.options.size)
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


def stylize_batch(jobs: Sequence[Job], model: Model | None = None,
                  batch_size: int | None = None) -> list[np.ndarray | BaseException]:
    """Run jobs of one `batching.batch_key` together, as one batch on the device.

    A job whose `on_progress` raises is stopped: it gets no more reports, and its slot in
    the returned list holds the exception instead of an image. The batch ends early when
    every job has stopped. `batch_size` (at least len(jobs)): run as a batch of this many, the
    rest copies of the first job whose work is thrown away, so that the programs of that batch
    size serve (`batching.batch_size_for`). Returns, per job, (H', W', 3) float32 in [0, 1] or
    an exception.
    """
    batching.check_batch(jobs, batch_size)
    if not jobs:
        return []
    run = _BatchRun.start(jobs, model or load_model(), batch_size or len(jobs))
    image, carry = None, None
    for index, shape in enumerate(run.clock.recipe.shapes):
        if not run.clock.start_scale(index):
            break  # no time for this scale: the picture of the last one is the result
        image, carry = run.optimise_scale(index, shape, image, carry)
        run.clock.end_scale()
        if not run.going():
            break
    return run.finish(image)[:len(jobs)]


class _BatchRun:
    """The jobs of one `stylize_batch` as they run: prepared (its padding included), the model,
    the run's clock, and the progress the optimisers `report`."""

    def __init__(self, prepared: list[_Prepared], model: Model, clock: schedule.RunClock):
        self.prepared, self.model, self.clock = prepared, model, clock
        self.options = [p.job.options for p in prepared]
        self.lr, self.decay, self.luminance_step = optim.adam_settings(self.options, model.weights.edge_tuned)
        self.contour_smoothing = [o.on_network("contour_smoothing", model.weights.edge_tuned) for o in self.options]
        self.brushwork = [o.on_network("brushwork", model.weights.edge_tuned) for o in self.options]
        self.losses: np.ndarray | None = None  # (N,) of the latest report

    @classmethod
    def start(cls, jobs: Sequence[Job], model: Model, batch_size: int) -> _BatchRun:
        """Prepare the jobs (validating their options), pad them to `batch_size`, check the time
        budget, and start the clock."""
        prepared = [_Prepared.of(job) for job in jobs]
        prepared += [dataclasses.replace(prepared[0], outcome=batching.Padding())
                     for _ in range(batch_size - len(jobs))]
        first = jobs[0].options
        _check_layers(first, model)
        check_time_budget(jobs[0].content.shape, first, model, batch_size)
        return cls(prepared, model, schedule.RunClock(plan(jobs[0].content.shape, first), step_costs(model),
                                                      batch_size, first.max_seconds))

    def going(self) -> bool:
        """Whether a job still waits for the batch."""
        return any(p.outcome is None for p in self.prepared)

    def optimise_scale(self, index: int, shape: tuple[int, int], image: jax.Array | None,
                       carry: optim.AdamCarry | None) -> tuple[jax.Array, optim.AdamCarry | None]:
        """The picture (N, H, W, 3) of scale `index`, at working `shape`, from the previous scale's
        `image` (None: the first scale's start) and Adam state; and the new Adam state."""
        contents = np.stack([image_ops.resize(p.content, *shape) for p in self.prepared])
        objective = problem.Problem.of(self.model, _batch_targets(self.model, self.prepared, contents, index),
                                       problem.loss_weights(self.options, index))
        if image is None:
            image = _first_image(self.prepared, contents)
        else:
            image = np.stack([image_ops.resize(np.asarray(im), *shape) for im in self.along_contours(image)])
        image, steps = jnp.asarray(image, jnp.float32), self.clock.plan.steps[index]
        if self.options[0].optimizer == "lbfgs":
            return optim.run_lbfgs(image, objective, steps, self.report, self.clock.steps_now), None
        carry = optim.AdamCarry.start(image) if carry is None else optim.resize_carry(carry, image)
        carry = optim.run_adam(carry, objective, self.lr, self.decay, self.luminance_step, steps, self.report,
                               self.clock.steps_now)
        return carry.result(), carry

    def along_contours(self, image: jax.Array) -> jax.Array:
        """The picture (N, H, W, 3) one scale hands to the next, smoothed along its contours where
        the photo is flat (`strokes.along_contours`), by each job's `contour_smoothing`."""
        longest = max(self.contour_smoothing)
        if longest == 0:
            return image
        photos = np.stack([image_ops.resize(p.content, *image.shape[1:3]) for p in self.prepared])
        return strokes.along_contours(image, photos, jnp.asarray(self.contour_smoothing, jnp.float32),
                                      steps=strokes.streamline_steps(longest))

    def report(self, done: int, losses: np.ndarray, current: jax.Array, evaluations: int) -> bool:
        """The optimisers' `optim.Report`: each job's progress after `done` steps of this scale."""
        now, clock = self.clock.observe(done), self.clock
        self.losses, left = losses, clock.seconds_left(now)
        self._emit(lambda i: Progress(
            step=clock.step, total=clock.plan.total, scale=clock.scale, scales=len(clock.recipe.shapes),
            shape=clock.shape, loss=float(losses[i]), elapsed=now - clock.start, preview=np.asarray(current[i]),
            evaluations=evaluations, seconds_left=left, budget_cut=clock.cut))
        return self.going()

    def finish(self, image: jax.Array) -> list[np.ndarray | BaseException]:
        """Every job's outcome: its picture from `image` (N, H, W, 3), or why it stopped. Where the
        time budget cut the plan, a last report first says what ran (the last said what was
        planned then)."""
        if self.clock.cut:
            now, last = self.clock.timer(), max(0, len(self.clock.ran_steps) - 1)
            total = self.clock.plan.total
            self._emit(lambda i: Progress(
                step=total, total=total, scale=last, scales=len(self.clock.recipe.shapes),
                shape=self.clock.recipe.shapes[last], loss=math.nan if self.losses is None else float(self.losses[i]),
                elapsed=now - self.clock.start, preview=np.asarray(image[i]), seconds_left=0.0, budget_cut=True))
        for p, im, strength in zip(self.prepared, np.asarray(image), self.brushwork):
            if p.outcome is None:
                p.outcome = p.finish(p.with_brushwork(im, strength))
        return [p.outcome for p in self.prepared]

    def _emit(self, progress: Callable[[int], Progress]) -> None:
        """Hand `progress(i)` to each job still going that has a callback; a job whose callback
        raises is stopped, with the exception as its outcome (its own choice, e.g. Cancelled)."""
        for i, p in enumerate(self.prepared):
            if p.outcome is not None or p.job.on_progress is None:
                continue
            try:
                p.job.on_progress(progress(i))
            except Exception as e:  # noqa: BLE001
                p.outcome = e


def _check_layers(options: Options, model: Model) -> None:
    """Raise OptionsError where `options` name a layer that `model`'s network lacks."""
    for name, layers in (("content_layer", [options.content_layer]), ("style_layers", dict(options.style_layers or {})),
                         ("fine_style_layers", dict(options.fine_style_layers or {}))):
        for layer in layers:
            if layer not in layer_names(model.weights.arch):
                raise OptionsError(f"option {name!r} {layer!r} is not a layer of {model.weights.arch}, "
                                   "this deployment's network")


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

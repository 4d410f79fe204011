"""A run's clock: how many optimizer steps it takes at each scale, how long they take, and what
fits a time budget.

A run's `Plan` is its steps per scale, coarse to fine. Its seconds are estimated from costs
measured in this process (`StepCosts`, the one estimator): the seconds of one step at each
working shape and batch size, and the seconds a scale takes before its steps run (its targets,
and compiling where its programs are new). A shape not yet run is estimated from a measured one
in proportion to its pixels (a convolution's cost), or from `DEFAULT_COSTS` before anything ran.
A `RunClock` keeps one run's time as it goes: it measures the progress reports into the costs,
cuts the plan to the budget, says the seconds left, and paces the optimisers (`steps_now`: how
many steps may run before the next report).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Shape = tuple[int, int]  # (H, W), px

# Before anything was measured in this process: (seconds per step per megapixel of the working
# shape, seconds a scale takes before its first step, compiling included). Rough figures of the
# VGG16 default recipe (BENCHMARKS.md); the first measured step replaces them.
DEFAULT_COSTS = {"cpu": (2.3, 6.0), "gpu": (0.012, 12.0), "tpu": (0.012, 12.0)}
# The smallest budget worth running buys this many steps at the coarsest scale (and the finer
# scales' share): with fewer, the picture has not yet taken the style (QUALITY.md's curves), and
# a clear refusal is better than a photo with a tint.
MIN_STEPS = 30


def scale_steps(n_scales: int, steps: int, step_ratio: float) -> tuple[int, ...]:
    """Steps of each scale, coarse to fine: `steps` at the coarsest, each finer scale `step_ratio`
    times the previous one's (rounded, at least 1). A finer scale starts from the coarser one's
    picture, so it has only detail to add, at a higher cost per step."""
    return tuple(max(1, round(steps * step_ratio ** i)) for i in range(n_scales))


# Steps per compiled call are sized so that a report (and a chance to stop: a cancelled
# request, a deadline) comes about this often, and at least every 1/20 of the scale. Longer
# calls are a little faster on CPU too (BENCHMARKS.md), so this is seconds, not a fraction.
REPORT_EVERY_S = 3.0

# A scale whose programs are compiled still computes its targets before its first step: about
# this many steps' worth (a forward pass of the content and of each style, Gram matrices).
SETUP_IN_STEPS = 3


# A step's measured seconds sway from one progress report to the next (a preview to encode and
# send, other processes on the machine): the estimate is the mean over the recent steps, the
# earlier ones fading by half every this many steps. Counted in steps, not reports, because
# reports may come every few steps: one slow report then moves the estimate a little, and a
# lasting change of speed still takes it over within a few half-lives.
STEP_COST_HALF_LIFE = 20  # steps


class StepCosts:
    """Seconds measured in this process, by (working shape, batch size): per optimizer step, and
    per scale before its first step. Thread-safe; one per process (`device_costs`)."""

    def __init__(self, platform: str = "cpu"):
        self._step: dict[tuple[Shape, int], tuple[float, float]] = {}  # (seconds, steps), fading
        self._setup: dict[tuple[Shape, int], float] = {}
        self._compiled: set[tuple[Shape, int]] = set()
        self._lock = threading.Lock()
        self.platform = platform

    def record(self, shape: Shape, batch: int, steps: int = 0, seconds: float = 0.0,
               setup_s: float | None = None) -> None:
        """Take a measurement: `steps` steps that took `seconds` together (into the fading mean,
        `STEP_COST_HALF_LIFE`), or a scale's seconds before its first step (the latest is kept). The
        first setup of a shape in this process compiles its programs; later ones do not, so it is
        not what the next run pays."""
        with self._lock:
            key = (shape, batch)
            if steps > 0 and seconds > 0:
                total, counted = self._step.get(key, (0.0, 0.0))
                fade = 0.5 ** (steps / STEP_COST_HALF_LIFE)
                self._step[key] = (fade * total + seconds, fade * counted + steps)
            if setup_s is not None and setup_s >= 0:
                if key in self._compiled:
                    self._setup[key] = setup_s
                self._compiled.add(key)

    def step(self, shape: Shape, batch: int = 1) -> float:
        """Estimated seconds of one step at `shape` for a batch of `batch` images."""
        with self._lock:
            measured = {key: seconds / steps for key, (seconds, steps) in self._step.items()}
        if (shape, batch) in measured:
            return measured[shape, batch]
        if measured:  # the measured shape nearest in pixels, scaled by pixels and batch
            (near, near_batch), seconds = min(measured.items(),
                                              key=lambda kv: abs(math.log(_pixels(kv[0][0]) / _pixels(shape))))
            return seconds * (_pixels(shape) * batch) / (_pixels(near) * near_batch)
        per_megapixel, _ = DEFAULT_COSTS.get(self.platform, DEFAULT_COSTS["gpu"])
        return per_megapixel * _pixels(shape) * batch / 1e6

    def setup(self, shape: Shape, batch: int = 1) -> float:
        """Estimated seconds of a scale at `shape` before its first step: as measured, or, for a
        shape that ran once (compiling), `SETUP_IN_STEPS` steps; else the default (compiling)."""
        with self._lock:
            if (shape, batch) in self._setup:
                return self._setup[shape, batch]
            compiled = (shape, batch) in self._compiled
        if compiled:
            return SETUP_IN_STEPS * self.step(shape, batch)
        return DEFAULT_COSTS.get(self.platform, DEFAULT_COSTS["gpu"])[1]


def _pixels(shape: Shape) -> int:
    return shape[0] * shape[1]


@dataclass(frozen=True)
class Plan:
    """Steps per scale of one run, coarse to fine; `shapes` are the scales' working (H, W)."""

    shapes: tuple[Shape, ...]
    steps: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.steps)

    def seconds(self, costs: StepCosts, batch: int = 1, first_scale: int = 0) -> float:
        """Estimated seconds of the scales from `first_scale` on, each's setup included."""
        return sum(costs.setup(shape, batch) + n * costs.step(shape, batch)
                   for shape, n in zip(self.shapes[first_scale:], self.steps[first_scale:]))

    def scaled(self, fraction: float, first_scale: int = 0) -> "Plan":
        """The steps of the scales from `first_scale` on times `fraction` (rounded down, at least
        1 where there were any); earlier scales unchanged."""
        steps = [n if i < first_scale else max(min(n, 1), math.floor(n * fraction)) for i, n in enumerate(self.steps)]
        return Plan(self.shapes, tuple(steps))

    def fit(self, seconds: float, costs: StepCosts, batch: int = 1, first_scale: int = 0) -> "Plan":
        """This plan, with the steps of the scales from `first_scale` on cut by one common factor
        so that they take at most `seconds` by `costs` (unchanged if they fit; steps only shrink)."""
        setup = sum(costs.setup(s, batch) for s in self.shapes[first_scale:])
        work = self.seconds(costs, batch, first_scale) - setup
        if work <= 0 or setup + work <= seconds:
            return self
        return self.scaled(max(0.0, seconds - setup) / work, first_scale)


def minimum_seconds(plan: Plan, costs: StepCosts, batch: int = 1) -> float:
    """The smallest budget that still gives a useful picture: the plan cut to `MIN_STEPS` steps at
    its coarsest scale (all of it, where it has fewer)."""
    return plan.scaled(min(1.0, MIN_STEPS / max(1, plan.steps[0]))).seconds(costs, batch)


def seconds_left(plan: Plan, scale: int, steps_done: int, costs: StepCosts, batch: int = 1) -> float:
    """Estimated seconds until `plan` ends, at scale `scale` after `steps_done` of its steps."""
    shape = plan.shapes[scale]
    rest = max(0, plan.steps[scale] - steps_done) * costs.step(shape, batch)
    return rest + plan.seconds(costs, batch, scale + 1)


_COSTS: dict[str, StepCosts] = {}
_COSTS_LOCK = threading.Lock()


def device_costs(device: str) -> StepCosts:
    """The process's `StepCosts` of a device, named "platform:kind" ("cpu:cpu", "gpu:NVIDIA H100")."""
    with _COSTS_LOCK:
        return _COSTS.setdefault(device, StepCosts(device.partition(":")[0]))


def plan_for(shapes: Sequence[Shape], steps: int, step_ratio: float) -> Plan:
    """The plan of a recipe: `scale_steps` over `shapes`."""
    return Plan(tuple(shapes), scale_steps(len(shapes), steps, step_ratio))


class RunClock:
    """One run's time as it goes, from its start (when made) to `end` (its time budget, if any).

    `plan` is the recipe's steps cut to fit the budget by the costs measured so far (cut again at
    each scale, and where a scale ran short); `cut` whether it differs from the recipe. At each
    scale: `start_scale`, then `observe` at every progress report (which measures the scale into
    `costs`: the seconds before its first report, less its steps, are its setup; the seconds
    between reports over the steps between them, the cost of a step, reporting included), the
    optimiser asks `steps_now` before each compiled call, and `end_scale` after. Times are
    `timer()`'s, seconds.
    """

    def __init__(self, recipe: Plan, costs: StepCosts, batch: int = 1, max_seconds: float | None = None,
                 timer: Callable[[], float] = time.perf_counter):
        self.recipe = self.plan = recipe
        self.costs, self.batch, self.timer = costs, batch, timer
        self.start = timer()
        self.end = math.inf if max_seconds is None else self.start + max_seconds
        self.ran_steps: list[int] = []  # of each finished scale
        self.scale = 0  # the current scale's index
        self.done = 0  # its steps, as of its latest report
        self.deadline = math.inf  # by when its steps must end: the later scales' planned time is kept for them
        self._scale_start = self.start
        self._last_report: float | None = None  # time of its latest report
        self._last_done = 0  # and its steps then
        self._measured = False  # whether a step of it was measured

    @property
    def cut(self) -> bool:
        return self.plan.steps != self.recipe.steps

    @property
    def shape(self) -> Shape:
        return self.recipe.shapes[self.scale]

    @property
    def step(self) -> int:
        """Steps done over all scales."""
        return sum(self.ran_steps[:self.scale]) + self.done

    def start_scale(self, index: int) -> int:
        """Scale `index` starts now: the recipe's steps from here on, cut to fit the time left by
        the costs measured so far (which may give back steps an earlier estimate took). Returns
        its planned steps, or 0 where no time is left for a scale after the first (then no later
        scale runs: the picture of the last one is the result)."""
        now = self.timer()
        rest = Plan(self.recipe.shapes, (*self.ran_steps, *self.recipe.steps[index:]))
        self.plan = rest.fit(self.end - now, self.costs, self.batch, first_scale=index)
        shape = self.recipe.shapes[index]
        if index > 0 and self.end - now < self.costs.setup(shape, self.batch) + self.costs.step(shape, self.batch):
            self.plan = Plan(self.plan.shapes, (*self.ran_steps, *[0] * (len(self.plan.steps) - len(self.ran_steps))))
            return 0
        self.scale, self.done, self._scale_start = index, 0, now
        self._last_report, self._last_done, self._measured = None, 0, False
        self.deadline = self.end - self.plan.seconds(self.costs, self.batch, index + 1)
        return self.plan.steps[index]

    def observe(self, done: int) -> float:
        """A progress report after `done` steps of the current scale; returns the time now."""
        now = self.timer()
        if self._last_report is None:
            step = self.costs.step(self.shape, self.batch)
            self.costs.record(self.shape, self.batch, setup_s=max(0.0, now - self._scale_start - done * step))
        elif done > self._last_done:
            self.costs.record(self.shape, self.batch, steps=done - self._last_done, seconds=now - self._last_report)
            self._measured = True
        self._last_report, self._last_done, self.done = now, done, done
        return now

    def seconds_left(self, now: float) -> float:
        """Estimated seconds until the run ends, at `now`, as of the latest report."""
        left = seconds_left(self.plan, self.scale, self.done, self.costs, self.batch)
        return max(0.0, min(self.end - now, left))

    def steps_now(self, steps_left: int) -> int:
        """How many of the current scale's `steps_left` steps to run before the next report (0:
        stop here): about `REPORT_EVERY_S` of them, at most a 20th of the scale's steps (at least
        one), and none that would end past the scale's deadline at the measured cost of a step.
        Until a step of this scale is measured (the first call compiles), one at a time."""
        now = self.timer()
        if steps_left < 1 or now >= self.deadline:
            return 0
        if not self._measured:
            return 1
        step = self.costs.step(self.shape, self.batch)
        n = max(1, min(self.plan.steps[self.scale] // 20, int(REPORT_EVERY_S / step)))
        if self.deadline < math.inf:
            n = min(n, int((self.deadline - now) / step))
        return max(0, min(n, steps_left))

    def end_scale(self) -> None:
        """The current scale ran `done` steps (the plan of the later ones unchanged)."""
        self.ran_steps.append(self.done)
        self.plan = Plan(self.plan.shapes, (*self.ran_steps, *self.plan.steps[self.scale + 1:]))

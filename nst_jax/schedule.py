"""How many optimizer steps a run takes at each scale, how long they take, and what fits a time budget.

A run's `Plan` is its steps per scale, coarse to fine. Its seconds are estimated from costs
measured in this process (`StepCosts`): the seconds of one step at each working shape and batch
size, and the seconds a scale takes before its steps run (its targets, and compiling where its
programs are new). A shape not yet run is estimated from a measured one in proportion to its
pixels (a convolution's cost), or from `DEFAULT_COSTS` before anything ran.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
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

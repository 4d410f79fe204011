"""The optimisers: Adam (`run_adam`: compiled loops of `run_steps`, a progress report between
them) or L-BFGS (`run_lbfgs`: SciPy's) on the pixels of a batch of images, minimising a
`nst_jax.problem.Problem`.

Everything here works on float32 RGB arrays (N, H, W, 3) in [0, 1]. A batch axis N runs
independent stylizations side by side in one program (Adam is elementwise, so stacking images
is exactly the same as running them apart). L-BFGS would minimise a batch's summed loss as one
problem (one line search), so each L-BFGS job is a batch of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from nst_jax.options import Options
from nst_jax.problem import Problem

# Adam's moment estimates only; the learning rate is applied per image afterwards, so it is a
# traced value (changing it does not recompile) and may differ within a batch.
ADAM = optax.scale_by_adam()


class AdamCarry(NamedTuple):
    """The state of the Adam loop, carried from step to step and from scale to scale.

    image: (N, H, W, 3) the current iterate; adam: optax's moment estimates of its gradient;
    average: (N, H, W, 3) exponential moving average of the iterates, without bias correction;
    average_weight: (N,) 1 - decay^steps, the bias correction (the average is average / weight).
    """

    image: jax.Array
    adam: optax.ScaleByAdamState
    average: jax.Array
    average_weight: jax.Array

    @classmethod
    def start(cls, image: jax.Array) -> "AdamCarry":
        return cls(image, ADAM.init(image), jnp.zeros_like(image), jnp.zeros(image.shape[0], image.dtype))

    def result(self) -> jax.Array:
        """The averaged image, or the iterate where nothing was averaged (decay 0 gives the iterate too)."""
        return _averaged_image(self)


@jax.jit
def _averaged_image(carry: AdamCarry) -> jax.Array:
    """`AdamCarry.result`, as one compiled program (it runs at every progress report; as eager
    operations each would be a program of its own to build on a cold start)."""
    weight = carry.average_weight[:, None, None, None]
    return jnp.where(weight > 0, carry.average / jnp.maximum(weight, 1e-12), carry.image)


def adam_settings(options: Sequence[Options], edge_tuned: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`run_adam`'s per-image settings of the images of `options`: (lr, average_decay,
    luminance_step), each (N,) float32; the luminance step is `Options.on_network`'s on a
    network whose weights are `edge_tuned` or not."""
    return tuple(jnp.asarray(values, jnp.float32) for values in zip(
        *((o.lr, o.average_decay, o.on_network("luminance_step", edge_tuned)) for o in options)))


def toward_colour(x: jax.Array, luminance_step: jax.Array) -> jax.Array:
    """`x` (N, H, W, 3) with its grey component (the mean of R, G and B) scaled by
    `luminance_step` (N,), its colour (what is left) kept; 1 leaves `x` as it is."""
    grey = jnp.mean(x, axis=-1, keepdims=True)
    return x - (1 - luminance_step[:, None, None, None]) * grey


def adam_step(carry: AdamCarry, problem: Problem, lr: jax.Array, decay: jax.Array,
              luminance_step: jax.Array) -> tuple[AdamCarry, jax.Array]:
    """One Adam step on the pixels, clipped to [0, 1], and the averages updated.

    lr (N,) step size in pixel units; decay (N,) of the moving average; luminance_step (N,) in
    (0, 1]: Adam works on coordinates z of the pixels x = Bz, B = `toward_colour`'s map, so a step
    moves light and shade `luminance_step` times as far as colour (1: Adam on the pixels). Returns
    the new carry and the (N,) weighted losses before the step.
    """
    grad, per_image = jax.grad(problem.loss, has_aux=True)(carry.image)
    direction, adam = ADAM.update(toward_colour(grad, luminance_step), carry.adam)  # dL/dz = Bg: B is symmetric
    step = toward_colour(direction, luminance_step)
    image = jnp.clip(carry.image - lr[:, None, None, None] * step, 0.0, 1.0)
    d = decay[:, None, None, None]
    average = d * carry.average + (1 - d) * image
    weight = decay * carry.average_weight + (1 - decay)
    return AdamCarry(image, adam, average, weight), per_image


@functools.partial(jax.jit, donate_argnums=(0,))
def run_steps(carry: AdamCarry, n_steps, problem: Problem, lr, decay, luminance_step) -> tuple[AdamCarry, jax.Array]:
    """`n_steps` (traced: one program for every chunk length) Adam steps inside one compiled loop.
    Returns the new carry and the (N,) losses of the last step. On accelerators per-step dispatch
    would leave the device idle; on XLA:CPU the loop is as fast per step or faster (BENCHMARKS.md)."""
    def body(_, state):
        return adam_step(state[0], problem, lr, decay, luminance_step)
    return jax.lax.fori_loop(0, n_steps, body, (carry, jnp.zeros(carry.image.shape[0])))


@jax.jit
def resize_carry(carry: AdamCarry, image: jax.Array) -> AdamCarry:
    """The state at the start of the next scale, from `image` (N, H, W, 3), the previous scale's
    result resized. Adam's moments are resized like the image, so the first steps keep the old
    scale's per-pixel step sizes instead of Adam's sign-like first steps, which move every pixel
    by about lr. The average starts again."""
    def resize(x):
        return jax.image.resize(x, image.shape, "linear")
    adam = carry.adam._replace(mu=resize(carry.adam.mu), nu=resize(carry.adam.nu))
    return AdamCarry(image, adam, jnp.zeros_like(image), jnp.zeros_like(carry.average_weight))


@jax.jit
def loss_and_grad(image: jax.Array, problem: Problem) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For L-BFGS: (total loss summed over the batch, its gradient (N, H, W, 3), per-image
    weighted losses (N,)) at `image`. One compiled call per evaluation; SciPy's line search
    runs on the host between them."""
    (total, per_image), grad = jax.value_and_grad(problem.loss, has_aux=True)(image)
    return total, grad, per_image


# report(steps_done, losses (N,), current image (N, H, W, 3), loss evaluations so far) -> False to stop.
Report = Callable[[int, np.ndarray, jax.Array, int], bool]
# pace(steps_left) -> how many of them to run before the next report; 0 to stop (`schedule.RunClock.steps_now`).
Pace = Callable[[int], int]


def every_step(steps_left: int) -> int:
    """The `Pace` of a run without a clock: one step per compiled call, each reported."""
    return min(1, steps_left)


def run_adam(carry: AdamCarry, problem: Problem, lr: jax.Array, decay: jax.Array, luminance_step: jax.Array,
             n_steps: int, report: Report, pace: Pace = every_step) -> AdamCarry:
    """Run at most `n_steps` Adam steps from `carry` with per-image step sizes `lr` (N,),
    averaging `decay` (N,) and `luminance_step` (N,) (`adam_step`), in compiled calls of as many
    steps as `pace` allows, `report`ing the averaged image after each: last with steps_done ==
    n_steps, unless `report` stopped the run by returning False or `pace` by allowing none.
    Returns the last carry."""
    done = 0
    while done < n_steps:
        n = pace(n_steps - done)
        if n < 1:
            break
        carry, per_image = run_steps(carry, n, problem, lr, decay, luminance_step)
        done += n
        if not report(done, np.asarray(per_image), carry.result(), done):  # one evaluation a step
            break
    return carry


def run_lbfgs(image: jax.Array, problem: Problem, n_steps: int, report: Report,
              pace: Pace = every_step) -> jax.Array:
    """At most `n_steps` iterations of SciPy's L-BFGS-B within [0, 1] from `image`, reporting
    after each, and stopping where `report` returns False or `pace` allows no more iterations.
    Returns the last iterate.

    SciPy works on float64 flat vectors on the host; the loss runs as one compiled call
    (`loss_and_grad`) per evaluation. An iteration may evaluate more than once (line search),
    so evaluations are capped too. If L-BFGS-B stops before `n_steps` (converged, or out of
    evaluations), one last report with steps_done == n_steps completes the progress.
    """
    shape = image.shape
    latest = {}  # image (N, H, W, 3) and per-image losses (N,) of the latest evaluation
    done, evaluations, going = 0, 0, True

    def fun(flat):
        nonlocal evaluations
        x = jnp.asarray(flat.reshape(shape), jnp.float32)
        total, grad, per_image = loss_and_grad(x, problem)
        evaluations += 1
        latest.update(image=x, losses=per_image)
        return float(total), np.asarray(grad, np.float64).ravel()

    def callback(intermediate_result):
        # L-BFGS-B calls back right after the line search's last evaluation, which is the new
        # iterate: `latest` is the image and losses of `intermediate_result.x`.
        nonlocal done, going
        done += 1
        going = report(done, np.asarray(latest["losses"]), latest["image"], evaluations) and (
            done >= n_steps or pace(n_steps - done) > 0)
        if not going:
            raise StopIteration  # SciPy >= 1.11 ends the minimisation, keeping this iterate

    result = scipy.optimize.minimize(fun, np.asarray(image, np.float64).ravel(), jac=True, method="L-BFGS-B",
                                     bounds=scipy.optimize.Bounds(0.0, 1.0), callback=callback,
                                     options={"maxiter": n_steps, "maxfun": 2 * n_steps + 20})
    image = jnp.asarray(result.x.reshape(shape), jnp.float32)
    if going and done < n_steps:
        # result.x is the last iterate, but the last evaluation may have been a rejected trial point.
        report(n_steps, np.asarray(loss_and_grad(image, problem)[2]), image, evaluations + 1)
    return image

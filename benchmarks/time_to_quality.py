"""Total loss against wall time for the default recipe: single-scale Adam, multi-scale Adam
(coarse to fine), the library's L-BFGS option (SciPy's L-BFGS-B) and optax's L-BFGS, all at
one size (default 256 px).

    python benchmarks/time_to_quality.py --content /work/shared/images/tubingen.jpg \\
        --style /work/shared/images/starry_night.jpg --json ttq.json

Adam and L-BFGS-B runs are `nst_jax.stylize` itself (default options, `--steps` per scale;
`optimizer="lbfgs"` for L-BFGS-B), timed by its progress reports, after a 1-step run that
compiles every shape. The multi-scale curve shows
its last scale only -- the full size, so its losses are comparable -- starting at the time
the coarser scales took. The library's L-BFGS-B keeps the pixels in [0, 1] with true bounds
and calls one compiled value-and-gradient per evaluation from Python (`nst_jax.optim.loss_and_grad`). optax's L-BFGS works
on unconstrained pixels x and minimises the loss of clip(x, 0, 1) (the box enters through the
objective, so that the line search and the curvature pairs see one consistent function), and
the image it delivers is clip(x); it runs the whole iteration, line search included, as one
compiled program, so its loss evaluations sit inside a while loop. It runs for
`--lbfgs-budget` times the single-scale Adam wall time, after a compile. All losses are the
weighted total (content + style + TV) at full size, of the image of each step (L-BFGS-B: of
each accepted iterate), and last of the image delivered. Writes the curves to --plot and
prints a summary table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import common
import nst_jax
from nst_jax import images, problem


Curve = list[tuple[float, float]]  # (seconds, total loss)


def stylize_curve(model, content, style, options) -> tuple[Curve, float, np.ndarray, int]:
    """((seconds, loss) of the last scale's steps, seconds the coarser scales took, result,
    loss evaluations at the last scale) of `nst_jax.stylize`."""
    nst_jax.stylize(content, [style], dataclasses.replace(options, steps=1), model=model)  # compile
    reports = []
    result = nst_jax.stylize(content, [style], options, model=model, on_progress=reports.append)
    last = [(p.elapsed, p.loss) for p in reports if p.scale == p.scales - 1]
    coarse = max((p.elapsed for p in reports if p.scale < p.scales - 1), default=0.0)
    return last, coarse, result, reports[-1].evaluations


def lbfgs_curve(objective: problem.Problem, content, budget_s: float) -> tuple[Curve, int, np.ndarray]:
    """((seconds, loss) per iteration, loss evaluations in all, result) of L-BFGS from `content`."""
    opt = optax.lbfgs()

    @jax.jit
    def step(x, state, objective):
        def f(x):
            return objective.loss(jnp.clip(x, 0.0, 1.0))[0]
        value, grad = optax.value_and_grad_from_state(f)(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(x, updates), state, value, optax.tree_utils.tree_get(state, "num_linesearch_steps")

    x = jnp.asarray(content[None])
    jax.block_until_ready(step(x, opt.init(x), objective))  # compile
    state, curve, evaluations = opt.init(x), [], 0
    start = time.perf_counter()
    while not curve or curve[-1][0] < budget_s:
        x, state, value, searched = step(x, state, objective)
        curve.append((time.perf_counter() - start, float(value)))
        evaluations += int(searched)
    return curve, evaluations, np.clip(np.asarray(x[0]), 0, 1)


def time_to_reach(curve, target: float) -> float | None:
    return next((t for t, loss in curve if loss <= target), None)


def plot(curves: dict, adam_final: float, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, curve in curves.items():
        t, loss = zip(*curve)
        ax.plot(t, loss, label=label, lw=1.5)
    ax.axhline(adam_final, color="gray", ls=":", lw=1, label="Adam single-scale final loss")
    ax.set(yscale="log", xlabel="wall time, s (compiled; this machine)", ylabel="total loss at full size", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def loss_of(objective: problem.Problem, shape: tuple[int, int], image: np.ndarray) -> float:
    """The weighted total loss of one (H, W, 3) result, resized to the working `shape`,
    against the full-size targets."""
    return float(objective.loss(jnp.asarray(images.resize(image, *shape)[None]))[0])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=nst_jax.Options().steps,
                   help="Adam steps (L-BFGS-B iterations) per scale")
    p.add_argument("--lbfgs-budget", type=float, default=1.5, help="optax L-BFGS time, in single-scale Adam times")
    p.add_argument("--plot", type=Path, default=Path(__file__).with_name("time_to_quality.png"))
    p.add_argument("--json", type=Path)
    common.add_image_args(p)
    args = p.parse_args(argv)

    common.disable_compilation_cache()
    model = nst_jax.load_model(args.weights)
    content, style = common.load_images(args.content, args.style)
    options = nst_jax.Options(size=args.size, steps=args.steps, multiscale=False)
    full = common.at_size(content, options.size)
    objective = common.problem_of(model, full, style, options)
    final_loss = functools.partial(loss_of, objective, full.shape[:2])

    single, _, single_result, evaluations_single = stylize_curve(model, content, style, options)
    multi, coarse_s, multi_result, evaluations_multi = stylize_curve(model, content, style,
                                                                     dataclasses.replace(options, multiscale=True))
    lbfgsb, _, lbfgsb_result, evaluations_b = stylize_curve(model, content, style,
                                                            dataclasses.replace(options, optimizer="lbfgs"))
    adam_time, adam_final = single[-1][0], final_loss(single_result)
    lbfgs, evaluations, lbfgs_result = lbfgs_curve(objective, full, args.lbfgs_budget * adam_time)

    rows = {  # curve, result, loss evaluations, seconds before the first of them
        "Adam, single scale": (single, single_result, evaluations_single, 0.0),
        f"Adam, multi-scale (last scale; coarser ones took {coarse_s:.0f} s)":
            (multi, multi_result, evaluations_multi, coarse_s),
        "L-BFGS-B (`optimizer=\"lbfgs\"`, SciPy, bounds)": (lbfgsb, lbfgsb_result, evaluations_b, 0.0),
        "L-BFGS (optax, zoom line search)": (lbfgs, lbfgs_result, evaluations, 0.0),
    }
    for curve, result, _, _ in rows.values():
        curve.append((curve[-1][0], final_loss(result)))  # the loss of the image delivered
    summary = {label: {"seconds": curve[-1][0], "final_loss": curve[-1][1], "evaluations": evals,
                       "ms_per_evaluation": 1000 * (curve[-1][0] - start) / evals,
                       "seconds_to_adam_final_loss": time_to_reach(curve, adam_final),
                       "loss_at_adam_time": min((loss for t, loss in curve if t <= adam_time), default=None)}
               for label, (curve, _, evals, start) in rows.items()}
    print(f"{args.size} px, {full.shape[0]}x{full.shape[1]}; Adam single-scale final loss {adam_final:.4g} "
          f"after {adam_time:.1f} s\n")
    print("| run | wall s | loss evaluations | ms/evaluation | final loss | loss by the Adam time "
          "| s to the Adam final loss |\n" + "|---" * 7 + "|")
    for label, s in summary.items():
        reach = s["seconds_to_adam_final_loss"]
        reach = f"{reach:.1f}" if reach is not None else "not reached"
        print(f"| {label} | {s['seconds']:.1f} | {s['evaluations']} | {s['ms_per_evaluation']:.0f} "
              f"| {s['final_loss']:.4g} | {s['loss_at_adam_time']:.4g} | {reach} |")
    plot({label: row[0] for label, row in rows.items()}, adam_final,
         f"{args.size} px ({full.shape[0]}x{full.shape[1]}), {args.steps} Adam steps per scale", args.plot)
    print(f"\nwrote {args.plot}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine(),
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "summary": summary, "curves": {k: v[0] for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()

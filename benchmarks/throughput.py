"""Requests per minute with jobs of one size bucket run as a batch, against one at a time.

    python benchmarks/throughput.py [--size 128] [--steps N] [--batch 4] [--repeats 3] [--warmup]

Uses the default weights, the default options (but --size and --steps) and synthetic 4:3
images; every job has its own content, style and seed, and reports progress as a server's
does. Both forms are timed after a run that compiles them, alternating A B A B. With --warmup,
`nst_jax.warmup` first builds the programs of --size, aspect 4:3, batches up to --batch (as a
server with NEURASTYLE_WARMUP and NEURASTYLE_WARMUP_BATCH does), and the programs the first
batched run still builds are counted: none is the goal.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import nst_jax
from nst_jax import warmup
from nst_jax.transfer import Job, stylize_batch


def make_jobs(n: int, size: int, steps: int | None) -> list[Job]:
    rng = np.random.default_rng(0)
    shape = (size * 3 // 4, size, 3)
    options = {"size": size, **({"steps": steps} if steps else {})}
    return [Job(rng.random(shape, np.float32), [rng.random(shape, np.float32)],
                nst_jax.Options.from_mapping({**options, "seed": i}), on_progress=lambda _: None) for i in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, help="steps at the coarsest scale (default: the options' default)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", action="store_true", help="warm up first; count what the first batch still builds")
    args = p.parse_args()
    model = nst_jax.load_model()
    jobs = make_jobs(args.batch, args.size, args.steps)

    def batched():
        stylize_batch(jobs, model)

    def one_at_a_time():
        for job in jobs:
            stylize_batch([job], model)

    if args.warmup:
        report = warmup.warmup([args.size], model=model, aspects=[(4, 3)], max_batch=args.batch)[0]
        print(f"warm-up, batches up to {args.batch}: {report.line()}")
        with warmup.counting_programs() as count:
            batched()
        print(f"programs the first batch of {args.batch} built after the warm-up: {count.total()} "
              f"{count.by_function or ''}")
    forms = {"batched": batched, "one at a time": one_at_a_time}
    for run in forms.values():  # compile
        run()
    times = {name: [] for name in forms}
    for _ in range(args.repeats):
        for name, run in forms.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"{args.batch} jobs, {args.size} px, steps {jobs[0].options.steps} at the coarsest scale, "
          f"device {model.device}")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name:>14}: median {median:.2f} s for {args.batch} jobs = {60 * args.batch / median:.1f} requests/min")
    print(f"batched / one at a time throughput: "
          f"{statistics.median(times['one at a time']) / statistics.median(times['batched']):.2f}x")


if __name__ == "__main__":
    main()

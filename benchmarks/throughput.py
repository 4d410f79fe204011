"""Requests per minute with jobs of one size bucket run as a batch, against one at a time.

    python benchmarks/throughput.py [--size 128] [--steps 20] [--batch 4] [--repeats 3]

Uses the default weights and synthetic images; every job has its own content, style and seed.
Both forms are timed after a warm-up that compiles them, alternating A B A B.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import nst_jax
from nst_jax.transfer import Job, stylize_batch


def make_jobs(n: int, size: int, steps: int) -> list[Job]:
    rng = np.random.default_rng(0)
    height = size * 3 // 4
    return [Job(rng.random((height, size, 3), np.float32), [rng.random((size, size, 3), np.float32)],
                nst_jax.Options(size=size, steps=steps, multiscale=False, seed=i)) for i in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model = nst_jax.load_model()
    jobs = make_jobs(args.batch, args.size, args.steps)

    def batched():
        stylize_batch(jobs, model)

    def one_at_a_time():
        for job in jobs:
            stylize_batch([job], model)

    forms = {"batched": batched, "one at a time": one_at_a_time}
    for run in forms.values():  # compile
        run()
    times = {name: [] for name in forms}
    for _ in range(args.repeats):
        for name, run in forms.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"{args.batch} jobs, {args.size} px, {args.steps} steps, device {model.device}")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name:>14}: median {median:.2f} s for {args.batch} jobs = {60 * args.batch / median:.1f} requests/min")
    print(f"batched / one at a time throughput: "
          f"{statistics.median(times['one at a time']) / statistics.median(times['batched']):.2f}x")


if __name__ == "__main__":
    main()

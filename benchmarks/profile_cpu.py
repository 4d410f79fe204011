"""Where a NeuraStyle step goes on the CPU, and what would make it faster (BENCHMARKS.md).

    python benchmarks/profile_cpu.py                       # every section, 256 px
    python benchmarks/profile_cpu.py --sections variants --size 512

Sections (all timings are wall ms; "min" is the best of the repeats, the closest to an
idle machine, "median" what a shared machine gives):
  layers     each conv of the stack, forward and input gradient: XLA's convolution, the
             library's Winograd F(2x2, 3x3) (`nst_jax.winograd`) and PyTorch (oneDNN);
  breakdown  one step's time by kind of XLA operation (jax.profiler trace with XLA's per-op
             TraceMe; thread time, so it can exceed the wall time), and PyTorch's top operators;
  variants   the library's loop (`optim.run_adam`) against one compiled call per step, the
             library without Winograd layers, and PyTorch;
  flags      the step under XLA_FLAGS variants, each in a child process, in turns.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

if "--child" not in sys.argv:  # per-op events for `breakdown`; the flag children run as told
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
# PyTorch's OpenMP threads otherwise spin for a while after each call and slow down the XLA
# operation timed right after it (by ~1.3x per convolution here); PyTorch's own times do not change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
import nst_jax  # noqa: E402
import torch_reference  # noqa: E402
from nst_jax import optim, shapes, winograd  # noqa: E402
from nst_jax.vgg import layer_names, layer_shapes  # noqa: E402

FLAG_VARIANTS = {
    "default (YNNPACK convs and dots)": "",
    "no concurrency-optimized scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "YNNPACK off (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "YNNPACK convs only": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    "YNNPACK off, oneDNN on": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true",
    "YNNPACK off, XNNPACK convs": "--xla_cpu_experimental_ynn_fusion_type= "
                                 "--xla_cpu_experimental_xnn_fusion_type=individual_convolution",
    "no multi-threaded Eigen": "--xla_cpu_multi_thread_eigen=false",
}
CONV = ("NHWC", "HWIO", "NHWC")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t)


def best_of(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Call each of `fns` once per repeat, in turns; {name: [ms, ...]} (warmed up first)."""
    for f in fns.values():
        f()
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            out[name].append(timed(f))
    return out


def layers(weights, size: int, repeats: int) -> None:
    height, width = shapes.working_shape(3, 4, size)
    print(f"\n### Convolutions at {size} px ({height}x{width}), min ms of {repeats}\n")
    print("| layer | GFLOP | XLA fwd | Winograd fwd | PyTorch fwd | XLA input grad | Winograd input grad "
          "| PyTorch input grad |\n" + "|---" * 8 + "|")
    rng, h, w, total = np.random.default_rng(0), height, width, np.zeros(6)
    names = layer_names(weights.arch)
    for name in names[: names.index(common.deepest_layer(weights)) + 1]:
        if name.endswith("_conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        _, _, cin, cout = layer_shapes(weights.arch)[name]
        x, g = (rng.standard_normal((1, h, w, c)).astype(np.float32) for c in (cin, cout))
        k = (rng.standard_normal((3, 3, cin, cout)) * 0.05).astype(np.float32)

        def conv(x, k):
            return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=CONV)
        forward, wforward = jax.jit(conv), jax.jit(winograd.conv3x3)
        backward = jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
        wbackward = jax.jit(lambda x, u, g: jax.vjp(lambda x: winograd.conv3x3(x, u), x)[1](g)[0])
        xj, kj, gj = map(jnp.asarray, (x, k, g))
        uj = winograd.transform_kernel(kj)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        kt, gt = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
        yt = F.conv2d(xt, kt, padding=1)
        ms = best_of({
            "xf": lambda: forward(xj, kj).block_until_ready(),
            "wf": lambda: wforward(xj, uj).block_until_ready(),
            "tf": lambda: F.conv2d(xt.detach(), kt, padding=1),
            "xb": lambda: backward(xj, kj, gj).block_until_ready(),
            "wb": lambda: wbackward(xj, uj, gj).block_until_ready(),
            "tb": lambda: torch.autograd.grad(yt, xt, gt, retain_graph=True),
        }, repeats)
        m = [min(v) for v in ms.values()]
        total += m
        print(f"| {name} | {2 * h * w * 9 * cin * cout / 1e9:.2f} | " + " | ".join(f"{v:.1f}" for v in m) + " |")
    print("| **sum** | | " + " | ".join(f"**{v:.0f}**" for v in total) + " |")


def xla_category(name: str) -> str | None:
    """Kind of an XLA:CPU thunk from its name, None for the runtime's own events."""
    if re.match(r"^(\$|Thunk|np\.|Slinky|PjRt|Execute|XlaModule|jit_|TfrtCpu)", name):
        return None
    for kind, pattern in (("convolutions and dots in YNNPACK", r"^ynn_fusion"), ("Eigen dots", r"^dot"),
                          ("Eigen convolutions", r"^(convolution|conv_general)"),
                          ("kernel transposes for the input gradient", r"^transpose_copy"),
                          ("max-pool and its gradient (reduce-window, iota)", r"reduce-window|iota|wrapped_broadcast")):
        if re.search(pattern, name):
            return kind
    return "other fusions (bias, ReLU, max-pool, Winograd transforms, losses, Adam)"


def breakdown(model, content, style, size: int, steps: int) -> None:
    run = common.JaxStylizer(model, common.at_size(content, size), common.at_size(style, size))
    run.run(2)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            wall = run.run(steps) / steps * 1000
        events = json.load(gzip.open(glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
    per_op = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and xla_category(e["name"]):
            per_op[e["name"]].append(e.get("dur", 0) / 1000)
    kinds = collections.Counter()
    for name, ms in per_op.items():
        kinds[xla_category(name)] += sum(sorted(ms)[:steps]) / steps
    print(f"\n### One JAX step at {size} px: {wall:.0f} ms wall; XLA thunk time by kind (ms per step)\n")
    print("| kind | ms | share |\n|---|---|---|")
    for kind, ms in kinds.most_common():
        print(f"| {kind} | {ms:.0f} | {ms / sum(kinds.values()):.0%} |")

    trun = torch_reference.TorchStylizer(torch_reference.TorchVGG(model.weights),
                                         common.at_size(content, size), common.at_size(style, size))
    trun.run(2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        wall = trun.run(steps) / steps * 1000
    print(f"\n### One PyTorch step at {size} px: {wall:.0f} ms wall; top operators (self CPU ms per step)\n")
    print("| operator | ms |\n|---|---|")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1000 / steps:.0f} |")


def variants(model, content, style, size: int, steps: int, repeats: int) -> None:
    run = common.JaxStylizer(model, common.at_size(content, size), common.at_size(style, size))
    direct = nst_jax.model.from_weights(model.weights, winograd_layers=())
    one_step = jax.jit(optim.adam_step, donate_argnums=(0,))
    image = run.content

    def library(model):
        problem = run.problem.replace(net=model.net, params=model.params)
        def run_n(n):
            return optim.run_adam(optim.AdamCarry.start(jnp.array(image)), problem, run.lr, run.decay,
                                  run.luminance_step, n, lambda *_: True).result()
        return run_n

    def step_by_step(n):
        carry = optim.AdamCarry.start(jnp.array(image))
        for _ in range(n):
            carry, loss = one_step(carry, run.problem, run.lr, run.decay, run.luminance_step)
            float(loss[0])
        return carry.result()

    trun = torch_reference.TorchStylizer(torch_reference.TorchVGG(model.weights),
                                         common.at_size(content, size), common.at_size(style, size))

    def pytorch(n):
        trun.run(n)
        return trun.result()[None]

    winograd = ", ".join(model.net.winograd_layers) or "none"
    base = "library (`optim.run_adam`)"
    runs = {base: library(model), "one compiled call per step": step_by_step,
            "library without Winograd": library(direct), "PyTorch (`torch_reference`)": pytorch}
    ms = best_of({name: functools.partial(f, steps) for name, f in runs.items()}, repeats)
    print(f"\n### Step variants at {size} px (Winograd layers: {winograd}), XLA_FLAGS "
          f"`{os.environ['XLA_FLAGS'].strip()}`: {steps} steps per run, {repeats} repeats in turns (ms per step)\n")
    print("| variant | min | median | vs library (medians of pairs) | vs PyTorch |\n" + "|---" * 5 + "|")
    for name in runs:
        ratios = [statistics.median(a / b for a, b in zip(ms[name], ms[other]))
                  for other in (base, "PyTorch (`torch_reference`)")]
        print(f"| {name} | {min(ms[name]) / steps:.0f} | {statistics.median(ms[name]) / steps:.0f} "
              f"| {ratios[0]:.2f} | {ratios[1]:.2f} |")


def flags(size: int, steps: int, repeats: int) -> None:
    ms = {name: [] for name in FLAG_VARIANTS}
    cpu = {name: [] for name in FLAG_VARIANTS}
    for _ in range(repeats):
        for name, flag in FLAG_VARIANTS.items():
            r = common.run_child([os.path.abspath(__file__), "--child", "--size", str(size), "--steps", str(steps)],
                                 env={"XLA_FLAGS": flag, "NEURASTYLE_COMPILATION_CACHE": "off"})
            ms[name].append(r["ms"])
            cpu[name].append(r["cpu_ms"])
    print(f"\n### XLA_FLAGS at {size} px: ms per step, {repeats} child processes each, in turns\n")
    print("| XLA_FLAGS | | min | median | CPU ms (median) | vs default (median of pairs) |\n" + "|---" * 6 + "|")
    base = ms[next(iter(FLAG_VARIANTS))]
    for name, flag in FLAG_VARIANTS.items():
        ratio = statistics.median(a / b for a, b in zip(ms[name], base))
        print(f"| {name} | `{flag}` | {min(ms[name]):.0f} | {statistics.median(ms[name]):.0f} "
              f"| {statistics.median(cpu[name]):.0f} | {ratio:.2f} |")


def child(model, content, style, size: int, steps: int) -> None:
    run = common.JaxStylizer(model, common.at_size(content, size), common.at_size(style, size))
    run.run(1)
    cpu = time.process_time()
    wall = run.run(steps)
    print(json.dumps({"ms": 1000 * wall / steps, "cpu_ms": 1000 * (time.process_time() - cpu) / steps}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=["layers", "breakdown", "variants", "flags"],
                   choices=("layers", "breakdown", "variants", "flags"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    common.add_image_args(p)
    args = p.parse_args()

    common.disable_compilation_cache()
    model = nst_jax.load_model(args.weights)
    content, style = common.load_images(args.content, args.style)
    if args.child:
        return child(model, content, style, args.size, args.steps)
    print(json.dumps(common.machine()))
    for section in args.sections:
        if section == "layers":
            layers(model.weights, args.size, args.repeats)
        elif section == "breakdown":
            breakdown(model, content, style, args.size, args.steps)
        elif section == "variants":
            variants(model, content, style, args.size, args.steps, args.repeats)
        else:
            flags(args.size, args.steps, args.repeats)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

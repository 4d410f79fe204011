"""Where a NeuraStyle step goes on the CPU, and what would make it faster (BENCHMARKS.md).

    python benchmarks/profile_cpu.py                       # every section, 256 px
    python benchmarks/profile_cpu.py --sections variants --size 512

Sections (all timings are wall ms; "min" is the best of the repeats, the closest to an
idle machine, "median" what a shared machine gives):
  layers     each conv of the stack, forward and input gradient, XLA against PyTorch (oneDNN);
  breakdown  one step's time by kind of XLA operation (jax.profiler trace with XLA's per-op
             TraceMe; thread time, so it can exceed the wall time), and PyTorch's top operators;
  variants   `nst_jax.transfer.run_one_step` against the same step with the changes proposed
             in BENCHMARKS.md, prototyped here (`proposed_features`), and against `run_steps`
             (the fori_loop form) -- the library itself is not modified;
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
from nst_jax import losses, transfer  # noqa: E402
from nst_jax.vgg import layer_names, layer_shapes  # noqa: E402

FLAG_VARIANTS = {
    "default (YNNPACK convs and dots)": "",
    "YNNPACK off (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "YNNPACK convs only": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    "YNNPACK off, oneDNN on": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true",
    "YNNPACK off, XNNPACK convs": "--xla_cpu_experimental_ynn_fusion_type= "
                                 "--xla_cpu_experimental_xnn_fusion_type=individual_convolution",
    "no multi-threaded Eigen": "--xla_cpu_multi_thread_eigen=false",
    "no concurrency-optimized scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
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


def layers(size: int, repeats: int) -> None:
    height, width = transfer.working_shape(3, 4, size)
    print(f"\n### Convolutions at {size} px ({height}x{width}), min ms of {repeats}\n")
    print("| layer | GFLOP | XLA fwd | PyTorch fwd | XLA input grad | PyTorch input grad |\n" + "|---" * 6 + "|")
    rng, h, w, total = np.random.default_rng(0), height, width, np.zeros(4)
    names = layer_names("vgg16")
    for name in names[: names.index(transfer.CONTENT_LAYER) + 1]:
        if name.endswith("_conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        _, _, cin, cout = layer_shapes("vgg16")[name]
        x, g = (rng.standard_normal((1, h, w, c)).astype(np.float32) for c in (cin, cout))
        k = (rng.standard_normal((3, 3, cin, cout)) * 0.05).astype(np.float32)

        def conv(x, k):
            return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=CONV)
        forward = jax.jit(conv)
        backward = jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
        xj, kj, gj = map(jnp.asarray, (x, k, g))
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        kt, gt = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
        yt = F.conv2d(xt, kt, padding=1)
        ms = best_of({
            "xf": lambda: forward(xj, kj).block_until_ready(),
            "tf": lambda: F.conv2d(xt.detach(), kt, padding=1),
            "xb": lambda: backward(xj, kj, gj).block_until_ready(),
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
    return "other fusions (bias, ReLU, losses, Adam)"


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


# --- The proposed vgg.py changes, prototyped. -----------------------------------------

@jax.custom_vjp
def conv3x3(x, kernel, backward_kernel):
    """3x3 SAME convolution whose input gradient uses `backward_kernel` (the kernel flipped
    and with in/out swapped, prepared once per model) instead of transposing `kernel` per step."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=CONV)


def _conv3x3_fwd(x, kernel, backward_kernel):
    return conv3x3(x, kernel, backward_kernel), backward_kernel


def _conv3x3_bwd(backward_kernel, g):
    return jax.lax.conv_general_dilated(g, backward_kernel, (1, 1), "SAME", dimension_numbers=CONV), None, None


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def backward_kernels(params: dict) -> dict:
    return {n: jnp.asarray(np.ascontiguousarray(np.asarray(p["kernel"])[::-1, ::-1].transpose(0, 1, 3, 2)))
            for n, p in params["params"].items()}


@jax.custom_vjp
def max_pool_2x2(x):
    """2x2 stride-2 max-pool (floor) as a reshape and a max; its gradient goes to the first
    maximum of each window in row-major order, like XLA's select-and-scatter, but elementwise."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _pool_bwd(saved, g):
    x, y = saved
    n, h, w, c = x.shape
    windows = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    taken, parts = jnp.zeros_like(y, bool), {}
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        first = (windows[:, :, i, :, j] == y) & ~taken
        taken, parts[i, j] = taken | first, jnp.where(first, g, 0.0)
    rows = [jnp.stack([parts[i, 0], parts[i, 1]], axis=3) for i in (0, 1)]
    dx = jnp.stack(rows, axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(dx, ((0, 0), (0, h - h // 2 * 2), (0, w - w // 2 * 2), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


def proposed_features(params, back, x, custom_conv: bool, custom_pool: bool) -> dict:
    """`nst_jax.vgg.VGG` (VGG16, up to the content layer) with either change switched on."""
    names, out = layer_names("vgg16"), {}
    for name in names[: names.index(transfer.CONTENT_LAYER) + 1]:
        if name.endswith("_conv1") and name != "block1_conv1":
            x = max_pool_2x2(x) if custom_pool else jax.lax.reduce_window(
                x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        p = params["params"][name]
        y = conv3x3(x, p["kernel"], back[name]) if custom_conv else jax.lax.conv_general_dilated(
            x, p["kernel"], (1, 1), "SAME", dimension_numbers=CONV)
        x = out[name] = jax.nn.relu(y + p["bias"])
    return out


def proposed_step(carry, params, back, input_scale, input_offset, targets, loss_weights, lr,
                  custom_conv, custom_pool):
    """`transfer.adam_step` on `proposed_features` (weights as arguments, as in the library,
    so that XLA cannot fold their transposes at compile time)."""
    def objective(image):
        feats = proposed_features(params, back, image * input_scale - input_offset, custom_conv, custom_pool)
        terms = jnp.stack([losses.content_loss(feats[transfer.CONTENT_LAYER], targets["content"]),
                           losses.style_loss(feats, targets["grams"], transfer.STYLE_LAYERS),
                           losses.total_variation(image)], axis=-1)
        return jnp.sum(terms * loss_weights), terms
    image, state = carry
    grad, terms = jax.grad(objective, has_aux=True)(image)
    direction, state = transfer.ADAM.update(grad, state)
    return (jnp.clip(image - lr[:, None, None, None] * direction, 0, 1), state), jnp.sum(terms * loss_weights, -1)


def variants(model, content, style, size: int, steps: int, repeats: int) -> None:
    if model.weights.arch != "vgg16":
        raise SystemExit("the prototype in this script is VGG16's")
    run = common.JaxStylizer(model, common.at_size(content, size), common.at_size(style, size))
    weights, lr, back, image = run.loss_weights, run.lr, backward_kernels(model.params), run.content
    lib_args = (model.net, model.params, model.input_scale, model.input_offset, run.targets, weights, lr)

    def library(n):
        carry = (jnp.array(image), transfer.ADAM.init(image))
        for _ in range(n):
            carry, loss = transfer.run_one_step(carry, *lib_args)
            float(loss[0])
        return carry[0]

    def fori_loop(n):
        carry = (jnp.array(image), transfer.ADAM.init(image))
        carry, loss = transfer.run_steps(carry, n, *lib_args)
        float(loss[0])
        return carry[0]

    def proposal(custom_conv, custom_pool):
        step = jax.jit(functools.partial(proposed_step, custom_conv=custom_conv, custom_pool=custom_pool))

        def run_n(n):
            carry = (jnp.array(image), transfer.ADAM.init(image))
            for _ in range(n):
                carry, loss = step(carry, model.params, back, model.input_scale, model.input_offset,
                                   run.targets, weights, lr)
                float(loss[0])
            return carry[0]
        return run_n

    trun = torch_reference.TorchStylizer(torch_reference.TorchVGG(model.weights),
                                         common.at_size(content, size), common.at_size(style, size))

    def pytorch(n):
        trun.run(n)
        return trun.result()[None]

    runs = {"library (run_one_step)": library, "run_steps (fori_loop)": fori_loop,
            "prototype, no change": proposal(False, False),
            "conv input gradient with prepared kernels": proposal(True, False),
            "reshape max-pool, elementwise gradient": proposal(False, True),
            "both changes": proposal(True, True), "PyTorch (torch_reference)": pytorch}
    reference = np.asarray(library(steps))
    ms = best_of({name: functools.partial(f, steps) for name, f in runs.items()}, repeats)
    print(f"\n### Step variants at {size} px, XLA_FLAGS `{os.environ['XLA_FLAGS'].strip()}`: {steps} steps per "
          f"call, {repeats} repeats in turns (ms per step)\n")
    print("| variant | min | median | vs library (medians of pairs) | vs PyTorch | max abs diff of the image "
          "after the steps |\n" + "|---" * 6 + "|")
    for name, f in runs.items():
        diff = float(np.abs(np.asarray(f(steps)) - reference).max())
        ratios = [statistics.median(a / b for a, b in zip(ms[name], ms[base]))
                  for base in ("library (run_one_step)", "PyTorch (torch_reference)")]
        print(f"| {name} | {min(ms[name]) / steps:.0f} | {statistics.median(ms[name]) / steps:.0f} | {ratios[0]:.2f} "
              f"| {ratios[1]:.2f} | {diff:.1e} |")


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
            layers(args.size, args.repeats)
        elif section == "breakdown":
            breakdown(model, content, style, args.size, args.steps)
        elif section == "variants":
            variants(model, content, style, args.size, args.steps, args.repeats)
        else:
            flags(args.size, args.steps, args.repeats)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

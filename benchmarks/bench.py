"""Speed of NeuraStyle (JAX) against the same recipe in PyTorch, in one run.

    python benchmarks/bench.py                                  # 256, 512 and 1024 px
    python benchmarks/bench.py --sizes 256 512 --steps 3 --repeats 7 --json bench.json
    python benchmarks/bench.py --precision bfloat16             # also bf16 against fp32
    python benchmarks/bench.py --smoke                          # CI: tiny, < 2 minutes on 2 CPU cores
    python benchmarks/bench.py --sizes 512 2048 --steps 40 --profile 10   # + each one's top kernels

Reports, per size (longest side; 3:4 images, generated unless --content/--style):
  * ms per Adam step, NeuraStyle's own loop (`nst_jax.optim.run_adam`) and
    `torch_reference.TorchStylizer`, timed in turns (A/B, B/A, ...): medians, minima and the
    median of the paired JAX/PyTorch ratios;
  * compile time: the first call minus the steady time of as many steps (PyTorch's
    first-call overhead likewise);
  * CPU time per step (all threads; steadier than wall time on a shared machine);
  * achieved TFLOP/s of the convolutions (`common.step_flops`) and, on a known GPU or with
    --peak-tflops, the fraction of the dense peak;
  * with --profile N: the kernels (GPU) or XLA operations (CPU) that take the most time in N
    steps of each, under jax.profiler and torch.profiler;
then, once: cold start (fresh `python -c` processes from their start to the first 256 px
result written: JAX's persistent compilation cache off, holding every program, and as
nst_jax sets it up itself), peak memory of each framework in a child process, and with
--precision bfloat16 the bf16 step time and PSNR against fp32.
A TensorFlow column needs a TensorFlow reference, which does not exist (TensorFlow is not
installed where this was written); the JSON records whether `tensorflow` is importable.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import torch

import common
import nst_jax
import torch_reference
from nst_jax import images

# The cold-start child. argv: cache mode, cache dir, weights, content, style, output, size. Modes:
# "off"; "all": every program cached (the thresholds at 0); "library": what nst_jax does by itself.
COLD_START = """
import json, os, sys, time
mode, cache, weights, content, style, output, size = sys.argv[1:]
os.environ["NEURASTYLE_COMPILATION_CACHE"] = "off" if mode == "off" else cache
import jax
import nst_jax
imported = time.time()
model = nst_jax.load_model(weights or None)
if mode == "off":
    jax.config.update("jax_enable_compilation_cache", False)
elif mode == "all":
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
loaded = time.time()
result = nst_jax.stylize(nst_jax.images.read(content), [nst_jax.images.read(style)],
                         nst_jax.Options(size=int(size), steps=1), model=model)
nst_jax.images.write(result, output)
print(json.dumps({"imported": imported, "loaded": loaded, "written": time.time(),
                  "peak_rss_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""
CACHE_MODES = ("off", "all", "library")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="longest sides, px")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat and size")
    p.add_argument("--repeats", type=int, default=5, help="A/B repeats per size")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: also time bf16 and compare its result with fp32 (at the first size)")
    p.add_argument("--peak-tflops", type=float, help="dense peak of the device (default: looked up for known GPUs)")
    p.add_argument("--torch-channels-last", action="store_true", help="PyTorch in NHWC memory order")
    p.add_argument("--cold-runs", type=int, default=3, help="cold starts of each kind")
    p.add_argument("--skip", nargs="+", default=[], choices=("cold-start", "memory"))
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps of each framework per size")
    p.add_argument("--smoke", action="store_true", help="64 px, 1 step, 2 repeats, 1 cold start: for CI")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--child", choices=("jax", "torch"), help=argparse.SUPPRESS)  # peak-memory worker
    common.add_image_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.repeats, args.cold_runs = [64], 1, 2, 1
    return args


def torch_device() -> str:
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def runner(framework: str, model, size: int, args, content, style):
    """A JaxStylizer or TorchStylizer of the images at `size`; both expose run(n) -> seconds."""
    c, s = common.at_size(content, size), common.at_size(style, size)
    if framework == "jax":
        return common.JaxStylizer(model, c, s)
    net = torch_reference.TorchVGG(model.weights, torch_device(), channels_last=args.torch_channels_last)
    return torch_reference.TorchStylizer(net, c, s)


def bench_size(model, size: int, args, content, style, log) -> dict:
    """Steady ms/step of both frameworks at one size, their first-call overheads and FLOP rates."""
    runs = {name: runner(name, model, size, args, content, style) for name in ("jax", "torch")}
    first = {name: r.run(args.steps) for name, r in runs.items()}  # compiles, warms caches
    ms = common.interleaved({name: r.run for name, r in runs.items()}, args.steps, args.repeats)
    shape = runs["jax"].content.shape[1:3]
    flops = common.step_flops(model.weights, *shape)
    out = {"size": size, "shape": list(shape), "step_gflop": flops / 1e9,
           "jax_over_torch": common.paired_ratio(ms["jax"], ms["torch"])}
    for name in runs:
        steady = statistics.median(ms[name]["wall"])
        out[name] = {**common.summary(ms[name]), "first_call_overhead_s": first[name] - args.steps * steady / 1000,
                     "achieved_tflops": flops / (steady / 1000) / 1e12}
    log(f"{size} px {shape}: jax {out['jax']['median_ms']:.0f} ms, torch {out['torch']['median_ms']:.0f} ms, "
        f"ratio {out['jax_over_torch']:.2f}")
    if args.profile:
        out["profile"] = {"jax": profile_jax(runs["jax"], args.profile), "torch": profile_torch(runs["torch"], args.profile)}
    return out


TOP_KERNELS = 12


def top(durations: dict[str, float], steps: int) -> list[dict]:
    """The TOP_KERNELS largest of {name: total microseconds} as [{name, ms_per_step, share}]."""
    total = sum(durations.values()) or 1.0
    return [{"name": name, "ms_per_step": us / 1000 / steps, "share": us / total}
            for name, us in sorted(durations.items(), key=lambda item: -item[1])[:TOP_KERNELS]]


def profile_jax(run, steps: int) -> list[dict]:
    """Device time by kernel over `steps` steps of `run` (a JaxStylizer), from jax.profiler's
    Perfetto trace: events of the GPU streams, or on CPU of the host's XLA threads."""
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            run.run(steps)
        trace_file = next(Path(folder).rglob("*.trace.json.gz"))
        events = json.loads(gzip.decompress(trace_file.read_bytes()))["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = [pid for pid, name in names.items() if "GPU" in name] or [pid for pid, name in names.items() if "CPU" in name]
    durations = collections.Counter()
    for e in events:  # "$..." are the Python frames of the host's trace
        if e.get("ph") == "X" and e.get("pid") in device and not e["name"].startswith("$"):
            durations[e["name"]] += e.get("dur", 0)
    return top(durations, steps)


def profile_torch(run, steps: int) -> list[dict]:
    """Self device time (CUDA) or CPU time by operation over `steps` steps of `run` (a TorchStylizer)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        run.run(steps)
    field = "self_device_time_total" if cuda else "self_cpu_time_total"
    return top({k.key: getattr(k, field) for k in prof.key_averages()}, steps)


def peak_of_device(args) -> tuple[float, str] | None:
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if jax.default_backend() == "cpu":
        return None
    return common.peak_tflops(jax.devices()[0].device_kind, args.precision)


def bench_bfloat16(size: int, args, content, style, log) -> dict:
    """bf16 against fp32 at one size: step times in turns, and the PSNR of the bf16 result
    against the fp32 one after the same steps (the content image's PSNR against it for scale)."""
    runs = {p: common.JaxStylizer(nst_jax.load_model(args.weights, p), common.at_size(content, size),
                                  common.at_size(style, size)) for p in ("float32", "bfloat16")}
    for r in runs.values():
        r.run(args.steps)
    ms = common.interleaved({p: r.run for p, r in runs.items()}, args.steps, args.repeats)
    fp32 = runs["float32"].result()
    out = {"size": size, "steps": args.steps, "bf16_over_fp32": common.paired_ratio(ms["bfloat16"], ms["float32"]),
           "psnr_bf16_vs_fp32_db": common.psnr(runs["bfloat16"].result(), fp32),
           "psnr_content_vs_fp32_db": common.psnr(np.asarray(runs["float32"].content[0]), fp32),
           **{p: common.summary(v) for p, v in ms.items()}}
    log(f"bf16 at {size} px: {out['bf16_over_fp32']:.2f}x fp32 time, PSNR {out['psnr_bf16_vs_fp32_db']:.1f} dB")
    return out


def cold_start(size: int, args, content, style, log) -> dict:
    """Fresh `python -c` processes from their start to the first result written (1 step per
    scale), per cache mode: a first run each (filling the empty caches), then runs in turns."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images.write(content, tmp / "content.png")
        images.write(style, tmp / "style.png")

        def start(mode: str) -> dict:
            r = common.run_child(["-c", COLD_START, mode, str(tmp / f"cache-{mode}"), str(args.weights or ""),
                                  str(tmp / "content.png"), str(tmp / "style.png"), str(tmp / "out.png"), str(size)])
            return {"total_s": r["written"] - r["spawned"], "import_s": r["imported"] - r["spawned"],
                    "load_weights_s": r["loaded"] - r["imported"], "stylize_s": r["written"] - r["loaded"],
                    "peak_rss_mb": r["peak_rss_mb"]}

        first = {mode: start(mode) for mode in CACHE_MODES}
        later = {mode: [] for mode in CACHE_MODES}
        for _ in range(args.cold_runs):
            for mode in CACHE_MODES:
                later[mode].append(start(mode))
        files = {mode: [f.stat().st_size for f in (tmp / f"cache-{mode}").rglob("*") if f.is_file()]
                 for mode in CACHE_MODES}
    out = {"size": size, "runs": args.cold_runs, "cache_files": {m: len(f) for m, f in files.items()},
           "cache_mb": {m: sum(f) / 2**20 for m, f in files.items()}, "first": first,
           "later": {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in later.items()}}
    log("cold start " + ", ".join(f"{m}: first {first[m]['total_s']:.1f} s, later {out['later'][m]['total_s']:.1f} s"
                                  for m in CACHE_MODES))
    return out


def child(args) -> None:
    """Peak-memory worker: one framework, one size, warm-up plus --steps steps; prints JSON."""
    common.disable_compilation_cache()
    model = nst_jax.load_model(args.weights)
    content, style = common.load_images(args.content, args.style)
    before = common.peak_rss_mb()
    r = runner(args.child, model, args.sizes[0], args, content, style)
    r.run(1)
    r.run(args.steps)
    device_peak = None
    if args.child == "torch" and torch.cuda.is_available():
        device_peak = torch.cuda.max_memory_allocated() / 2**20
    elif args.child == "jax" and jax.default_backend() != "cpu":
        device_peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**20
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": common.peak_rss_mb(), "device_peak_mb": device_peak}))


def memory(args, log) -> list[dict]:
    """Peak RSS (and device memory on GPUs) of each framework and size, each in a fresh process
    that imports both libraries and loads the weights first ("rss_before_mb")."""
    passed = [f"--{k}={getattr(args, k)}" for k in ("weights", "content", "style") if getattr(args, k)]
    passed += ["--torch-channels-last"] if args.torch_channels_last else []
    out = []
    for size in args.sizes:
        for framework in ("jax", "torch"):
            r = common.run_child([os.path.abspath(__file__), "--child", framework, "--sizes", str(size),
                                  "--steps", "1", *passed])
            out.append({"framework": framework, "size": size,
                        **{k: v for k, v in r.items() if k != "spawned"}})
            log(f"memory {framework} {size} px: peak RSS {r['peak_rss_mb']:.0f} MB")
    return out


def markdown(results: dict) -> str:
    """The figures as Markdown tables."""
    lines = ["| px | shape | JAX ms/step: median (min) | PyTorch ms/step: median (min) | JAX/PyTorch: paired "
             "median; of minima | CPU ms/step JAX; PyTorch | JAX compile s | PyTorch 1st-call s "
             "| TFLOP/s JAX; PyTorch |",
             "|---" * 9 + "|"]
    peak = results.get("peak")
    for r in results["sizes"]:
        j, t = r["jax"], r["torch"]
        tf = [f"{x['achieved_tflops']:.3f}" + (f" ({x['achieved_tflops'] / peak[0]:.0%})" if peak else "")
              for x in (j, t)]
        lines.append(f"| {r['size']} | {r['shape'][0]}x{r['shape'][1]} | {j['median_ms']:.0f} ({j['min_ms']:.0f}) "
                     f"| {t['median_ms']:.0f} ({t['min_ms']:.0f}) | **{r['jax_over_torch']:.2f}**; "
                     f"{j['min_ms'] / t['min_ms']:.2f} | {j['median_cpu_ms']:.0f}; {t['median_cpu_ms']:.0f} "
                     f"| {j['first_call_overhead_s']:.1f} | {t['first_call_overhead_s']:.1f} | {tf[0]}; {tf[1]} |")
    if peak:
        lines.append(f"\nPeak used: {peak[0]} TFLOP/s ({peak[1]}).")
    for r in results["sizes"]:
        for framework, kernels in r.get("profile", {}).items():
            lines += ["", f"Top kernels, {framework}, {r['size']} px (ms per step, share of the profiled time):", ""]
            lines += [f"* {k['ms_per_step']:.2f} ms, {k['share']:.0%}: `{k['name'][:100]}`" for k in kernels]
    if "bfloat16" in results:
        b = results["bfloat16"]
        lines.append(f"\nbf16 at {b['size']} px: {b['bfloat16']['median_ms']:.0f} ms/step against fp32 "
                     f"{b['float32']['median_ms']:.0f} ({b['bf16_over_fp32']:.2f}x); PSNR of the bf16 result "
                     f"against fp32 after {b['steps']} steps {b['psnr_bf16_vs_fp32_db']:.1f} dB "
                     f"(content image against it: {b['psnr_content_vs_fp32_db']:.1f} dB).")
    if "cold_start" in results:
        c = results["cold_start"]
        lines += ["", f"| cold start, {c['size']} px | cache files (MB) | run | total s | import s | load weights s "
                      "| stylize+write s | peak RSS MB |", "|---" * 8 + "|"]
        for mode in CACHE_MODES:
            for run, k in (("first", c["first"][mode]), (f"median of {c['runs']} later", c["later"][mode])):
                lines.append(f"| {mode} | {c['cache_files'][mode]} ({c['cache_mb'][mode]:.1f}) | {run} "
                             f"| {k['total_s']:.1f} | {k['import_s']:.1f} "
                             f"| {k['load_weights_s']:.1f} | {k['stylize_s']:.1f} | {k['peak_rss_mb']:.0f} |")
    if "memory" in results:
        lines += ["", "| framework | px | RSS after imports MB | peak RSS MB | device peak MB |", "|---" * 5 + "|"]
        for m in results["memory"]:
            dev = f"{m['device_peak_mb']:.0f}" if m["device_peak_mb"] is not None else "-"
            lines.append(f"| {m['framework']} | {m['size']} | {m['rss_before_mb']:.0f} | {m['peak_rss_mb']:.0f} "
                         f"| {dev} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    content, style = common.load_images(args.content, args.style)
    common.disable_compilation_cache()
    model = nst_jax.load_model(args.weights)
    results = {"machine": {**common.machine(), "torch_threads": torch.get_num_threads(),
                           "torch_device": torch_device(), "weights": str(model.weights.path),
                           "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None},
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    log(json.dumps(results["machine"]))
    results["peak"] = peak_of_device(args)
    results["sizes"] = [bench_size(model, size, args, content, style, log) for size in args.sizes]
    if args.precision == "bfloat16":
        results["bfloat16"] = bench_bfloat16(args.sizes[0], args, content, style, log)
    if "cold-start" not in args.skip:
        results["cold_start"] = cold_start(64 if args.smoke else 256, args, content, style, log)
    if "memory" not in args.skip:
        results["memory"] = memory(args, log)
    results["machine"]["load_average_end"] = os.getloadavg()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

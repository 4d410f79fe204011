"""Helpers shared by the benchmark scripts: test images, a timed NeuraStyle run,
interleaved A/B timing, analytic FLOPs, device peaks, machine description."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import images, optim, problem, shapes, transfer
from nst_jax.options import Options
from nst_jax.vgg import layer_names, layer_shapes

REPO_ROOT = Path(__file__).resolve().parent.parent

# Dense peak TFLOP/s from the vendors' data sheets, by precision of the convolutions. XLA and
# cuDNN run float32 convolutions as TF32 on these GPUs by default, so "float32" is the TF32 peak.
PEAK_TFLOPS = {
    "H100 PCIe": {"float32": 378.0, "bfloat16": 756.0},
    "H100": {"float32": 494.7, "bfloat16": 989.4},  # SXM
    "H200": {"float32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 156.0, "bfloat16": 312.0},
}


def disable_compilation_cache() -> None:
    """No persistent compilation cache in this process and its children, so that compile
    times are measured, not cache reads (nst_jax may turn one on when loading a model)."""
    os.environ["NEURASTYLE_COMPILATION_CACHE"] = "off"
    jax.config.update("jax_enable_compilation_cache", False)


def add_image_args(parser) -> None:
    parser.add_argument("--content", type=Path, help="content image (default: generated)")
    parser.add_argument("--style", type=Path, help="style image (default: generated)")
    parser.add_argument("--weights", type=Path, help="weights file (default: nst_jax's default)")


def generated_images(seed: int = 0, height: int = 768, width: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(content, style), (H, W, 3) float32 in [0, 1], 3:4: a smooth colour field with a few
    discs for content, coloured stripes and noise for style. Deterministic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    content = 0.5 + 0.3 * np.stack([np.sin(3 * x + 1), np.cos(2 * y), np.sin(2 * (x + y))], -1)
    for cy, cx, r in rng.uniform(0.1, 0.6, size=(4, 3)):
        content[(y - cy) ** 2 + (x - cx) ** 2 < (r / 3) ** 2] = rng.uniform(0, 1, 3)
    angle = 12 * (x * np.cos(0.7) + y * np.sin(0.7))
    style = 0.5 + 0.4 * np.stack([np.sin(angle), np.sin(1.7 * angle + 2), np.cos(0.6 * angle)], -1)
    style = style + rng.normal(0, 0.08, style.shape)
    return (np.clip(content, 0, 1).astype(np.float32), np.clip(style, 0, 1).astype(np.float32))


def load_images(content_path: Path | None, style_path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The images named, else `generated_images()` for the missing ones."""
    content, style = generated_images()
    return (images.read(content_path) if content_path else content,
            images.read(style_path) if style_path else style)


def at_size(image: np.ndarray, longest: int) -> np.ndarray:
    """`image` resized as NeuraStyle does for a scale whose longest side is `longest`."""
    return images.resize(image, *shapes.working_shape(*image.shape[:2], longest))


def problem_of(model, content: np.ndarray, style: np.ndarray, options: Options = Options()) -> problem.Problem:
    """The `Problem` of a one-scale run of one (H, W, 3) content image at its size (no resizing)
    and a style."""
    return problem.Problem.of(model, transfer.targets(model, content[None], [style], np.ones(1), options, 0),
                              problem.loss_weights([options]))


class JaxStylizer:
    """NeuraStyle's own loop (`nst_jax.optim.run_adam`) on one content/style pair at one size."""

    def __init__(self, model, content: np.ndarray, style: np.ndarray, options: Options = Options()):
        self.model, self.options = model, options
        self.content = jnp.asarray(content[None], jnp.float32)
        self.lr, self.decay, self.luminance_step = optim.adam_settings([options], model.weights.edge_tuned)
        self.problem = problem_of(model, content, style, options)
        self.image = self.content

    def run(self, n_steps: int) -> float:
        """`n_steps` Adam steps from the content image; returns the seconds they took."""
        start = optim.AdamCarry.start(jnp.array(self.content))  # a copy: the loop donates its input
        start.image.block_until_ready()
        t = time.perf_counter()
        self.image = optim.run_adam(start, self.problem, self.lr, self.decay, self.luminance_step, n_steps,
                                    lambda *_: True).result()
        self.image.block_until_ready()
        return time.perf_counter() - t

    def result(self) -> np.ndarray:
        return np.asarray(self.image[0])


def interleaved(runs: dict[str, Callable[[int], float]], steps: int, repeats: int) -> dict[str, dict]:
    """Time `steps` steps of each run per repeat, in turn, the order reversed every other repeat
    so that neither side always goes first. Returns {name: {"wall": [ms per step, one per
    repeat], "cpu": [CPU ms per step, all threads]}}. CPU time is steadier than wall time on a
    shared machine, but counts threads spinning while they wait as work."""
    out = {name: {"wall": [], "cpu": []} for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            cpu = time.process_time()
            out[name]["wall"].append(1000 * runs[name](steps) / steps)
            out[name]["cpu"].append(1000 * (time.process_time() - cpu) / steps)
    return out


def summary(ms: dict) -> dict:
    """Median and minimum of interleaved()'s samples of one run."""
    return {"median_ms": statistics.median(ms["wall"]), "min_ms": min(ms["wall"]),
            "median_cpu_ms": statistics.median(ms["cpu"]), "samples_ms": [round(m, 1) for m in ms["wall"]]}


def paired_ratio(a: dict, b: dict) -> float:
    """Median over repeats of a/b wall times, each pair timed back to back (robust to load drifting)."""
    return statistics.median(x / y for x, y in zip(a["wall"], b["wall"]))


def deepest_layer(weights, options: Options = Options()) -> str:
    """The deepest layer a step on `weights` (`nst_jax.weights.Weights`) computes: its content
    layer or the last style layer."""
    names = layer_names(weights.arch)
    style = [name for scale in (0, 1) for name, _ in options.style_layers_at(scale, weights.edge_tuned)]
    return max((options.content_layer, *style), key=names.index)


def step_flops(weights, height: int, width: int, last: str | None = None) -> float:
    """FLOPs of one step's convolutions: the forward pass up to `last` (default `deepest_layer`) plus the gradient
    with respect to the input (backward-data, as many FLOPs as the forward; no weight
    gradients). Multiply-add = 2 FLOPs; pooling, Grams and losses are not counted."""
    arch = weights.arch
    forward, h, w, last = 0.0, height, width, last or deepest_layer(weights)
    for name in layer_names(arch)[: layer_names(arch).index(last) + 1]:
        if name.endswith("_conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        kh, kw, cin, cout = layer_shapes(arch)[name]
        forward += 2.0 * h * w * kh * kw * cin * cout
    return 2 * forward


def peak_tflops(device_kind: str, precision: str) -> tuple[float, str] | None:
    """(dense peak TFLOP/s, which figure) for a known GPU, else None."""
    for name, peaks in PEAK_TFLOPS.items():
        if all(part in device_kind for part in name.split()):
            kind = "TF32 tensor-core" if precision == "float32" else "BF16 tensor-core"
            return peaks[precision], f"{name} dense {kind} peak"
    return None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far: Linux's VmHWM. (Not ru_maxrss, which a
    child started by fork/vfork + exec inherits from its parent as a floor.)"""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def run_child(args: list[str], env: dict | None = None) -> dict:
    """Run a Python child that prints one JSON object as its last stdout line; returns it
    with "spawned" (time.time() just before the start) added."""
    spawned = time.time()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "spawned": spawned}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU, devices and versions, and the load average (the machine may be shared)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(), "python": platform.python_version(),
        **{name: _version(name) for name in ("jax", "jaxlib", "torch", "numpy", "optax", "flax")},
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "nst_jax": nst_jax.__file__,
    }

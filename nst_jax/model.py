"""A VGG network with its weights on the device: the feature extractor.

Loaded once per process (`load_model` is cached). Weights are passed to compiled
functions as traced arrays, so one compiled program serves any weights of the
same architecture and every image of the same shape.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config as config_lib
from nst_jax import weights as weights_io
from nst_jax.vgg import VGG, default_winograd_layers, prepare


@dataclass(frozen=True, eq=False)
class Model:
    """VGG + weights on the default device.

    Attributes:
      weights: the host-side weights and their input convention.
      net: the Flax module (hashable; a static argument of compiled functions).
      params: Flax variables on the device: "params", and "prepared" (`nst_jax.vgg.prepare`).
        When the weights expect BGR input the first kernel's input channels are reversed
        instead, so the model takes RGB.
      input_scale, input_offset: (3,) arrays, RGB order: model input = x * scale - offset
        for x in [0, 1], the weights' ``(x * input_scale - mean) / std``.
    """

    weights: weights_io.Weights
    net: VGG
    params: dict
    input_scale: jax.Array
    input_offset: jax.Array

    @property
    def device(self) -> str:
        d = jax.devices()[0]
        return f"{d.platform}:{d.device_kind}"

    def features(self, images: np.ndarray | jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """Activations of `layers` for (N, H, W, 3) RGB images in [0, 1] -> {name: (N, h, w, C)}."""
        return extract_features(self.net, self.params, self.input_scale, self.input_offset,
                                jnp.asarray(images, jnp.float32), tuple(layers))


def preprocess(images: jax.Array, input_scale: jax.Array, input_offset: jax.Array) -> jax.Array:
    return images * input_scale - input_offset


@functools.partial(jax.jit, static_argnames=("net", "layers"))
def extract_features(net: VGG, params, input_scale, input_offset, images, layers):
    return net.apply(params, preprocess(images, input_scale, input_offset), layers=layers)


def from_weights(w: weights_io.Weights, dtype=jnp.float32, winograd_layers: Sequence[str] | None = None) -> Model:
    """Put `w` on the device. `dtype` is the convolutions' compute dtype (bfloat16 = mixed
    precision); `winograd_layers` default to `nst_jax.vgg.default_winograd_layers` (by backend)."""
    params = w.flax_params()
    scale = np.float32(w.input_scale) / np.asarray(w.std, np.float32)
    offset = np.asarray(w.mean, np.float32) / np.asarray(w.std, np.float32)
    if w.channel_order == "BGR":
        first = dict(params["params"]["block1_conv1"])
        first["kernel"] = first["kernel"][:, :, ::-1, :]
        params = {"params": {**params["params"], "block1_conv1": first}}
        scale, offset = scale[::-1], offset[::-1]
    if winograd_layers is None:
        winograd_layers = default_winograd_layers(w.arch)
    params = jax.device_put(jax.tree_util.tree_map(np.ascontiguousarray, params))
    return Model(
        weights=w,
        net=VGG(arch=w.arch, dtype=dtype, winograd_layers=tuple(winograd_layers)),
        params={**params, **prepare(params, tuple(winograd_layers))},
        input_scale=jnp.asarray(scale.copy()),
        input_offset=jnp.asarray(offset.copy()),
    )


@functools.lru_cache(maxsize=4)
def _load(path: Path, precision: str) -> Model:
    return from_weights(weights_io.load(path), dtype=jnp.bfloat16 if precision == "bfloat16" else jnp.float32)


def _host_tag() -> str:
    """A short tag of this host's CPU model and instruction-set flags. JAX's cache key on CPU
    leaves the instruction set out, so a cache shared between machines (a mounted volume, a
    container image) could hand an AVX-512 program to an older CPU; one folder per tag cannot."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info = "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        info = ""
    return hashlib.sha256((platform.machine() + info).encode()).hexdigest()[:12]


@functools.cache
def enable_compilation_cache(config: config_lib.Config | None = None) -> None:
    """Keep every compiled program on disk so that a new process (a serverless cold start)
    skips compiling the shapes an earlier one compiled (BENCHMARKS.md), in
    `config.compilation_cache` (default `nst_jax.config.current()`'s; None: off), one
    subfolder per CPU kind."""
    folder = (config or config_lib.current()).compilation_cache
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", str(folder / _host_tag()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def load_model(path: str | os.PathLike | None = None, precision: str | None = None,
               config: config_lib.Config | None = None) -> Model:
    """Load a weights file (default: `nst_jax.weights.default_path(config)`) once per process.
    (A process that wants its compiled programs kept on disk calls `enable_compilation_cache`
    first, as the command line and the HTTP function do.)

    Args:
      precision: ``"float32"`` or ``"bfloat16"``: convolutions in bf16, Gram matrices and
        losses in float32. Default `config.precision`.
      config: default `nst_jax.config.current()`.
    Raises:
      WeightsError: the file is missing or invalid.
    """
    config = config or config_lib.current()
    precision = precision or config.precision
    if precision not in config_lib.PRECISIONS:
        raise ValueError(f"precision must be float32 or bfloat16, not {precision!r}")
    path = Path(path) if path is not None else weights_io.default_path(config)
    return _load(path.resolve(), precision)

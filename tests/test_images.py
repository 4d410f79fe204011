"""Image decoding: every mode Pillow reads becomes RGB in [0, 1]; bad bytes are clear errors."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import skimage
from PIL import Image

from nst_jax import images
from nst_jax.errors import ImageError

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


def encoded(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def rgb_image(w=40, h=30) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    img = rgb_image().convert(mode) if mode != "I;16" else Image.fromarray(
        np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50)
    fmt = "JPEG" if mode in ("CMYK", "YCbCr") else "PNG" if mode != "1" else "BMP"
    out = images.decode(encoded(img, fmt))
    assert out.shape == (30, 40, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_sixteen_bit_keeps_its_range():
    values = np.full((4, 4), 65535, np.uint16)
    values[0, 0] = 0
    out = images.decode(encoded(Image.fromarray(values)))
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == pytest.approx(1.0)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.allclose(images.decode(encoded(img)), 1.0)


def test_exif_rotation_is_applied():
    img = rgb_image(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    out = images.decode(encoded(img, "JPEG", exif=exif.tobytes()))
    assert out.shape == (40, 30, 3)


def test_animated_image_gives_its_first_frame():
    with open(os.path.join(SKIMAGE_DATA, "no_time_for_that_tiny.gif"), "rb") as f:
        data = f.read()
    assert Image.open(io.BytesIO(data)).n_frames > 1
    out = images.decode(data)
    first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(out, first, atol=1e-6)


def test_tiny_and_very_wide_images_decode():
    assert images.decode(encoded(rgb_image(1, 1))).shape == (1, 1, 3)
    assert images.decode(encoded(rgb_image(4000, 2))).shape == (2, 4000, 3)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"definitely not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an image|could not be decoded"),
])
def test_bad_bytes_are_clear_errors(data, message):
    with pytest.raises(ImageError, match=message):
        images.decode(data)


def test_truncated_image_is_an_error():
    data = encoded(rgb_image(200, 200), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        images.decode(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    # A 1-bit 20000x20000 PNG is a few kB but claims 400 M pixels.
    bomb = encoded(Image.new("1", (20000, 20000)))
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="over the limit") as e:
        images.decode(bomb, max_pixels=10_000_000)
    assert e.value.code == "image_too_large"


def test_encode_decode_round_trip_and_resize():
    img = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(images.decode(images.encode(img)), img, atol=1 / 255)
    assert images.resize(img, 10, 15).shape == (10, 15, 3)
    assert images.fit_shape(300, 451, 128) == (85, 128)
    assert images.fit_shape(300, 451, 128, multiple=8) == (88, 128)

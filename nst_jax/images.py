"""Image decoding, encoding and resizing with Pillow. Arrays are float32 RGB in [0, 1], (H, W, 3)."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_jax.errors import ImageError

# Larger than any sane photo; a header claiming more is a decompression bomb.
MAX_PIXELS = 64_000_000
# The formats decoded; Pillow knows many more, whose decoders see less use (EPS runs Ghostscript).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def decode(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode image bytes (PNG, JPEG, WebP, GIF, BMP or TIFF, any mode) to float32 RGB in [0, 1].

    EXIF orientation is applied, the first frame of an animation is taken, alpha is
    composited on white, 16-bit, palette, grayscale and CMYK become 8-bit RGB.

    Raises:
      ImageError: not an image (code unsupported_format: in another format), truncated, or
        more than `max_pixels` pixels.
    """
    return to_float(decode_rgb8(data, max_pixels, name))


def decode_rgb8(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image",
                longest: int | None = None) -> np.ndarray:
    """As `decode`, to uint8 RGB (a quarter of float32's memory), downscaled with Lanczos so
    that its longest side is at most `longest` (JPEGs are decoded at a reduced scale where
    that still leaves `longest`)."""
    with _decoding(name, max_pixels):
        img = _open(data, max_pixels, name)
        if longest is not None:
            img.draft("RGB", (longest, longest))
        img.load()
        img = _to_rgb8(ImageOps.exif_transpose(img))
        if longest is not None and max(img.size) > longest:
            img.thumbnail((longest, longest), Image.LANCZOS)
        return np.asarray(img)


def pixels(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> int:
    """Width x height that the image's header claims, without decoding it (ImageError as `decode`)."""
    with _decoding(name, max_pixels):
        w, h = _open(data, max_pixels, name).size
        return w * h


@contextlib.contextmanager
def _decoding(name: str, max_pixels: int):
    """Pillow's complaints about image bytes, as ImageError naming the image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} claims more pixels than Pillow decodes safely, over the limit of {max_pixels}",
                         code="image_too_large") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # Pillow's words stay out of the message
        raise ImageError(f"{name} could not be decoded (truncated or corrupt)") from e


def _open(data: bytes, max_pixels: int, name: str) -> Image.Image:
    """The image's first frame, opened (header read) but not decoded."""
    if not data:
        raise ImageError(f"{name} is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as e:
        if other_format(data):
            raise ImageError(f"{name} is in a format not taken here; send {', '.join(FORMATS)}",
                             code="unsupported_format") from e
        raise ImageError(f"{name} is not an image in a format Pillow can read") from e
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"{name} is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}", code="image_too_large")
    img.seek(0)
    return img


def other_format(data: bytes) -> str | None:
    """The format outside FORMATS whose signature `data` starts with, found without decoding."""
    Image.init()
    head = data[:64]
    return next((fmt for fmt, (_, accept) in Image.OPEN.items()
                 if fmt not in FORMATS and accept is not None and _accepts(accept, head)), None)


def _accepts(accept, head: bytes) -> bool:
    try:
        return bool(accept(head))
    except Exception:  # noqa: BLE001  (a plugin's signature check that cannot read these bytes)
        return False


def _to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit and float scaled to 8 bits, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0)
        img = Image.fromarray(to_uint8(np.clip(arr, 0, 1)), "L")
    elif img.mode == "F":
        img = Image.fromarray(to_uint8(np.clip(np.asarray(img, dtype=np.float32), 0, 1)), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def read(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file; raises ImageError with the path in the message."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from e
    return decode(data, max_pixels, name=str(path))


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 RGB to float32 in [0, 1]."""
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255), dtype=np.uint8)


def encode(image: np.ndarray, format: str = "PNG", **params) -> bytes:
    """Encode a float RGB image; `params` go to Pillow's save (e.g. quality for JPEG)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format=format, **params)
    return buf.getvalue()


def check_writable(path: str | os.PathLike) -> None:
    """Raise ImageError unless Pillow can write `path`'s extension and its folder exists,
    so that a long run does not end in an unsavable result."""
    path = Path(path)
    if path.suffix.lower() not in Image.registered_extensions():
        raise ImageError(f"cannot write {path}: unknown image extension {path.suffix!r} (use .png or .jpg)")
    if not path.parent.is_dir():
        raise ImageError(f"cannot write {path}: folder {path.parent} does not exist")


def write(image: np.ndarray, path: str | os.PathLike) -> None:
    """Save by the file's extension (PNG, JPEG, WebP, ...)."""
    try:
        Image.fromarray(to_uint8(image)).save(path)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"cannot write {path}: {e}") from e


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to exactly (height, width) with Lanczos (antialiased when shrinking)."""
    if image.shape[:2] == (height, width):
        return image
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((width, height), Image.LANCZOS))
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def fit_shape(height: int, width: int, longest: int, multiple: int = 1) -> tuple[int, int]:
    """Shape with the same aspect ratio whose longest side is `longest`, both sides rounded
    to a multiple of `multiple` (at least `multiple`). Rounding buckets the shapes so that a
    stream of arbitrary images compiles few programs."""
    scale = longest / max(height, width)
    def side(s):
        return max(multiple, int(round(s * scale / multiple)) * multiple)
    return side(height), side(width)

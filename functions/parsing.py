"""A stylize request's body to what the library takes: pure functions, no Flask.

`check_media_type(mimetype)`, then `parse_stylize(body, settings, presets)` ->
`StylizeRequest(content, styles, options, stream)`, or `nst_jax.errors.NSTError` whose code
and message the client gets.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nst_jax import Options, errors, images

from functions.settings import Settings

IMAGE_KEYS = ("style_image", "style_images", "style_preset")  # exactly one of these gives the styles
REQUEST_KEYS = {"content_image", *IMAGE_KEYS, "style_blend", "options", "stream"}


@dataclass(frozen=True)
class StylizeRequest:
    """What a valid request asks for: images (H, W, 3) uint8 RGB, uploads no larger than the run
    can use, built-in paintings as they are."""

    content: np.ndarray
    styles: tuple[np.ndarray, ...]
    options: Options
    stream: bool = False


def parse_stylize(body: bytes, settings: Settings, presets: Mapping[str, np.ndarray]) -> StylizeRequest:
    """Parse and check a request body; `presets` are the built-in styles by name (uint8 RGB).
    Options are checked before any image is decoded, and the images' pixels all together
    against `settings.max_request_pixels`; each is decoded to uint8 and downscaled to what
    the requested size can use, so a request holds little memory while it waits. A built-in
    painting is passed as it is: every request shares its pixels, and the warm-up analysed it
    as it is (a downscaled copy would miss the Gram matrices it cached)."""
    payload = parse_json(body)
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise errors.NSTError("stream must be true or false")
    if "content_image" not in payload:
        raise errors.NSTError("content_image is missing")
    content = image_bytes(payload["content_image"], "content_image")
    styles = style_sources(payload, settings, presets)
    options = parse_options(payload, len(styles), settings)
    encoded = {"content_image": content, **{name: s for name, s in styles.items() if isinstance(s, bytes)}}
    check_request_pixels(encoded, settings)
    content_side, style_side = useful_sides(options)
    return StylizeRequest(
        images.decode_rgb8(content, settings.max_pixels, "content_image", content_side),
        tuple(images.decode_rgb8(s, settings.max_pixels, name, style_side) if isinstance(s, bytes)
              else s for name, s in styles.items()),
        options, stream)


def useful_sides(options: Options) -> tuple[int, int]:
    """Longest sides (content, style) past which decoded pixels are of no use to a run at
    `options.size`: the engine works near that size and analyses styles `style_scale` times
    larger; twice that leaves room for its rounding and for resampling."""
    side = 2 * options.size
    return side, math.ceil(side * max(1.0, options.style_scale))


def check_request_pixels(encoded: Mapping[str, bytes], settings: Settings) -> None:
    """The images' pixels, as their headers claim them, within the request's budget (413)."""
    total = sum(images.pixels(data, settings.max_pixels, name) for name, data in encoded.items())
    if total > settings.max_request_pixels:
        raise errors.ImageError(f"the request's images have {total} pixels in all, over the limit of "
                                f"{settings.max_request_pixels}", code="image_too_large")


def check_media_type(mimetype: str) -> None:
    """Only JSON: a form or text/plain POST is one any web page can make a browser send,
    without a CORS preflight, to spend this server's work."""
    if mimetype != "application/json":
        raise errors.NSTError(f"the body must be sent as application/json, not {mimetype or 'untyped'}",
                              "unsupported_media_type")


def parse_json(body: bytes) -> dict:
    """The body as a JSON object with known fields only."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        why = (f"at character {e.pos}" if isinstance(e, json.JSONDecodeError) else
               "not UTF-8" if isinstance(e, UnicodeDecodeError) else "nested too deep")
        raise errors.NSTError(f"request body is not valid JSON ({why})", "invalid_json") from None
    if not isinstance(payload, dict):
        raise errors.NSTError(f"request body must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - REQUEST_KEYS)
    if unknown:
        raise errors.NSTError(f"unknown field(s) {unknown}; known fields are {sorted(REQUEST_KEYS)}")
    return payload


def image_bytes(value, name: str) -> bytes:
    """Bytes of a base64 string or a ``data:<type>;base64,`` URL."""
    if not isinstance(value, str):
        raise errors.NSTError(f"{name} must be a base64 string or a data: URL")
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise errors.NSTError(f"{name}: a data: URL must be base64-encoded", "invalid_base64")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.NSTError(f"{name} is not valid base64", "invalid_base64") from None


def style_sources(payload: dict, settings: Settings,
                  presets: Mapping[str, np.ndarray]) -> dict[str, bytes | np.ndarray]:
    """The style images of exactly one of style_image, style_images or style_preset, by field
    name: bytes to decode, or a preset's pixels."""
    given = [key for key in IMAGE_KEYS if key in payload]
    if len(given) != 1:
        raise errors.NSTError(f"give exactly one of {', '.join(IMAGE_KEYS)}")
    if "style_preset" in payload:
        return {"style_preset": preset_image(payload["style_preset"], presets)}
    if "style_image" in payload:
        return {"style_image": image_bytes(payload["style_image"], "style_image")}
    values = payload["style_images"]
    if not isinstance(values, list) or not 1 <= len(values) <= settings.max_styles:
        raise errors.NSTError(f"style_images must be a list of 1 to {settings.max_styles} images")
    names = [f"style_images[{i}]" for i in range(len(values))]
    return {name: image_bytes(v, name) for name, v in zip(names, values)}


def preset_image(name, presets: Mapping[str, np.ndarray]) -> np.ndarray:
    if not isinstance(name, str) or name not in presets:
        raise errors.NSTError(f"style_preset must be one of {', '.join(sorted(presets))}", "unknown_style_preset")
    return presets[name]


def parse_options(payload: dict, n_styles: int, settings: Settings) -> Options:
    """`options`, with a top-level `style_blend` folded in, validated against the limits."""
    values = payload.get("options", {})
    if not isinstance(values, dict):
        raise errors.OptionsError(f"options must be an object, got {type(values).__name__}")
    if "style_blend" in payload:
        if "style_blend" in values:
            raise errors.OptionsError("give style_blend either at the top level or in options, not both")
        values = {**values, "style_blend": payload["style_blend"]}
    options = Options.from_mapping(values, settings.limits, n_styles)
    if options.max_seconds is None and settings.limits.max_seconds is not None:
        options = dataclasses.replace(options, max_seconds=settings.limits.max_seconds)
    return options

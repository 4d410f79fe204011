"""Parsing a stylize request body (functions/parsing.py) on its own: no Flask, no server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CONTENT, SMALL, STYLE, b64, body, png

from functions.parsing import StylizeRequest, parse_stylize
from functions.settings import Settings
from nst_jax import Options, errors

SETTINGS = Settings()
PRESETS = {"dots": np.full((8, 8, 3), 128, np.uint8)}


def parse(payload, settings: Settings = SETTINGS) -> StylizeRequest:
    return parse_stylize(json.dumps(payload).encode(), settings, PRESETS)


def test_a_body_becomes_images_options_and_the_stream_flag():
    request = parse({**body(steps=3), "stream": True})
    assert request.content.shape == (40, 40, 3) and len(request.styles) == 1
    # a request that names no time budget gets the deployment's ceiling
    assert request.options == Options(**{**SMALL, "steps": 3, "max_seconds": 240}) and request.stream is True


def test_several_styles_and_a_preset():
    two = parse({"content_image": CONTENT, "style_images": [STYLE, b64(png(size=(20, 10)))], "style_blend": [1, 2]})
    assert [s.shape for s in two.styles] == [(40, 40, 3), (10, 20, 3)]
    assert two.options.style_blend == (1, 2)
    assert parse({"content_image": CONTENT, "style_preset": "dots"}).styles[0] is PRESETS["dots"]


def test_a_preset_larger_than_the_size_can_use_is_passed_as_it_is():
    # the warm-up cached its Gram matrices for these very pixels; a downscaled copy would miss them
    presets = {"wide": np.zeros((300, 500, 3), np.uint8)}
    payload = {"content_image": CONTENT, "style_preset": "wide", "options": {"size": 64}}
    assert parse_stylize(json.dumps(payload).encode(), SETTINGS, presets).styles[0] is presets["wide"]


@pytest.mark.parametrize("payload, code", [
    ({"style_image": STYLE}, "invalid_request"),
    ({"content_image": CONTENT, "style_image": STYLE, "style_preset": "dots"}, "invalid_request"),
    ({"content_image": CONTENT, "style_preset": "stripes"}, "unknown_style_preset"),
    ({**body(), "options": {"size": 4096}}, "invalid_option"),
    ({**body(), "content_image": "@@"}, "invalid_base64"),
])
def test_mistakes_are_errors_with_codes(payload, code):
    with pytest.raises(errors.NSTError) as e:
        parse(payload)
    assert e.value.code == code


def test_a_number_too_big_for_a_float_is_an_option_error():
    data = json.dumps(body()).replace('"steps": 1', '"steps": 1, "tv_weight": 1' + "0" * 400).encode()
    with pytest.raises(errors.OptionsError, match="tv_weight"):
        parse_stylize(data, SETTINGS, PRESETS)


def test_images_are_uint8_no_larger_than_the_size_can_use():
    big = b64(png(size=(3000, 1500)))
    request = parse({"content_image": big, "style_images": [big, STYLE], "options": {"size": 64}})
    assert request.content.dtype == np.uint8 and request.content.shape == (64, 128, 3)
    assert [s.shape for s in request.styles] == [(64, 128, 3), (40, 40, 3)]  # small ones stay as they are


def test_the_pixel_budget_counts_every_image_of_the_request():
    payload = {"content_image": CONTENT, "style_images": [STYLE, STYLE]}  # 3 x 1600 pixels
    assert len(parse(payload, Settings(max_request_pixels=4800)).styles) == 2
    with pytest.raises(errors.ImageError, match="4800 pixels in all") as e:
        parse(payload, Settings(max_request_pixels=4799))
    assert e.value.code == "image_too_large"


def test_options_are_checked_before_any_image_is_decoded():
    with pytest.raises(errors.OptionsError):
        parse({**body(size=5), "content_image": b64(b"not an image")})

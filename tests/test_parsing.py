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
PRESETS = {"dots": np.full((8, 8, 3), 0.5, np.float32)}


def parse(payload, settings: Settings = SETTINGS) -> StylizeRequest:
    return parse_stylize(json.dumps(payload).encode(), settings, PRESETS)


def test_a_body_becomes_images_options_and_the_stream_flag():
    request = parse({**body(steps=3), "stream": True})
    assert request.content.shape == (40, 40, 3) and len(request.styles) == 1
    assert request.options == Options(**{**SMALL, "steps": 3}) and request.stream is True


def test_several_styles_and_a_preset():
    two = parse({"content_image": CONTENT, "style_images": [STYLE, b64(png(size=(20, 10)))], "style_blend": [1, 2]})
    assert [s.shape for s in two.styles] == [(40, 40, 3), (10, 20, 3)]
    assert two.options.style_blend == (1, 2)
    assert parse({"content_image": CONTENT, "style_preset": "dots"}).styles[0] is PRESETS["dots"]


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

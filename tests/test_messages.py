"""The messages' JSON (nst_jax/messages.py): a progress report and a result written and read
back, and what is written valid by the schemas the OpenAPI document takes."""

from __future__ import annotations

import math

import jsonschema
import numpy as np
import pytest
from conftest import gradient_image

from nst_jax import Options, images, messages
from nst_jax.messages import PREVIEW_SIDE, Progress, Result
from nst_jax.options import options_json_schema


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of message `name`, its references resolved among the messages and the options."""
    defs = {**messages.json_schemas(lambda other: {"$ref": f"#/$defs/{other}"}), "Options": options_json_schema()}
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})


def test_a_progress_report_goes_over_the_wire_and_back():
    preview = gradient_image(300, 600)
    report = Progress(step=7, total=20, scale=1, scales=3, shape=(300, 600), loss=1.234567, elapsed=2.71828,
                      preview=preview, evaluations=9, seconds_left=10.12345, budget_cut=True)
    line = report.to_json()
    validator("Progress").validate(line)
    assert line["type"] == "progress" and line["elapsed"] == 2.718 and line["seconds_left"] == 10.123
    assert "evaluations" not in line  # the library's alone
    back = Progress.from_json(line)
    assert (back.step, back.total, back.scale, back.scales, back.shape) == (7, 20, 1, 3, (300, 600))
    assert (back.loss, back.elapsed, back.seconds_left, back.budget_cut) == (1.234567, 2.718, 10.123, True)
    assert back.preview.shape == (PREVIEW_SIDE // 2, PREVIEW_SIDE, 3)  # downscaled
    assert np.abs(back.preview - images.resize(preview, 128, 256)).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG


def test_what_has_no_value_is_null_or_left_out():
    line = Progress(step=1, total=1, scale=0, scales=1, shape=(32, 32), loss=math.inf, elapsed=0.0).to_json()
    validator("Progress").validate(line)
    assert line["loss"] is None and line["seconds_left"] is None and "preview" not in line
    back = Progress.from_json(line)
    assert math.isnan(back.loss) and back.seconds_left is None and back.preview is None
    with pytest.raises(KeyError):
        Progress.from_json({k: v for k, v in line.items() if k != "step"})


def test_a_result_goes_over_the_wire_and_back():
    image = gradient_image(40, 56)
    result = Result(image, steps=12, elapsed_s=3.14159, options=Options().to_dict(),
                    weights={"arch": "vgg16", "source": "tests"}, budget_cut=True)
    body = result.to_json()
    validator("Result").validate(body)
    assert (body["width"], body["height"], body["elapsed_s"]) == (56, 40, 3.142)
    back = Result.from_json(body)
    assert np.abs(back.image - image).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    assert (back.steps, back.elapsed_s, back.options, back.weights, back.budget_cut) == (
        12, 3.142, Options().to_dict(), {"arch": "vgg16", "source": "tests"}, True)
    with pytest.raises(ValueError, match="width and height"):
        Result.from_json({**body, "width": 57})
    with pytest.raises(jsonschema.ValidationError):
        validator("Result").validate({k: v for k, v in body.items() if k != "options"})

"""A run's time: the plan of steps per scale, the time budget (`max_seconds`) and the seconds left
that progress reports carry, in the library and through HTTP."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from conftest import gradient_image
from helpers import assert_error, body

from nst_jax import Options, errors, schedule, stylize, transfer
from nst_jax.options import Limits

CONTENT, STYLE = gradient_image(48, 64, seed=0), gradient_image(40, 40, seed=1)


def run(model, **options) -> tuple[np.ndarray, list[transfer.Progress], float]:
    reports = []
    start = time.perf_counter()
    result = stylize(CONTENT, [STYLE], Options(**options), model=model, on_progress=reports.append)
    return result, reports, time.perf_counter() - start


def test_finer_scales_run_the_step_ratio_of_the_coarser_ones_steps(model):
    _, reports, _ = run(model, size=128, min_scale=64, scale_ratio=2.0, steps=10, step_ratio=0.5)
    assert [r.total for r in reports] == [10 + 5] * len(reports)
    assert [r.step for r in reports if r.scale == 0][-1] == 10 and reports[-1].step == 15
    assert not any(r.budget_cut for r in reports)


def test_progress_says_the_seconds_left_down_to_zero(model):
    _, reports, _ = run(model, size=64, steps=40)
    lefts = [r.seconds_left for r in reports]
    assert all(left >= 0 for left in lefts) and lefts[-1] == 0
    assert lefts[-2] > 0 and reports[-1].elapsed > reports[0].elapsed


def test_a_budget_cuts_the_plan_and_the_run_ends_within_it(model):
    run(model, size=64, steps=2)  # its programs compiled, its step cost measured
    options = Options(size=64, steps=100_000 // 32)
    budget = 3 + schedule.minimum_seconds(transfer.plan(CONTENT.shape, options), transfer.step_costs(model))
    result, reports, seconds = run(model, size=64, steps=options.steps, max_seconds=budget)
    assert result.shape == (48, 64, 3) and np.isfinite(result).all()
    last = reports[-1]
    assert last.budget_cut and last.step == last.total and 1 <= last.total < 100_000 // 32
    assert last.seconds_left == 0
    assert all(r.seconds_left <= budget for r in reports)
    assert seconds <= budget + schedule.REPORT_EVERY_S  # never past it by more than one progress interval


def test_a_budget_too_small_for_a_useful_picture_is_refused_with_what_would_do(model):
    run(model, size=64, steps=2)
    with pytest.raises(errors.OptionsError, match=r"'max_seconds' 0.001 is too small .* at least \d+ s"):
        run(model, size=64, steps=100, max_seconds=0.001)


@pytest.mark.parametrize("value", [-1, 0, float("nan"), "soon", 241])
def test_bad_budgets_are_option_errors(value):
    with pytest.raises(errors.OptionsError, match="max_seconds"):
        Options.from_mapping({"max_seconds": value}, Limits(max_seconds=240))


# --- through HTTP ----------------------------------------------------------------------------

def test_a_request_without_a_budget_gets_the_deployments_ceiling(client):
    r = client.post("/stylize", json=body(steps=2))
    assert r.status_code == 200, r.data
    assert r.get_json()["options"]["max_seconds"] == 240 and r.get_json()["budget_cut"] is False
    assert client.get("/config").get_json()["limits"]["max_seconds"] == 240


@pytest.mark.parametrize("value", [-5, 0, "NaN", 10_000])
def test_bad_budgets_are_a_400(function, value):
    client, _ = function()
    raw = body(steps=2)
    raw["options"]["max_seconds"] = "__value__"
    text = __import__("json").dumps(raw).replace('"__value__"', str(value))  # NaN as JSON's extension has it
    r = client.post("/stylize", data=text, content_type="application/json")
    assert "max_seconds" in assert_error(r, 400, "invalid_option")["message"]


def test_a_budget_too_small_is_a_400_before_the_wait_in_line(client):
    r = client.post("/stylize", json=body(steps=100, max_seconds=0.001))
    message = assert_error(r, 400, "invalid_option")["message"]
    needed = float(message.rsplit("at least ", 1)[1].split()[0])
    assert math.isfinite(needed) and needed > 0.001

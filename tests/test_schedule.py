"""The plan of a run and its time: steps per scale, estimated seconds, fitting a budget."""

from __future__ import annotations

import pytest

from nst_jax import schedule
from nst_jax.schedule import Plan, RunClock, StepCosts


def test_finer_scales_run_fewer_steps():
    assert schedule.scale_steps(3, 100, 0.4) == (100, 40, 16)
    assert schedule.scale_steps(1, 7, 0.4) == (7,)
    assert schedule.scale_steps(2, 300, 1.0) == (300, 300)  # the seed recipe: as many at every scale
    assert schedule.scale_steps(3, 1, 0.1) == (1, 1, 1)  # never a scale without a step


def test_costs_measured_replace_the_defaults_and_scale_with_pixels():
    costs = StepCosts("cpu")
    default = costs.step((256, 256))
    assert default == pytest.approx(schedule.DEFAULT_COSTS["cpu"][0] * 256 * 256 / 1e6)
    costs.record((256, 256), 1, steps=1, seconds=0.1, setup_s=9.0)  # its first run: compiling
    assert costs.step((256, 256)) == 0.1 and costs.setup((256, 256)) == pytest.approx(0.1 * schedule.SETUP_IN_STEPS)
    costs.record((256, 256), 1, setup_s=2.0)
    assert costs.setup((256, 256)) == 2.0
    assert costs.step((512, 512)) == pytest.approx(0.4)  # four times the pixels
    assert costs.step((256, 256), batch=2) == pytest.approx(0.2)
    assert costs.setup((512, 512)) == schedule.DEFAULT_COSTS["cpu"][1]  # never ran: may compile
    costs.record((512, 512), 1, steps=2, seconds=0.7)
    assert costs.step((512, 512)) == 0.35


def test_a_step_cost_is_a_mean_of_the_recent_steps():
    """One slow report (a preview to encode, another process) moves the estimate a little, however
    often the reports come; a lasting change of speed takes it over within a few half-lives."""
    costs = StepCosts("cpu")
    costs.record((128, 128), 1, steps=10, seconds=1.0)
    costs.record((128, 128), 1, steps=10, seconds=2.0)
    fade = 0.5 ** (10 / schedule.STEP_COST_HALF_LIFE)
    assert costs.step((128, 128)) == pytest.approx((fade * 1.0 + 2.0) / (fade * 10 + 10))
    assert 0.1 < costs.step((128, 128)) < 0.2
    costs.record((128, 128), 1, steps=40, seconds=4.0)  # more steps weigh more
    assert costs.step((128, 128)) < 0.12
    steady = StepCosts("cpu")
    for _ in range(20):  # 0.1 s a step, reported every 3 steps
        steady.record((128, 128), 1, steps=3, seconds=0.3)
    steady.record((128, 128), 1, steps=3, seconds=0.9)  # a report 0.6 s late
    assert 0.1 < steady.step((128, 128)) < 0.125
    for _ in range(40):  # now 0.3 s a step, for good
        steady.record((128, 128), 1, steps=3, seconds=0.9)
    assert steady.step((128, 128)) == pytest.approx(0.3, rel=0.02)


def measured(*shapes_and_costs) -> StepCosts:
    """StepCosts with (shape, step_s, setup_s) measured as a second run would (compiled)."""
    costs = StepCosts("cpu")
    for shape, step_s, setup_s in shapes_and_costs:
        costs.record(shape, 1, steps=1, seconds=step_s, setup_s=setup_s)
        costs.record(shape, 1, setup_s=setup_s)
    return costs


def test_plan_seconds_and_fitting_a_budget():
    costs = measured(((256, 256), 0.1, 1.0), ((512, 512), 0.4, 1.0))
    plan = Plan(((256, 256), (512, 512)), (100, 40))
    assert plan.total == 140
    assert plan.seconds(costs) == pytest.approx(1 + 10 + 1 + 16)
    assert plan.fit(60, costs) is plan
    half = plan.fit(2 + 13, costs)  # the steps' 26 s cut to 13 s
    assert half.steps == (50, 20) and half.seconds(costs) <= 15
    later = plan.fit(1 + 8, costs, first_scale=1)  # only the fine scale is left to cut
    assert later.steps == (100, 20)
    assert schedule.seconds_left(plan, 0, 60, costs) == pytest.approx(40 * 0.1 + 1 + 40 * 0.4)
    assert schedule.seconds_left(plan, 1, 40, costs) == 0


def test_the_smallest_useful_budget_is_a_fraction_of_the_plan():
    costs = measured(((256, 256), 0.1, 1.0))
    plan = Plan(((256, 256),), (100,))
    assert schedule.minimum_seconds(plan, costs) == pytest.approx(1 + 0.1 * schedule.MIN_STEPS)
    assert schedule.minimum_seconds(Plan(((256, 256),), (3,)), costs) == pytest.approx(1 + 0.1 * 3)


class FakeTimer:
    """A clock that moves only when told: `timer.now += seconds`."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_scales_first_steps_run_one_at_a_time_then_about_a_reports_worth():
    timer = FakeTimer()
    costs = measured(((256, 256), 0.1, 1.0))
    clock = RunClock(Plan(((256, 256),), (400,)), costs, timer=timer)
    assert clock.start_scale(0) == 400
    assert clock.steps_now(400) == 1  # compiles
    timer.now += 5.0
    clock.observe(1)  # its setup: 5 s less a step
    assert clock.steps_now(399) == 1  # no step of this scale measured yet
    timer.now += 0.2
    clock.observe(2)  # a step: 0.2 s, into the fading mean with the 0.1 s measured before
    step = costs.step((256, 256))
    assert 0.1 < step < 0.2 and clock.step == clock.done == 2
    assert clock.steps_now(398) == min(400 // 20, int(schedule.REPORT_EVERY_S / step))
    assert clock.steps_now(3) == 3  # never more than are left
    assert clock.steps_now(0) == 0
    clock.end_scale()
    assert clock.ran_steps == [2] and clock.plan.steps == (2,) and clock.cut


def test_no_call_starts_that_would_end_past_the_scales_deadline():
    timer = FakeTimer()
    costs = measured(((256, 256), 0.1, 1.0), ((512, 512), 0.4, 1.0))
    # 30 s: the plan's 1 + 10 + 1 + 16 s fit; the fine scale's 17 s are kept for it
    clock = RunClock(Plan(((256, 256), (512, 512)), (100, 40)), costs, max_seconds=30, timer=timer)
    assert clock.start_scale(0) == 100 and not clock.cut
    assert clock.deadline == pytest.approx(100 + 30 - 17)
    clock.observe(0)
    timer.now += 1.0
    clock.observe(10)  # 0.1 s a step, as measured before
    timer.now = clock.deadline - 0.35
    assert clock.steps_now(90) == 3  # 0.3 s of steps fit, not 0.4
    timer.now = clock.deadline
    assert clock.steps_now(90) == 0


def test_a_later_scale_without_time_for_a_step_does_not_start():
    timer = FakeTimer()
    costs = measured(((256, 256), 0.1, 1.0), ((512, 512), 0.4, 1.0))
    clock = RunClock(Plan(((256, 256), (512, 512)), (100, 40)), costs, max_seconds=30, timer=timer)
    clock.start_scale(0)
    clock.observe(0)
    timer.now += 29.0  # a slow scale: 1 s left, and the next scale's setup and a step take 1.4 s
    clock.observe(100)
    clock.end_scale()
    assert clock.start_scale(1) == 0
    assert clock.plan.steps == (100, 0) and clock.cut
    assert clock.seconds_left(timer.now) <= 1.0


def test_the_seconds_left_count_down_and_never_pass_the_budget():
    timer = FakeTimer()
    costs = measured(((256, 256), 0.1, 1.0))
    clock = RunClock(Plan(((256, 256),), (100,)), costs, max_seconds=8, timer=timer)
    assert clock.start_scale(0) < 100 and clock.cut  # 1 s + 100 x 0.1 s does not fit in 8 s
    clock.observe(1)
    timer.now += 7.5
    assert clock.seconds_left(timer.now) == pytest.approx(0.5)  # the budget's end, not the plan's

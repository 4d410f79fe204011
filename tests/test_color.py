"""Colour transfer (nst_jax.color.transfer_colors): the photo in the paintings' colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import skimage.data

from benchmarks import measures
from conftest import gradient_image
from nst_jax import color, images

REPO = Path(__file__).resolve().parent.parent


def test_the_photo_takes_the_paintings_colour_distribution_and_keeps_its_outlines():
    photo = images.resize(skimage.data.coffee() / np.float32(255), 96, 128)
    painting = images.resize(images.read(REPO / "web" / "styles" / "starry_night.jpg"), 80, 128)
    out = color.transfer_colors(photo, [painting], [1.0])
    assert out.shape == photo.shape and out.dtype == np.float32
    lab = {name: measures.rgb_to_lab(im).reshape(-1, 3) for name, im in
           (("photo", photo), ("painting", painting), ("out", out))}
    before = measures.sliced_wasserstein(lab["photo"], lab["painting"])
    assert measures.sliced_wasserstein(lab["out"], lab["painting"]) < 0.05 * before
    assert measures.structure(out, photo, 128) > 0.8  # the colours moved, the outlines did not
    np.testing.assert_array_equal(out, color.transfer_colors(photo, [painting], [1.0]))  # repeatable


def test_blended_paintings_give_their_colours_in_proportion():
    photo = gradient_image(64, 64, seed=5)
    blue, yellow = np.full((32, 32, 3), (0.1, 0.2, 0.7), np.float32), np.full((32, 32, 3), (0.9, 0.8, 0.1), np.float32)
    out = color.transfer_colors(photo, [blue, yellow], [0.75, 0.25], photo_luminance=0).reshape(-1, 3)
    near_blue = np.linalg.norm(out - blue[0, 0], axis=1) < 0.1
    near_yellow = np.linalg.norm(out - yellow[0, 0], axis=1) < 0.1
    assert abs(near_blue.mean() - 0.75) < 0.05 and abs(near_yellow.mean() - 0.25) < 0.05


def test_part_of_the_luminance_stays_the_photos_so_a_pale_painting_keeps_a_white_subject_on_a_dark_sky():
    rng = np.random.default_rng(0)
    photo = np.zeros((64, 64, 3), np.float32) + np.float32([0.05, 0.1, 0.3])  # a night sky
    photo[:, :8] = 0.02  # a black tower
    rocket = np.s_[16:48, 28:36]
    photo[rocket] = 0.95
    painting = np.zeros((40, 40, 3), np.float32) + np.float32([0.85, 0.8, 0.7])  # mostly pale beige
    painting[:10] = (0.1, 0.15, 0.35)  # a quarter dark blue
    photo, painting = (np.clip(im + rng.normal(0, 0.02, im.shape), 0, 1).astype(np.float32) for im in (photo, painting))
    outs = {share: color.transfer_colors(photo, [painting], [1.0], photo_luminance=share) for share in (0.0, 0.5)}
    contrast = {share: color.luminance(out)[rocket].mean() - color.luminance(out)[:8, 16:].mean()
                for share, out in outs.items()}
    assert contrast[0.5] > 2 * contrast[0.0]  # the painting's colours alone: white on pale beige
    unclipped = ((outs[0.5] > 0.01) & (outs[0.5] < 0.99) & (outs[0.0] > 0.01) & (outs[0.0] < 0.99)).all(-1)
    assert unclipped.mean() > 0.5
    shift = (outs[0.5] - outs[0.0])[unclipped]
    np.testing.assert_allclose(shift, np.repeat(shift.mean(-1, keepdims=True), 3, -1), atol=1e-5)  # grey: chroma kept

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
    out = color.transfer_colors(photo, [blue, yellow], [0.75, 0.25]).reshape(-1, 3)
    near_blue = np.linalg.norm(out - blue[0, 0], axis=1) < 0.1
    near_yellow = np.linalg.norm(out - yellow[0, 0], axis=1) < 0.1
    assert abs(near_blue.mean() - 0.75) < 0.05 and abs(near_yellow.mean() - 0.25) < 0.05

"""The network: VGG's layer names, computing only what is asked, the model's RGB input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image, random_weights, reference_preprocess

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


"""The network's building blocks with hand-written gradients against JAX's own:
direct convolution with a prepared backward kernel, Winograd F(2x2, 3x3), the max-pool."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image, random_weights

import jax
import jax.numpy as jnp
from nst_jax import layers, model as model_lib, winograd
from nst_jax.vgg import CPU_WINOGRAD_MIN_CHANNELS, default_winograd_layers, layer_shapes


def reference_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=layers.NHWC)


def value_and_input_grad(conv, x, cotangent):
    y, pullback = jax.vjp(conv, x)
    return y, pullback(cotangent)[0]


def relative(a, b) -> float:
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def random_case(n, h, w, c, k, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, k)) / np.sqrt(9 * c), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((n, h, w, k)), jnp.float32)
    return x, kernel, cotangent


# Odd and even sides, 1 and 2 images, one- and two-tile-wide images, channel counts not multiples of 8.
SHAPES = [(1, 8, 8, 4, 6), (2, 7, 11, 3, 5), (1, 1, 1, 2, 2), (1, 2, 3, 8, 8), (2, 33, 20, 16, 24)]


@pytest.mark.parametrize("shape", SHAPES)
def test_winograd_equals_xla_convolution_and_its_input_gradient(shape):
    x, kernel, cotangent = random_case(*shape)
    y, dx = value_and_input_grad(lambda x: winograd.conv3x3(x, winograd.transform_kernel(kernel)), x, cotangent)
    y_ref, dx_ref = value_and_input_grad(lambda x: reference_conv(x, kernel), x, cotangent)
    assert y.shape == y_ref.shape and dx.shape == x.shape
    assert relative(y, y_ref) < 1e-5
    assert relative(dx, dx_ref) < 1e-5


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_direct_convolution_gradient_uses_the_prepared_kernel(shape):
    x, kernel, cotangent = random_case(*shape)
    flipped = layers.backward_kernel(kernel)
    y, dx = value_and_input_grad(lambda x: layers.conv3x3(x, kernel, flipped), x, cotangent)
    y_ref, dx_ref = value_and_input_grad(lambda x: reference_conv(x, kernel), x, cotangent)
    np.testing.assert_array_equal(y, y_ref)  # the same XLA convolution on both sides
    assert relative(dx, dx_ref) < 1e-6
    # The gradient is computed from `flipped` alone: a wrong one gives a wrong gradient.
    _, dx_wrong = value_and_input_grad(lambda x: layers.conv3x3(x, kernel, -flipped), x, cotangent)
    assert relative(dx_wrong, -dx_ref) < 1e-6


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (1, 3)])
def test_max_pool_and_gradient_match_xla_including_ties(hw):
    rng = np.random.default_rng(1)
    # Few distinct values, so that most windows hold ties: the gradient must go where XLA's goes.
    x = jnp.asarray(rng.integers(0, 3, (2, *hw, 4)), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((2, hw[0] // 2, hw[1] // 2, 4)), jnp.float32)
    y, dx = value_and_input_grad(layers.max_pool_2x2, x, cotangent)
    y_ref, dx_ref = value_and_input_grad(
        lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), x, cotangent)
    # bit for bit: a max and its gradient pick values, they round nothing
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_default_algorithm_per_backend():
    chosen = default_winograd_layers("vgg19", "cpu")
    assert chosen and all(layer_shapes("vgg19")[n][-1] >= CPU_WINOGRAD_MIN_CHANNELS for n in chosen)
    assert "block1_conv2" not in chosen and "block3_conv1" in chosen and "block5_conv4" in chosen
    assert default_winograd_layers("vgg19", "gpu") == ()


def test_model_with_and_without_winograd_agree_on_features_and_image_gradient():
    w = random_weights("vgg16", seed=3)
    fast = model_lib.from_weights(w, winograd_layers=default_winograd_layers("vgg16", "cpu"))
    plain = model_lib.from_weights(w, winograd_layers=())
    assert fast.net.winograd_layers and not plain.net.winograd_layers
    x = jnp.asarray(gradient_image(45, 62)[None])
    names = ("block1_conv1", "block3_conv2", "block5_conv2")

    def loss(model, x):
        feats = model_lib.extract_features(model.net, model.params, model.input_scale, model.input_offset,
                                           x, names)
        return sum(jnp.mean(f ** 2) for f in feats.values()), feats

    (_, f_fast), g_fast = jax.value_and_grad(lambda x: loss(fast, x), has_aux=True)(x)
    (_, f_plain), g_plain = jax.value_and_grad(lambda x: loss(plain, x), has_aux=True)(x)
    for name in names:
        assert relative(f_fast[name], f_plain[name]) < 1e-4
    assert relative(g_fast, g_plain) < 1e-4
    # The prepared kernels are what the model runs: without them (derived per call) it is the same.
    unprepared = {"params": fast.params["params"]}
    again = fast.net.apply(unprepared, x * fast.input_scale - fast.input_offset, layers=names)
    assert relative(again["block5_conv2"], f_fast["block5_conv2"]) < 1e-6

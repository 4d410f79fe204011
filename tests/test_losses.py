"""The loss terms' building blocks: the Gram matrix, relative errors, total variation."""

from __future__ import annotations

import numpy as np

from nst_jax import losses


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


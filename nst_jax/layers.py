"""VGG's convolution and max-pool with hand-written input gradients.

Style transfer differentiates the loss with respect to the image only; the weights are
constants. JAX's own gradients work but cost time every step on XLA:CPU
(`benchmarks/profile_cpu.py`, 256 px): the convolutions' input gradient transposes and flips
every kernel again in every step (9 % of a step), and the max-pool gradient runs a
select-and-scatter with index arrays (16 %). Here the flipped kernels are made once per model
(`backward_kernel`) and the pool's gradient is elementwise. Results are bit-identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NHWC = ("NHWC", "HWIO", "NHWC")


def backward_kernel(kernel: jax.Array) -> jax.Array:
    """The HWIO kernel (3, 3, C, K) that convolves an output gradient into an input gradient:
    flipped in space, input and output channels swapped -> (3, 3, K, C)."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array, flipped: jax.Array) -> jax.Array:
    """SAME 3x3 convolution of (N, H, W, C) images with `kernel` (3, 3, C, K), no bias.
    `flipped` = `backward_kernel(kernel)`. Gradients flow to `x` only."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=NHWC)


def _conv3x3_fwd(x, kernel, flipped):
    return conv3x3(x, kernel, flipped), flipped


def _conv3x3_bwd(flipped, g):
    dx = jax.lax.conv_general_dilated(g, flipped, (1, 1), "SAME", dimension_numbers=NHWC)
    return dx, None, None


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, odd last row/column dropped: (N, H, W, C) -> (N, H//2, W//2, C)."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _pool_bwd(saved, g):
    # Each window's gradient goes to its first maximum in row-major order, as XLA's own
    # select-and-scatter does, so ties are routed the same way.
    x, y = saved
    n, h, w, c = x.shape
    windows = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    taken, parts = jnp.zeros_like(y, bool), {}
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        first = (windows[:, :, i, :, j] == y) & ~taken
        taken, parts[i, j] = taken | first, jnp.where(first, g, 0)
    rows = [jnp.stack([parts[i, 0], parts[i, 1]], axis=3) for i in (0, 1)]
    dx = jnp.stack(rows, axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(dx, ((0, 0), (0, h - h // 2 * 2), (0, w - w // 2 * 2), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)

"""Strokes along the picture's own contours: the picture one scale hands to the next, smoothed.

On the edge-tuned fallback, the painting's texture grows out of a smooth start (a flat sky, a
wall) as short shaded ripples, about 7 px apart at every scale (QUALITY.md). Smoothing the
picture between scales along its own contours, where the photo is flat, draws them out into
longer strokes before the next scale paints its detail on them: a line integral convolution
(Cabral and Leedom, 1993) along the flow of the smoothed structure tensor, the flow that
Kyprianidis and Kang's coherence-enhancing filters (2011) follow.

Arrays are float32 (N, H, W, C); lengths and distances are in pixels of the array they are of.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from nst_jax import color
from nst_jax.layers import NHWC

GRADIENT_SIGMA = 1.0  # px: the picture's blur before its gradient
TENSOR_SIGMA = 4.0  # px: how far the contours' direction is averaged
EDGE_SIGMA = 2.0  # px: the blur of the photo's edge strength
FLAT_QUANTILE = 0.6  # photo edges at least this strong (its quantile) keep the picture as it is


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """`x` (N, H, W, C) blurred by a Gaussian of `sigma` px, borders mirrored (SciPy's
    `gaussian_filter`: truncated at 4 sigma)."""
    radius = int(4 * sigma + 0.5)
    taps = jnp.exp(-0.5 * (jnp.arange(-radius, radius + 1) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = x.shape[-1]
    x = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    for kernel in (taps[:, None], taps[None, :]):  # down, then across
        x = jax.lax.conv_general_dilated(x, jnp.tile(kernel[:, :, None, None], (1, 1, 1, channels)), (1, 1), "VALID",
                                         dimension_numbers=NHWC, feature_group_count=channels)
    return x


def sobel(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Sobel derivatives (d/dx across, d/dy down) of `x` (N, H, W, C), borders repeated."""
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    dx = p[:, :, 2:] - p[:, :, :-2]  # (N, H + 2, W, C)
    dy = p[:, 2:] - p[:, :-2]  # (N, H, W + 2, C)
    return (dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:],
            dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:])


def contour_flow(image: jax.Array) -> jax.Array:
    """The direction along the contours of `image` (N, H, W, 3): (N, H, W, 2) unit vectors
    (x across, y down), the structure tensor's minor eigenvector (the colour gradients'
    tensors summed over R, G and B, averaged over TENSOR_SIGMA px). A direction has no sign."""
    gx, gy = sobel(gaussian_blur(image, GRADIENT_SIGMA))
    tensor = gaussian_blur(jnp.stack([(gx * gx).sum(-1), (gy * gy).sum(-1), (gx * gy).sum(-1)], -1), TENSOR_SIGMA)
    jxx, jyy, jxy = tensor[..., 0], tensor[..., 1], tensor[..., 2]
    along = 0.5 * jnp.arctan2(2 * jxy, jxx - jyy) + jnp.pi / 2  # the gradient's angle, turned a right angle
    return jnp.stack([jnp.cos(along), jnp.sin(along)], -1)


@jax.jit  # one program per shape: `nst_jax.brushwork` calls it outside `along_contours` too
def flatness(photo: jax.Array) -> jax.Array:
    """(N, H, W, 1) in [0, 1]: 1 where `photo` (N, H, W, 3) has no edges, falling linearly to 0
    at its FLAT_QUANTILE of edge strength (Sobel magnitude of its luminance, blurred EDGE_SIGMA px)."""
    gx, gy = sobel(color.luminance(photo)[..., None])
    strength = gaussian_blur(jnp.hypot(gx, gy), EDGE_SIGMA)
    knee = jnp.quantile(strength.reshape(strength.shape[0], -1), FLAT_QUANTILE, axis=1)[:, None, None, None]
    return 1 - jnp.clip(strength / jnp.maximum(knee, 1e-6), 0, 1)


def _sample(image: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """`image` (H, W, C) at the points (rows, cols) (H, W), bilinear, borders repeated."""
    return jax.vmap(lambda channel: jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode="nearest"),
                    in_axes=-1, out_axes=-1)(image)


def _streamline(picture: jax.Array, flow: jax.Array, sign: float, length: jax.Array, steps: int
                ) -> tuple[jax.Array, jax.Array]:
    """Along the streamline of `flow` (H, W, 2) through each pixel of `picture` (H, W, C), `steps`
    1 px steps in direction `sign` (+1 or -1): the sum of the picture there weighted
    exp(-k^2 / (2 (length/2)^2)) at k px (k <= `length`), and the sum of the weights (a scalar)."""
    height, width = picture.shape[:2]
    sigma = jnp.maximum(length, 1e-6) / 2

    def step(k, state):
        rows, cols, dx, dy, total, weight = state
        v = _sample(flow, rows, cols)
        agree = jnp.where(v[..., 0] * dx + v[..., 1] * dy < 0, -1.0, 1.0)  # a direction has no sign: keep going
        dx, dy = agree * v[..., 0], agree * v[..., 1]
        rows, cols = jnp.clip(rows + dy, 0, height - 1), jnp.clip(cols + dx, 0, width - 1)
        w = jnp.where(k <= length, jnp.exp(-0.5 * (k / sigma) ** 2), 0.0)
        return rows, cols, dx, dy, total + w * _sample(picture, rows, cols), weight + w

    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=picture.dtype), jnp.arange(width, dtype=picture.dtype),
                              indexing="ij")
    start = (rows, cols, sign * flow[..., 0], sign * flow[..., 1], jnp.zeros_like(picture), jnp.zeros(()))
    return jax.lax.fori_loop(1, steps + 1, step, start)[4:]


def streamline_steps(length: float) -> int:
    """The 1 px steps a streamline of `length` px takes, rounded up to a power of two. The count
    is part of the compiled program: rounded, requests with nearby lengths share one program
    (the steps past a picture's own length weigh nothing) instead of compiling their own."""
    return 1 << max(0, math.ceil(length) - 1).bit_length()


@functools.partial(jax.jit, static_argnames="steps")
def along_contours(image: jax.Array, photo: jax.Array, lengths: jax.Array, steps: int) -> jax.Array:
    """`image` (N, H, W, 3) smoothed along its contours where `photo` (N, H, W, 3) is flat.

    Each pixel becomes the Gaussian-weighted mean of the picture along the streamline of
    `contour_flow` through it, `steps` 1 px steps either way (`streamline_steps`), weighted
    exp(-k^2 / (2 (L/2)^2)) at k <= L px for an image whose length L is `lengths` (N,) px (0: the
    picture as it is; steps past L weigh nothing, so any `steps` >= L gives the same picture); then
    mixed with the picture by `flatness`. Pixel values stay within those of the picture.
    """
    def smooth(picture, flow, length):
        forward, w_forward = _streamline(picture, flow, 1.0, length, steps)
        backward, w_backward = _streamline(picture, flow, -1.0, length, steps)
        return (picture + forward + backward) / (1 + w_forward + w_backward)

    mix = flatness(photo)
    return mix * jax.vmap(smooth)(image, contour_flow(image), lengths) + (1 - mix) * image

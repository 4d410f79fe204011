"""3x3 SAME convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2015).

Every 2x2 output tile is computed from the 4x4 input tile around it: the tile is transformed
(Bᵀ d B, additions only), multiplied elementwise by the transformed kernel (G g Gᵀ, made once
per model), and transformed back (Aᵀ m A). That is 16 multiply-adds per tile and channel pair
instead of 36 (2.25x fewer), and the 16 elementwise products over all tiles and channels are 16
matrix products, which XLA:CPU runs close to the machine's peak.

Where it pays: on the 2-core development CPU it makes VGG's deep layers (blocks 3-5) about 2x
faster, forward and input gradient; on the wide, shallow layers (blocks 1-2) the transforms'
memory traffic costs more than the multiplications saved (`benchmarks/profile_cpu.py`). GPUs keep
cuDNN's convolutions, which choose their own algorithm.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))
TILE = 2  # output pixels per tile side; input tiles are TILE + 2 = 4 wide


def _combine(matrix, xs: list) -> list:
    """``[sum_j matrix[i][j] * xs[j] for each row i]`` for a matrix of 0 and ±1, as adds only."""
    out = []
    for row in matrix:
        terms = [x if c == 1 else -x for c, x in zip(row, xs) if c]
        out.append(functools.reduce(jnp.add, terms))
    return out


def _transpose(matrix):
    return tuple(zip(*matrix))


def transform_kernel(kernel: jax.Array) -> jax.Array:
    """HWIO kernel (3, 3, C, K) -> (16, C, K), ``G g Gᵀ`` per channel pair, tile positions row-major."""
    g = jnp.asarray(G, kernel.dtype)
    u = jnp.einsum("ai,ijck,bj->abck", g, kernel, g)
    return u.reshape(16, *kernel.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _transform_input(xp: jax.Array, rows: int, cols: int) -> jax.Array:
    """Padded images (N, 2(rows+1), 2(cols+1), C) -> ``Bᵀ d B`` of every 4x4 tile, (4, 4, N, rows, cols, C).

    Tile (t, u) starts at padded pixel (2t, 2u). Written as 2x2 blocks (block index, position in
    the block) so that every tile row is a plain slice, and its gradient (below) one pass.
    """
    n, _, _, c = xp.shape
    blocks = xp.reshape(n, 2 * (rows + 1), cols + 1, 2, c)
    along_w = jnp.stack(_combine(B_T, [blocks[:, :, j // 2:j // 2 + cols, j % 2] for j in range(4)]))
    blocks = along_w.reshape(4, n, rows + 1, 2, cols, c)
    return jnp.stack(_combine(B_T, [blocks[:, :, i // 2:i // 2 + rows, i % 2] for i in range(4)]))


def _transform_input_fwd(xp, rows, cols):
    return _transform_input(xp, rows, cols), None


def _transform_input_bwd(rows, cols, _, dv):
    # The transpose of each tile's transform (B dv Bᵀ), then overlap-add: padded pixel block b
    # (2x2 pixels) gets position 0-1 of tile b and position 2-3 of tile b - 1, in each direction.
    d_rows = jnp.stack(_combine(_transpose(B_T), list(dv)))  # (4 tile rows i, 4 q, N, rows, cols, C)
    d_rows = jnp.pad(d_rows, ((0, 0),) * 3 + ((1, 1), (1, 1), (0, 0)))
    d_tile = [_combine(_transpose(B_T), list(d_rows[i])) for i in range(4)]  # [i][j]: (N, rows+2, cols+2, C)
    parts = [[sum(d_tile[i][j][:, 1 - i // 2:2 - i // 2 + rows, 1 - j // 2:2 - j // 2 + cols]
                  for i in (r, r + 2) for j in (s, s + 2))
              for s in range(2)] for r in range(2)]
    blocks = jnp.stack([jnp.stack(part, axis=3) for part in parts], axis=2)  # (N, rows+1, 2, cols+1, 2, C)
    n, c = blocks.shape[0], blocks.shape[-1]
    return (blocks.reshape(n, 2 * (rows + 1), 2 * (cols + 1), c),)


_transform_input.defvjp(_transform_input_fwd, _transform_input_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _transform_output(m: jax.Array, height: int, width: int) -> jax.Array:
    """Products (4, 4, N, rows, cols, K) -> ``Aᵀ m A`` of every tile, laid out as images (N, height, width, K)."""
    _, _, n, rows, cols, k = m.shape
    y = jnp.stack([jnp.stack(_combine(A_T, list(r))) for r in _combine(A_T, list(m))])  # (2, 2, N, rows, cols, K)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, TILE * rows, TILE * cols, k)[:, :height, :width]


def _transform_output_fwd(m, height, width):
    return _transform_output(m, height, width), m.shape


def _transform_output_bwd(height, width, shape, dy):
    # Written out because JAX's own transpose of the interleaving above is a slow scatter-like
    # pass on XLA:CPU (2-10x this), while this reads each tile position with a strided slice.
    _, _, n, rows, cols, k = shape
    dy = jnp.pad(dy, ((0, 0), (0, TILE * rows - height), (0, TILE * cols - width), (0, 0)))
    dy = dy.reshape(n, rows, TILE, cols, TILE, k)
    d_rows = [_combine(_transpose(A_T), [dy[:, :, r, :, s] for s in range(TILE)]) for r in range(TILE)]
    return (jnp.stack([jnp.stack(_combine(_transpose(A_T), [d_rows[r][q] for r in range(TILE)]))
                       for q in range(4)], axis=1),)  # (4 p, 4 q, N, rows, cols, K)


_transform_output.defvjp(_transform_output_fwd, _transform_output_bwd)


def conv3x3(x: jax.Array, transformed_kernel: jax.Array) -> jax.Array:
    """SAME 3x3 convolution (cross-correlation, as `lax.conv_general_dilated`), no bias.

    Args:
      x: (N, H, W, C) images.
      transformed_kernel: (16, C, K) from `transform_kernel`.
    Returns:
      (N, H, W, K) in x's dtype. Gradients flow to `x` only.
    """
    n, h, w, c = x.shape
    rows, cols = -(-h // TILE), -(-w // TILE)
    xp = jnp.pad(x, ((0, 0), (1, 2 * rows + 1 - h), (1, 2 * cols + 1 - w), (0, 0)))
    v = _transform_input(xp, rows, cols).reshape(16, n * rows * cols, c)
    m = jnp.einsum("ptc,pck->ptk", v, jax.lax.stop_gradient(transformed_kernel).astype(x.dtype))
    return _transform_output(m.reshape(4, 4, n, rows, cols, -1), h, w)

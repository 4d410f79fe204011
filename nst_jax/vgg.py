"""VGG16/VGG19 convolutional stacks in Flax (NHWC), named as Keras names them.

The model takes images already preprocessed for the weights in use (see
`nst_jax.weights.Weights.preprocess`) and returns the activations of the
layers asked for, computing nothing past the deepest of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Convolutions per block; a 2x2 max-pool (stride 2) sits between blocks.
BLOCK_DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)


def layer_names(arch: str) -> list[str]:
    """Conv layer names of `arch` in forward order, e.g. ``block1_conv1``."""
    if arch not in BLOCK_DEPTHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(BLOCK_DEPTHS)}")
    return [
        f"block{b}_conv{c}"
        for b, depth in enumerate(BLOCK_DEPTHS[arch], start=1)
        for c in range(1, depth + 1)
    ]


def layer_shapes(arch: str) -> dict[str, tuple[int, int, int, int]]:
    """HWIO kernel shape of every conv layer of `arch`."""
    shapes, in_ch = {}, 3
    for b, depth in enumerate(BLOCK_DEPTHS[arch]):
        out_ch = BLOCK_WIDTHS[b]
        for c in range(depth):
            shapes[f"block{b + 1}_conv{c + 1}"] = (3, 3, in_ch, out_ch)
            in_ch = out_ch
    return shapes


class VGG(nn.Module):
    """VGG conv stack.

    Attributes:
      arch: ``"vgg16"`` or ``"vgg19"``.
      dtype: dtype the convolutions compute in (``bfloat16`` for mixed precision);
        activations are returned in this dtype, parameters stay float32.
    """

    arch: str = "vgg19"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """Args:
          x: preprocessed images, (N, H, W, 3).
          layers: names of the layers whose ReLU outputs to return.

        Returns:
          ``{name: (N, h, w, C)}`` for each requested layer; h, w = H, W halved
          (floor) once per pool before the layer's block.
        """
        names = layer_names(self.arch)
        unknown = set(layers) - set(names)
        if unknown:
            raise ValueError(f"{self.arch} has no layers {sorted(unknown)}")
        deepest = max(names.index(n) for n in layers)
        shapes = layer_shapes(self.arch)
        out = {}
        x = x.astype(self.dtype)
        for name in names[: deepest + 1]:
            if name.endswith("_conv1") and name != "block1_conv1":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            conv = nn.Conv(shapes[name][-1], (3, 3), padding="SAME", name=name, dtype=self.dtype)
            x = nn.relu(conv(x))
            if name in layers:
                out[name] = x
        return out

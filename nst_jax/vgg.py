"""VGG16/VGG19 convolutional stacks in Flax (NHWC), named as Keras names them.

The model takes images already preprocessed for the weights in use (see
`nst_jax.model.preprocess`) and returns the activations of the
layers asked for, computing nothing past the deepest of them.

Each convolution runs one of two algorithms (`VGG.winograd_layers`): XLA's own convolution,
or Winograd's F(2x2, 3x3) (`nst_jax.winograd`), which is faster on CPUs for the deep layers.
Both take the kernel in a form made once per model by `prepare` (the "prepared" collection);
without it they derive that form from the kernel on every call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax import winograd
from nst_jax.layers import backward_kernel, conv3x3, max_pool_2x2

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


# Winograd's transforms read and write 4x the layer's input; below this many output channels
# (blocks 1-2) that memory traffic costs more than the multiplications saved (2-core Zen 4, 256
# and 512 px: BENCHMARKS.md).
CPU_WINOGRAD_MIN_CHANNELS = 256


def default_winograd_layers(arch: str, backend: str | None = None) -> tuple[str, ...]:
    """The layers that run Winograd convolutions on `backend` (default: JAX's): on CPU those
    with at least CPU_WINOGRAD_MIN_CHANNELS outputs; elsewhere none (cuDNN picks its own)."""
    if (backend or jax.default_backend()) != "cpu":
        return ()
    return tuple(n for n, shape in layer_shapes(arch).items() if shape[-1] >= CPU_WINOGRAD_MIN_CHANNELS)


def prepared_kernel(kernel: jax.Array, use_winograd: bool) -> jax.Array:
    """The HWIO `kernel` in the form its algorithm uses: Winograd-transformed (16, C, K), or
    flipped for the input gradient (3, 3, K, C)."""
    return winograd.transform_kernel(kernel) if use_winograd else backward_kernel(kernel)


@functools.partial(jax.jit, static_argnames="winograd_layers")
def prepare(params: dict, winograd_layers: tuple[str, ...] = ()) -> dict:
    """``{"prepared": {layer: {"kernel": prepared_kernel(...)}}}`` for every layer of `params`,
    to merge into the variables. One compiled program, not one per layer and operation, each of
    which would compile on a cold start."""
    return {"prepared": {name: {"kernel": prepared_kernel(p["kernel"], name in winograd_layers)}
                         for name, p in params["params"].items()}}


class Conv3x3(nn.Module):
    """SAME 3x3 convolution + bias; the input gradient only (the weights are constants here)."""

    features: int
    winograd: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.has_variable("prepared", "kernel"):
            prepared = self.get_variable("prepared", "kernel")
        else:
            prepared = prepared_kernel(kernel, self.winograd)
        if self.winograd:
            y = winograd.conv3x3(x, prepared)  # computes in x's dtype
        else:
            y = conv3x3(x, kernel.astype(self.dtype), prepared.astype(self.dtype))
        return y + bias.astype(self.dtype)


class VGG(nn.Module):
    """VGG conv stack.

    Attributes:
      arch: ``"vgg16"`` or ``"vgg19"``.
      dtype: dtype the convolutions compute in (``bfloat16`` for mixed precision);
        activations are returned in this dtype, parameters stay float32.
      winograd_layers: names of the layers computed by Winograd's algorithm
        (`default_winograd_layers` gives the fastest choice per backend).
    """

    arch: str = "vgg19"
    dtype: jnp.dtype = jnp.float32
    winograd_layers: tuple[str, ...] = ()

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
                x = max_pool_2x2(x)
            conv = Conv3x3(shapes[name][-1], name in self.winograd_layers, self.dtype, name=name)
            x = nn.relu(conv(x))
            if name in layers:
                out[name] = x
        return out

"""Loss terms of Gatys style transfer, by name (`TERMS`). Pure functions of arrays.

Content and style errors are *relative* (divided by the target's mean square), so
that their size does not depend on the weights' input scale (0-255 Caffe/Keras
weights give activations ~60x larger than torchvision's normalised ones, which
would otherwise shift the right style weight by 60^4). Default weights thus
carry over between weight files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp


def gram(features: jax.Array) -> jax.Array:
    """Gram matrices of (N, h, w, C) activations -> (N, C, C), float32, averaged over the h*w positions."""
    n, h, w, c = features.shape
    # float32 even when the convolutions run in bfloat16: Gram sums over many positions.
    f = features.reshape(n, h * w, c).astype(jnp.float32)
    return jnp.einsum("npc,npd->ncd", f, f) / (h * w)


def relative_error(x: jax.Array, target: jax.Array) -> jax.Array:
    """mean((x - target)^2) / mean(target^2) per batch item: (N, ...) -> (N,). 0 = equal."""
    axes = tuple(range(1, target.ndim))
    x, target = jnp.asarray(x, jnp.float32), jnp.asarray(target, jnp.float32)
    err = jnp.mean(jnp.square(x - target), axis=axes)
    return err / (jnp.mean(jnp.square(target), axis=axes) + 1e-8)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """Relative squared error of the content layer's activations, (N, h, w, C) -> (N,)."""
    return relative_error(features, target)


def style_loss(features: Mapping[str, jax.Array], target_grams: Mapping[str, jax.Array],
               layer_weights: Mapping[str, jax.Array | float]) -> jax.Array:
    """Weighted mean over the layers of `layer_weights` ({layer: (N,) or a number, sum > 0})
    of the relative squared error of Gram matrices -> (N,). Equal weights give the plain mean."""
    names = list(layer_weights)
    errors = jnp.stack([layer_weights[n] * relative_error(gram(features[n]), target_grams[n]) for n in names])
    return jnp.sum(errors, axis=0) / jnp.sum(jnp.stack([jnp.asarray(layer_weights[n], jnp.float32)
                                                        for n in names]), axis=0)


def total_variation(image: jax.Array) -> jax.Array:
    """Mean squared difference of neighbouring pixels of (N, H, W, 3) images in [0, 1] -> (N,)."""
    dy = jnp.mean(jnp.square(image[:, 1:] - image[:, :-1]), axis=(1, 2, 3))
    dx = jnp.mean(jnp.square(image[:, :, 1:] - image[:, :, :-1]), axis=(1, 2, 3))
    return dx + dy


@dataclass(frozen=True)
class Term:
    """A term of the loss: `loss(image, features, target)` -> (N,) for images (N, H, W, 3) in
    [0, 1], the network's activations {layer: (N, h, w, C)} and the term's target (a pytree),
    and `layers(target)`: the layers whose activations it reads."""

    loss: Callable[[jax.Array, Mapping[str, jax.Array], object], jax.Array]
    layers: Callable[[object], tuple[str, ...]] = lambda target: ()


# The terms by name; each is weighted per image by the option "<name>_weight". Targets:
# content {layer: (N, h, w, C) activations} (one layer); style {"grams": {layer: (N, C, C)},
# "layer_weights": {layer: (N,)}}; tv None.
TERMS = {
    "content": Term(lambda image, features, target: sum(content_loss(features[n], t) for n, t in target.items()),
                    lambda target: tuple(target)),
    "style": Term(lambda image, features, target: style_loss(features, target["grams"], target["layer_weights"]),
                  lambda target: tuple(target["grams"])),
    "tv": Term(lambda image, features, target: total_variation(image)),
}

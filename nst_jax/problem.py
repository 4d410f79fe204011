"""What is minimised: the weighted sum of the loss terms (`nst_jax.losses.TERMS`) of a batch
of images, as a pytree that the optimisers (`nst_jax.optim`) take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from nst_jax import losses
from nst_jax.model import Model, preprocess
from nst_jax.options import Options
from nst_jax.vgg import VGG


@flax.struct.dataclass
class Problem:
    """The network, its weights, the targets and the loss weights.

    A pytree, so one compiled program serves any weights, targets and loss weights of the
    same shapes; `net` is static, and so are the targets' layers (dict keys are part of the
    tree's structure): a new layer compiles a new program.

    Attributes:
      net, params, input_scale, input_offset: the `Model`'s.
      targets: {term name: its target} (`losses.TERMS` says what each is), for the terms
        that are computed.
      loss_weights: {term name: (N,)} the weight of each term of `targets` per image.
    """

    net: VGG = flax.struct.field(pytree_node=False)
    params: dict
    input_scale: jax.Array
    input_offset: jax.Array
    targets: dict
    loss_weights: dict

    @classmethod
    def of(cls, model: Model, targets: Mapping, loss_weights: Mapping) -> "Problem":
        """`loss_weights` {term: (N,) array-like}, as float32."""
        return cls(model.net, model.params, model.input_scale, model.input_offset, dict(targets),
                   {name: jnp.asarray(w, jnp.float32) for name, w in loss_weights.items()})

    def terms(self, image: jax.Array) -> dict[str, jax.Array]:
        """Unweighted errors {term: (N,)} of `image` (N, H, W, 3)."""
        names = [name for name in losses.TERMS if name in self.targets]
        layers = tuple(dict.fromkeys(layer for name in names
                                     for layer in losses.TERMS[name].layers(self.targets[name])))
        feats = self.net.apply(self.params, preprocess(image, self.input_scale, self.input_offset), layers=layers)
        return {name: losses.TERMS[name].loss(image, feats, self.targets[name]) for name in names}

    def loss(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The weighted total summed over the batch (what is minimised), and the (N,) per-image totals."""
        terms = self.terms(image)
        per_image = jnp.sum(jnp.stack([terms[name] * self.loss_weights[name] for name in terms], axis=-1), axis=-1)
        return jnp.sum(per_image), per_image


def loss_weights(options: Sequence[Options], scale: int = 0) -> dict[str, jax.Array]:
    """{term: (N,)} of the images of `options` at scale `scale` (0: the coarsest): each term's
    `Options.loss_weight_at`."""
    return {name: jnp.asarray([o.loss_weight_at(name, scale) for o in options], jnp.float32)
            for name in losses.TERMS}


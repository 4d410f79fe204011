"""NeuraStyle: Gatys neural style transfer in JAX.

    import nst_jax
    content = nst_jax.images.read("photo.jpg")
    style = nst_jax.images.read("painting.jpg")
    result = nst_jax.stylize(content, [style], nst_jax.Options(size=256, steps=100))
    nst_jax.images.write(result, "out.png")

    model = nst_jax.load_model()                       # the feature extractor
    feats = model.features(content[None], ["block1_conv1", "block5_conv2"])
"""

from nst_jax import errors, images
from nst_jax.model import Model, load_model
from nst_jax.messages import Progress
from nst_jax.options import Limits, Options
from nst_jax.transfer import stylize

__all__ = ["Limits", "Model", "Options", "Progress", "errors", "images", "load_model", "stylize"]

"""What the quality benchmark measures in a stylized picture. Pure functions of images:
(H, W, 3) float32 RGB in [0, 1].

* `layout`: how much of the photo's layout survives, without the network being optimised: the
  correlation of the two pictures' edge maps at a coarse, fixed resolution (`LAYOUT_SIDE`), where
  a painting's brush strokes blur away and the outlines of a face or a house remain. The photo
  itself scores 1; an unrelated picture about 0.
* `texture`: how close the textures are to the painting's: the style error the method itself
  minimises (relative Gram error at the style layers, `nst_jax.losses.style_loss`), measured at
  one analysis size (`TEXTURE_SIDE`) for every result, so sizes and recipes compare. Reported
  as a ratio to the unstylized photo's error: 1 = no style taken, 0 = the painting's statistics.
* `dots`: isolated dots, per mille of pixels: luminance more than `DOT_CONTRAST` away from the
  median of its 3x3 neighbourhood (a lone dark or bright pixel or pair of pixels).
* `noise`: high-frequency noise where the photo is flat: mean absolute difference, in luminance
  percent, between the picture and its blur (sigma 1 px), over the flatter half of the photo.
  Brush strokes a few pixels wide barely change under a 1 px blur; a fine cell texture does.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from nst_jax import images, losses, shapes

# {layer: weight}: the five layers of Gatys et al. at equal weights, whatever a recipe weighs,
# so that recipes compare on one measure
STYLE_LAYERS = {f"block{i}_conv1": 1.0 for i in range(1, 6)}

LAYOUT_SIDE = 128  # px
TEXTURE_SIDE = 512  # px
DOT_CONTRAST = 0.3  # luminance, in [0, 1]


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) Rec. 601 luma."""
    return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def resized(image: np.ndarray, longest: int) -> np.ndarray:
    return images.resize(image, *images.fit_shape(*image.shape[:2], longest))


def edges(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the lightly blurred luminance, (H, W)."""
    lum = ndi.gaussian_filter(luminance(image), 1.0)
    return np.hypot(ndi.sobel(lum, 0), ndi.sobel(lum, 1))


def layout(result: np.ndarray, photo: np.ndarray) -> float:
    """Correlation of the edge maps of `result` and `photo`, both at longest side LAYOUT_SIDE."""
    a = edges(resized(result, LAYOUT_SIDE))
    b = edges(images.resize(photo, *a.shape))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def style_error(model, image: np.ndarray, style: np.ndarray) -> float:
    """Relative Gram error of `image` against `style`, both at the analysis size."""
    image = resized(image, min(TEXTURE_SIDE, max(image.shape[:2])))
    style = resized(style, shapes.style_longest(style.shape, max(image.shape[:2]), 1.0))
    f = model.features(image[None], tuple(STYLE_LAYERS))
    s = model.features(style[None], tuple(STYLE_LAYERS))
    return float(losses.style_loss(f, {n: losses.gram(s[n]) for n in STYLE_LAYERS}, STYLE_LAYERS)[0])


def texture(model, result: np.ndarray, photo: np.ndarray, style: np.ndarray) -> float:
    """`style_error` of the result over that of the photo at the result's shape."""
    return style_error(model, result, style) / style_error(model, images.resize(photo, *result.shape[:2]), style)


def dots(image: np.ndarray) -> float:
    """Per mille of pixels whose luminance is over DOT_CONTRAST from their 3x3 median."""
    lum = luminance(image)
    return float(1000 * np.mean(np.abs(lum - ndi.median_filter(lum, size=3)) > DOT_CONTRAST))


def noise(image: np.ndarray, photo: np.ndarray) -> float:
    """Mean |luminance - its 1 px blur|, percent, where the photo (at the image's shape) is flatter than its median."""
    lum = luminance(image)
    flatness = ndi.gaussian_filter(edges(images.resize(photo, *image.shape[:2])), 2.0)
    flat = flatness <= np.median(flatness)
    return float(100 * np.mean(np.abs(lum - ndi.gaussian_filter(lum, 1.0))[flat]))

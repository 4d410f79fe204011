"""What the quality benchmark measures in a stylized picture. Pure functions of images:
(H, W, 3) float32 RGB in [0, 1].

The deciding measures use nothing of the network being optimised, or only its shallow layers, so
that a recipe cannot score well by giving that network what it asks for. (The style error at its
five layers rewarded an embossed relief: the deep layers of the fallback weights, fine-tuned to
fire on edges, ask for shaded ridges everywhere.) `structure` and `palette` are those of the
published pictures' scores (the anchors' README), so ours and theirs compare.

* `layout` / `detail`: how much of the photo's structure survives: the correlation of the edge
  maps (Sobel magnitude, then a Gaussian blur of `EDGE_BLUR` px) of picture and photo, both at a
  longest side of `LAYOUT_SIDE` (128 px: the big outlines) or `DETAIL_SIDE` (256 px: a house's
  windows, a bridge's cables, a face's features). 1 = the photo's edges; an unrelated picture ~0.
* `palette`: how far the colours are from the painting's: the sliced Wasserstein-1 distance
  between the CIELAB pixel distributions of the picture and the painting (both at
  `PALETTE_SIDE`, `PALETTE_DIRECTIONS` fixed random directions), over the same distance of the
  unstylized photo. 0 = the painting's colours, 1 = the photo's.
* `texture`: how close the textures are to the painting's: relative Gram error at block1-3
  (`SHALLOW_LAYERS`, the layers closest to the ImageNet features the fallback weights started
  from), at one analysis size (`TEXTURE_SIDE`), over the unstylized photo's. 1 = no style taken,
  0 = the painting's statistics. `texture_deep` is the same at the five layers of Gatys et al.:
  the error the method itself minimises, a secondary figure, never the deciding one.
* `relief`: shading without colour, where the photo is flat: the band-pass (`RELIEF_BAND` px)
  energy of the luminance over that of the chroma (CIELAB a*, b*), in the flatter half of the
  photo, over the same ratio of the painting as a whole. A painting's strokes change colour as
  much as brightness; an embossed relief shades one colour light and dark. ~1 = like the
  painting's strokes; higher = more relief than the painting has.
* `ripples`: fine ripples where the painting has strokes: the band-pass energy of CIELAB (all
  three channels) in a fine band (`RIPPLE_BANDS[0]`, features a few px across) over that in a
  stroke-sized band (`RIPPLE_BANDS[1]`), in the flatter half of the photo, over the same ratio of
  the painting as a whole, both at `RIPPLE_SIDE`. `relief` counts light and shade only, so a
  picture whose ripples are painted in colour escapes it; this does not. ~1 = the painting's
  balance of fine and broad; higher = finer texture than its strokes. A blurred picture scores
  low too: read it beside `detail`.
* `dots`: isolated dots, per mille of pixels: luminance more than `DOT_CONTRAST` away from the
  median of its 3x3 neighbourhood (a lone dark or bright pixel or pair of pixels).
* `noise`: high-frequency noise where the photo is flat: mean absolute difference, in luminance
  percent, between the picture and its blur (sigma 1 px), over the flatter half of the photo.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from nst_jax import images, losses, shapes

# {layer: weight}, equal weights whatever a recipe weighs, so that recipes compare on one measure
SHALLOW_LAYERS = {f"block{i}_conv1": 1.0 for i in range(1, 4)}
STYLE_LAYERS = {f"block{i}_conv1": 1.0 for i in range(1, 6)}

LAYOUT_SIDE = 128  # px
DETAIL_SIDE = 256  # px
EDGE_BLUR = 2.0  # px, sigma of the Gaussian blur of the edge maps
PALETTE_SIDE = 128  # px
PALETTE_DIRECTIONS = 64
TEXTURE_SIDE = 512  # px
RELIEF_BAND = (1.0, 4.0)  # px, sigmas of the difference of Gaussians
RIPPLE_SIDE = 512  # px
# px at RIPPLE_SIDE, sigmas of the differences of Gaussians: the ripples seen at 1:1 are about 7 px
# apart, the published pictures' strokes several times wider
RIPPLE_BANDS = ((0.7, 2.0), (2.0, 6.0))
DOT_CONTRAST = 0.3  # luminance, in [0, 1]


# sRGB (linear) -> CIE XYZ, D65 white, and the white point
SRGB_TO_XYZ = np.asarray([[0.4124564, 0.3575761, 0.1804375],
                          [0.2126729, 0.7151522, 0.0721750],
                          [0.0193339, 0.1191920, 0.9503041]])
D65_WHITE = SRGB_TO_XYZ.sum(axis=1)


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> CIELAB (D65): L* in [0, 100], a* and b* about [-128, 127]."""
    rgb = np.asarray(image, np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = linear @ SRGB_TO_XYZ.T / D65_WHITE
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) Rec. 601 luma."""
    return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def resized(image: np.ndarray, longest: int) -> np.ndarray:
    return images.resize(image, *images.fit_shape(*image.shape[:2], longest))


def edges(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the luminance, blurred (sigma EDGE_BLUR px): (H, W)."""
    lum = luminance(image)
    return ndi.gaussian_filter(np.hypot(ndi.sobel(lum, 0), ndi.sobel(lum, 1)), EDGE_BLUR)


def structure(result: np.ndarray, photo: np.ndarray, side: int) -> float:
    """Correlation of the edge maps of `result` and `photo`, both at longest side `side` px."""
    a = edges(resized(result, side))
    b = edges(images.resize(photo, *a.shape))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def layout(result: np.ndarray, photo: np.ndarray) -> float:
    """`structure` at LAYOUT_SIDE: the big outlines."""
    return structure(result, photo, LAYOUT_SIDE)


def detail(result: np.ndarray, photo: np.ndarray) -> float:
    """`structure` at DETAIL_SIDE: windows, cables, a face's features."""
    return structure(result, photo, DETAIL_SIDE)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: int = PALETTE_DIRECTIONS, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance of two point clouds (n, d) and (m, d): the mean over
    `directions` fixed random unit directions of the W1 distance of the projections, each
    distribution read at 256 quantiles (so n and m may differ). In the points' units."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(directions, a.shape[1]))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = (np.arange(256) + 0.5) / 256
    return float(np.mean(np.abs(np.quantile(a @ d.T, q, axis=0) - np.quantile(b @ d.T, q, axis=0))))


def lab_pixels(image: np.ndarray, side: int = PALETTE_SIDE) -> np.ndarray:
    """The CIELAB colours of `image` at longest side `side` px: (n, 3)."""
    return rgb_to_lab(np.clip(resized(image, side), 0, 1)).reshape(-1, 3)


def palette(result: np.ndarray, photo: np.ndarray, painting: np.ndarray) -> float:
    """`sliced_wasserstein` of result and painting colours over that of photo and painting."""
    target = lab_pixels(painting)
    return sliced_wasserstein(lab_pixels(result), target) / sliced_wasserstein(lab_pixels(photo), target)


def style_error(model, image: np.ndarray, style: np.ndarray, layers: dict[str, float]) -> float:
    """Relative Gram error of `image` against `style` at `layers`, both at the analysis size."""
    image = resized(image, min(TEXTURE_SIDE, max(image.shape[:2])))
    style = resized(style, shapes.style_longest(style.shape, max(image.shape[:2]), 1.0))
    f = model.features(image[None], tuple(layers))
    s = model.features(style[None], tuple(layers))
    return float(losses.style_loss(f, {n: losses.gram(s[n]) for n in layers}, layers)[0])


def texture(model, result: np.ndarray, photo: np.ndarray, style: np.ndarray,
            layers: dict[str, float] = SHALLOW_LAYERS) -> float:
    """`style_error` at `layers` of the result over that of the photo at the result's shape."""
    photo = images.resize(photo, *result.shape[:2])
    return style_error(model, result, style, layers) / style_error(model, photo, style, layers)


def texture_deep(model, result: np.ndarray, photo: np.ndarray, style: np.ndarray) -> float:
    """`texture` at the five style layers of Gatys et al. (what the optimisation minimises)."""
    return texture(model, result, photo, style, STYLE_LAYERS)


def flat_half(photo: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: where `photo`, at `shape`, is flatter than its median (smoothed edge strength)."""
    lum = luminance(images.resize(photo, *shape))
    flatness = ndi.gaussian_filter(np.hypot(ndi.sobel(lum, 0), ndi.sobel(lum, 1)), 2.0)
    return flatness <= np.median(flatness)


def band_energy(lab: np.ndarray, sigmas: tuple[float, float], where: np.ndarray | None = None) -> np.ndarray:
    """(3,) mean square, within `where` (H, W), of each channel of `lab` (H, W, 3) band-passed by a
    difference of Gaussians: blurred by sigmas[0] less blurred by sigmas[1] px."""
    mask = np.ones(lab.shape[:2], bool) if where is None else where
    return np.asarray([np.mean((ndi.gaussian_filter(lab[..., c], sigmas[0])
                                - ndi.gaussian_filter(lab[..., c], sigmas[1]))[mask] ** 2) for c in range(3)])


def shading_ratio(image: np.ndarray, where: np.ndarray | None = None) -> float:
    """Band-pass energy of CIELAB L* over that of a* and b* together, within `where` (H, W)."""
    energy = band_energy(rgb_to_lab(np.clip(image, 0, 1)), RELIEF_BAND, where)
    return float(energy[0] / (energy[1] + energy[2] + 1e-6))


def relief(result: np.ndarray, photo: np.ndarray, painting: np.ndarray) -> float:
    """`shading_ratio` of the result where the photo is flat, over the painting's (at the
    result's longest side): shading that the painting does not have."""
    painting = resized(painting, max(result.shape[:2]))
    return shading_ratio(result, flat_half(photo, result.shape[:2])) / shading_ratio(painting)


def band_ratio(image: np.ndarray, where: np.ndarray | None = None) -> float:
    """Band-pass energy of CIELAB in `RIPPLE_BANDS[0]` over that in `RIPPLE_BANDS[1]`, within `where` (H, W)."""
    lab = rgb_to_lab(np.clip(image, 0, 1))
    fine, broad = (band_energy(lab, sigmas, where).sum() for sigmas in RIPPLE_BANDS)
    return float(fine / (broad + 1e-6))


def ripples(result: np.ndarray, photo: np.ndarray, painting: np.ndarray) -> float:
    """`band_ratio` of the result where the photo is flat, over the painting's, both at `RIPPLE_SIDE`."""
    result = resized(result, RIPPLE_SIDE)
    return band_ratio(result, flat_half(photo, result.shape[:2])) / band_ratio(resized(painting, RIPPLE_SIDE))


def dots(image: np.ndarray) -> float:
    """Per mille of pixels whose luminance is over DOT_CONTRAST from their 3x3 median."""
    lum = luminance(image)
    return float(1000 * np.mean(np.abs(lum - ndi.median_filter(lum, size=3)) > DOT_CONTRAST))


def noise(image: np.ndarray, photo: np.ndarray) -> float:
    """Mean |luminance - its 1 px blur|, percent, where the photo (at the image's shape) is flatter than its median."""
    lum = luminance(image)
    flat = flat_half(photo, image.shape[:2])
    return float(100 * np.mean(np.abs(lum - ndi.gaussian_filter(lum, 1.0))[flat]))

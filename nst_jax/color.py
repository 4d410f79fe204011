"""Colour: preservation (Gatys et al. 2016, "Preserving color in neural artistic style
transfer": style is transferred to luminance only and the content's chroma is kept), and its
opposite, the photo recoloured to the painting's colour distribution before the stylization, so
that the picture takes the painting's palette. Arrays are (H, W, 3) float RGB in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ITU-R BT.601 RGB -> YIQ
_YIQ = np.array([[0.299, 0.587, 0.114],
                 [0.596, -0.274, -0.322],
                 [0.211, -0.523, 0.312]], np.float32)
_RGB = np.linalg.inv(_YIQ).astype(np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """Y of YIQ, (H, W)."""
    return image @ _YIQ[0]


def luminance_rgb(image: np.ndarray) -> np.ndarray:
    """The luminance as a grey RGB image (H, W, 3)."""
    return np.repeat(luminance(image)[..., None], 3, axis=-1)


def match_luminance(grey: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift and scale `grey`'s values to the mean and std of `reference`'s luminance,
    so the style's brightness distribution does not fight the content's."""
    g, r = luminance(grey), luminance(reference)
    matched = (g - g.mean()) / (g.std() + 1e-6) * r.std() + r.mean()
    return np.repeat(np.clip(matched, 0, 1)[..., None], 3, axis=-1).astype(np.float32)


def transfer_luminance(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The luminance of `stylized` with the chroma (I, Q) of `content`, same shape."""
    yiq = content @ _YIQ.T
    yiq[..., 0] = luminance(stylized)
    return np.clip(yiq @ _RGB.T, 0, 1).astype(np.float32)


def transfer_colors(image: np.ndarray, paintings: Sequence[np.ndarray], weights: Sequence[float],
                    photo_luminance: float = 0.25, iterations: int = 16, samples: int = 65536,
                    seed: int = 0) -> np.ndarray:
    """`image` (H, W, 3) with its colours moved to the distribution of the paintings' colours,
    mixed in the proportions `weights` (summing to 1): Pitie et al.'s iterative distribution
    transfer ("Automated colour grading using colour distribution transfer", 2007). Each of
    `iterations` rounds turns both colour clouds by a random rotation and matches each axis's
    histogram to the paintings' (a monotone map, so a colour's neighbours stay its neighbours
    and the photo's outlines stay where they were). The maps are learnt on `samples` pixels of
    each side and applied to every pixel. Then `photo_luminance` (0 to 1) of the luminance is
    the image's own, its contrast rescaled to the mean and spread of the transferred one's: where
    the painting has little dark, a white rocket on a night sky would otherwise become white on
    pale beige, and the subject fades (QUALITY.md). Deterministic for a `seed`. Returns float32
    in [0, 1]."""
    rng = np.random.default_rng(seed)

    def sample(im: np.ndarray, n: int) -> np.ndarray:
        flat = im.reshape(-1, 3)
        return flat[rng.integers(0, len(flat), max(1, n))].astype(np.float64)

    source = sample(image, samples)
    target = np.concatenate([sample(p, round(w * samples)) for p, w in zip(paintings, weights) if w > 0])
    pixels = image.reshape(-1, 3).astype(np.float64)
    levels = np.linspace(0.0, 1.0, 257)
    ramp = 1e-9 * np.arange(len(levels))  # strictly increasing knots where a quantile repeats
    for _ in range(iterations):
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        source, target_rotated, pixels = source @ rotation, target @ rotation, pixels @ rotation
        knots = np.quantile(source, levels, axis=0) + ramp[:, None]
        values = np.quantile(target_rotated, levels, axis=0)
        for axis in range(3):
            source[:, axis] = np.interp(source[:, axis], knots[:, axis], values[:, axis])
            pixels[:, axis] = np.interp(pixels[:, axis], knots[:, axis], values[:, axis])
        source, pixels = source @ rotation.T, pixels @ rotation.T
    pixels = np.clip(pixels, 0, 1).reshape(image.shape)
    transferred, own = luminance(pixels), luminance(image.astype(np.float64))
    rescaled = (own - own.mean()) / (own.std() + 1e-6) * transferred.std() + transferred.mean()
    # R, G and B moved alike move Y alike (its weights sum to 1), and leave the chroma (I, Q) be
    pixels = pixels + (photo_luminance * (rescaled - transferred))[..., None]
    return np.clip(pixels, 0, 1).astype(np.float32)

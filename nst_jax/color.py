"""Colour preservation (Gatys et al. 2016, "Preserving color in neural artistic style
transfer"): style is transferred to luminance only and the content's chroma is kept.
Arrays are (H, W, 3) float RGB in [0, 1]."""

from __future__ import annotations

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

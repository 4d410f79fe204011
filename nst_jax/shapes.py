"""The shapes the optimisation runs at: scales coarse to fine, bucketed so that few programs compile.

A stream of arbitrary requests must not compile a program per request, so the optimisation
runs at a longest side rounded up to SIZE_STEP (the result is resized to the exact size at the
end) with the other side a multiple of 1/ASPECT_BUCKETS of it: each scale of a working size
has at most 2 * ASPECT_BUCKETS shapes (portrait and landscape).
"""

from __future__ import annotations

from nst_jax import images
from nst_jax.options import Options

SIZE_STEP = 32  # px
ASPECT_BUCKETS = 16
MIN_SIDE = 32  # px: block5 sits behind four 2x2 pools, so a shorter side would leave it empty


def working_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """The bucketed (H, W) an image of `height` x `width` is optimised at, longest side `longest`,
    neither side under MIN_SIDE (a very wide image is optimised less wide, then resized back)."""
    h, w = images.fit_shape(height, width, longest, multiple=max(1, longest // ASPECT_BUCKETS))
    return max(h, MIN_SIDE), max(w, MIN_SIDE)


def round_up(size: float) -> int:
    """`size` px rounded up to a multiple of SIZE_STEP."""
    return max(SIZE_STEP, -(-int(round(size)) // SIZE_STEP) * SIZE_STEP)


def scale_sizes(size: int, min_scale: int, scale_ratio: float, max_scales: int) -> list[int]:
    """Longest sides of the scales, coarse to fine, px: `size / scale_ratio**k` for k = 0, 1, ...
    while that is >= `min_scale` and k < `max_scales`, each rounded up to SIZE_STEP. A `size` at
    or below `min_scale` is a single scale."""
    sizes, k = [round_up(size)], 1
    while k < max_scales and round(size / scale_ratio ** k) >= min_scale:
        sizes.append(round_up(size / scale_ratio ** k))
        k += 1
    return sorted(set(sizes))


def scale_sides(options: Options) -> list[int]:
    """Longest side, px, of each scale of a run with `options`, coarse to fine, whatever the photo's
    aspect: `scale_sizes` where `options.multiscale`, else one scale at `options.size`."""
    if not options.multiscale:
        return [round_up(options.size)]
    return scale_sizes(options.size, options.min_scale, options.scale_ratio, options.max_scales)


def scale_shapes(content_shape: tuple[int, ...], options: Options) -> tuple[tuple[int, int], ...]:
    """Working (H, W) of each scale, coarse to fine, for a content image of `content_shape` run
    with `options` (`scale_sides`)."""
    return tuple(working_shape(*content_shape[:2], s) for s in scale_sides(options))


def parse_aspect(text: str) -> tuple[int, int]:
    """"W:H" (e.g. "4:3") -> (W, H), both positive whole numbers; else ValueError."""
    w, _, h = text.strip().partition(":")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ValueError(f"an aspect ratio is W:H, e.g. 4:3, not {text!r}")
    return int(w), int(h)


def style_longest(style_shape: tuple[int, ...], longest: int, style_scale: float) -> int:
    """Longest side, px, the style image is analysed at while the content is at `longest`:
    `longest * style_scale`, but never more than the style image's own longest side (upscaling
    a painting past its pixels adds blur, not brush strokes). Rounded down to SIZE_STEP (at
    least MIN_SIDE), so that style images of any size compile few programs."""
    side = min(longest * style_scale, max(style_shape[:2]))
    return max(MIN_SIDE, int(side) // SIZE_STEP * SIZE_STEP)

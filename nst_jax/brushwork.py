"""The painting's own brush strokes, copied into the finished picture.

On the edge-tuned fallback the optimisation meets the painting's texture statistics with regular,
shaded ripples and, beside the photo's edges, a moulded relief (QUALITY.md): the amount of detail
is the painting's, its form the network's. Here the picture's fine detail (what a Gaussian blur of
DETAIL_SIGMA px takes away) is replaced by the painting's: patch by patch, the patches half
overlapping and Hann-weighted, each the painting's patch nearest the picture's there in its blurred
colours and its detail, with a cost on using a part of the painting again (or a sky becomes one
stroke repeated), each as strong as it is in the painting. A texture transfer of the
image-quilting family (Efros and Freeman, 2001; Hertzmann et al., "Image Analogies", 2001) on the
detail band alone: the picture's layout and colours stay the optimisation's. Where the photo is
flat (`strokes.flatness`) all of the detail is replaced; on the photo's edges half of it, more as
far as the painting is strokes all over (`stroke_coverage`), and of the picture's own detail there
only the part that follows the photo's light (`follow_edges`), drawn stronger as far as the strokes
leave room: the edge itself, not the relief beside it.

Arrays are (H, W, 3) float32 RGB in [0, 1]. Lengths are px of a picture whose longest side is
REFERENCE_SIDE, scaled with the picture's (DETAIL_SIGMA above it as the square root).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from scipy import ndimage as ndi

from nst_jax import color, images, strokes

REFERENCE_SIDE = 512
DETAIL_SIGMA = 6.0  # px: the detail is what this blur takes away (the ripples are about 7 px apart)
REDUCED_SIGMA = 4.0  # px: a blur wider than twice this is computed on a reduced copy (`blur`)
PATCH = 24  # px: a patch's side
CANDIDATE_STRIDE = 4  # px between the painting's patches that may be chosen
MAX_CANDIDATES = 20000  # more of the painting's patches are spaced further apart
LOOK_GRID = 6  # the blurred colours are compared on a LOOK_GRID x LOOK_GRID grid of each patch
DETAIL_GRID = 24  # the detail on at most this many points a side
DETAIL_MATCH = 0.5  # the detail's weight in the match, against the blurred colours' 1
# What one earlier use of a part of the painting adds to a patch's distance, in units of the
# median distance of the best matches: enough to spread a sky's choices over the painting, not so
# much that a plain wall is sent to the painting's few striking motifs (a wave's claws of foam).
REUSE_COST = 0.5
REUSE_REACH = 0.5  # of a patch's side: choices nearer each other than this in the painting are one part
# A painting of strokes all over (The Starry Night) paints over the photo's edges too, its strokes
# then in place of the optimisation's relief there; one whose detail lies in outlines and motifs
# (Udnie, The Great Wave) would stamp them on the photo's edges all over, so there it paints over
# half, the motifs faint.
COVERAGE_SIGMA = 12.0  # px: the painting's detail energy is averaged over a Gaussian this wide
COVERAGE_RANGE = (0.5, 0.9)  # its quietest quarter over its mean: COVERAGE_FLOOR below, all strokes above
COVERAGE_FLOOR = 0.5  # how far the strokes paint over the photo's edges at least
EDGE_RADIUS = 4  # px: the window in which the picture's detail is fitted to the photo's light (`follow_edges`)
EDGE_EPS = 1e-3  # the photo's light varying less than this in a window (a std of 0.03): nothing fitted
# On the photo's edges the picture keeps only the part of its detail that follows the photo's
# light, the relief beside them gone; with the strokes half over, that left too little detail
# for the shallow texture error (Tubingen x The Shipwreck: 0.041, its bound 0.044) and soft
# outlines. So the edges are drawn 1 + EDGE_GAIN * (1 - the strokes' coverage) times as strong
# (0.019; rocket x The Great Wave's launch towers a crisp lattice, its layout 0.354 -> 0.396).
EDGE_GAIN = 0.6
KNEE = 0.3  # of the room left within [0, 1]: detail beyond it is compressed into the rest (`add_within_range`)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` (H, W, C) in [0, 1] blurred by a Gaussian of `sigma` px, borders reflected. A blur
    at least 2 REDUCED_SIGMA px wide is computed on a copy reduced f = sigma // REDUCED_SIGMA
    times, then enlarged: what survives the blur is too coarse to lose anything in the reduction
    (within 1/255 of the full blur), and a wide blur's cost grows with its width (a 4096 px
    picture's, 48 px: 11 s on the full picture, under 1 s so)."""
    factor = int(sigma // REDUCED_SIGMA)
    if factor < 2:
        return ndi.gaussian_filter(image, (sigma, sigma, 0), mode="reflect")
    height, width = image.shape[:2]
    reduced = images.resize(image, max(1, round(height / factor)), max(1, round(width / factor)))
    return images.resize(ndi.gaussian_filter(reduced, (sigma / factor, sigma / factor, 0), mode="reflect"), height, width)


def split(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` (H, W, C) in [0, 1] as its Gaussian blur of `sigma` px and the detail the blur
    takes away."""
    blurred = blur(image, sigma)
    return blurred, image - blurred


def stroke_coverage(detail: np.ndarray, sigma: float) -> float:
    """How far a painting is strokes all over, in [0, 1]: the energy of its `detail` (h, w, 3),
    averaged over a Gaussian of `sigma` px, at its quietest quarter over its mean, mapped from
    COVERAGE_RANGE to [0, 1]. At 512 px: The Starry Night 0.95, Water Lilies 0.64, Udnie 0.19;
    The Great Wave, The Shipwreck and the Sakai Hoitsu screen 0."""
    energy = np.sqrt(ndi.gaussian_filter((detail * detail).sum(-1), sigma, mode="reflect"))
    low, high = COVERAGE_RANGE
    return float(np.clip((np.percentile(energy, 25) / max(float(energy.mean()), 1e-12) - low) / (high - low), 0, 1))


def follow_edges(detail: np.ndarray, light: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The part of `detail` (H, W, C) that follows `light` (H, W), the photo's: in every window of
    (2 `radius` + 1)^2 px the least-squares fit a * light + b, a shrunk to 0 where the light's
    variance is below `eps`, the fits averaged over the windows (He, Sun and Tang's guided
    filter, 2010). A photo's edge drawn in the picture is kept; the relief beside it, which the
    photo's light does not explain, is not."""
    size = (2 * radius + 1, 2 * radius + 1, 1)
    mean = lambda x: ndi.uniform_filter(x, size, mode="reflect")
    light = light[..., None]
    light_mean, detail_mean = mean(light), mean(detail)
    slope = (mean(light * detail) - light_mean * detail_mean) / (mean(light * light) - light_mean ** 2 + eps)
    return mean(slope) * light + mean(detail_mean - slope * light_mean)


def add_within_range(base: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """`base` + `detail` (both (H, W, C), `base` in [0, 1]), each value of the detail past KNEE of
    the room left on its side (1 - base up, base down) compressed into the rest of it (a tanh):
    clipped instead, strong strokes on light walls and dark water lose their light side, and the
    picture darkens and greys there."""
    room = np.maximum(np.where(detail > 0, 1 - base, base), 1e-3)
    x = np.abs(detail) / room
    compressed = np.where(x < KNEE, x, KNEE + (1 - KNEE) * np.tanh((x - KNEE) / (1 - KNEE)))
    return np.clip(base + np.sign(detail) * room * compressed, 0, 1)


def grid(length: int, patch: int, stride: int) -> list[int]:
    """The starts of patches of side `patch` every `stride` px along `length` px, the last flush
    with the end."""
    starts = list(range(0, length - patch + 1, stride))
    return starts if starts[-1] == length - patch else starts + [length - patch]


def patch_features(blurred: np.ndarray, detail: np.ndarray, patch: int, rows: Sequence[int],
                   cols: Sequence[int]) -> np.ndarray:
    """What a match compares, of the patches of side `patch` at `rows` x `cols` (row-major): the
    blurred colours on a LOOK_GRID grid and DETAIL_MATCH times the detail on at most DETAIL_GRID
    points a side. (len(rows) * len(cols), features) float32."""
    look = np.linspace(0, patch - 1, LOOK_GRID).round().astype(int)
    fine = np.arange(0, patch, max(1, patch // DETAIL_GRID))
    y, x = np.add.outer(np.asarray(rows), look), np.add.outer(np.asarray(cols), look)
    fy, fx = np.add.outer(np.asarray(rows), fine), np.add.outer(np.asarray(cols), fine)
    looks = blurred[y[:, None, :, None], x[None, :, None, :]]  # (rows, cols, grid, grid, C)
    details = detail[fy[:, None, :, None], fx[None, :, None, :]]
    n = len(rows) * len(cols)
    return np.concatenate([looks.reshape(n, -1), DETAIL_MATCH * details.reshape(n, -1)], 1).astype(np.float32)


def choose_patches(queries: np.ndarray, candidates: np.ndarray, places: np.ndarray, reach: float,
                   seed: int = 0) -> np.ndarray:
    """For each of `queries` (n, F), the index of one of `candidates` (m, F), the painting's
    patches at `places` (m, 3: painting, row, column): the nearest in squared distance plus
    REUSE_COST for each earlier choice in the same painting less than `reach` px away in both
    directions. The queries are served in a random order of `seed`, so that none is always served
    first. (n,) int."""
    distance = (candidates * candidates).sum(1)[None] - 2 * queries @ candidates.T + (queries * queries).sum(1)[:, None]
    unit = REUSE_COST * max(float(np.median(distance.min(1))), 1e-12)
    uses = np.zeros(len(candidates), np.float32)
    chosen = np.empty(len(queries), int)
    painting, rows, cols = places.T
    for q in np.random.default_rng(seed).permutation(len(queries)):
        best = int(np.argmin(distance[q] + unit * uses))
        chosen[q] = best
        uses += (painting == painting[best]) & (np.abs(rows - rows[best]) < reach) & (np.abs(cols - cols[best]) < reach)
    return chosen


def candidate_patches(splits: Sequence[tuple[np.ndarray, np.ndarray]], patch: int, stride: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The patches of side `patch` that may be chosen from the paintings split into (blurred,
    detail) (`split`): every `stride` px, further apart where a painting would give more than
    MAX_CANDIDATES. (their `patch_features` (m, F), their places (m, 3: painting, row, column))."""
    features, places = [], []
    for i, (blurred, detail) in enumerate(splits):
        h, w = blurred.shape[:2]
        step = max(stride, math.ceil(math.sqrt(h * w / MAX_CANDIDATES)))
        rows, cols = np.arange(0, h - patch + 1, step), np.arange(0, w - patch + 1, step)
        features.append(patch_features(blurred, detail, patch, rows, cols))
        places.append(np.column_stack([np.full(len(rows) * len(cols), i),
                                       np.repeat(rows, len(cols)), np.tile(cols, len(rows))]))
    return np.concatenate(features), np.concatenate(places)


def lay_patches(details: Sequence[np.ndarray], chosen: np.ndarray, rows: Sequence[int], cols: Sequence[int],
                patch: int, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The paintings' `details` at the places `chosen` (n, 3: painting, row, column), laid on a
    picture of `shape` (H, W) at `rows` x `cols` (row-major, n in all), Hann-weighted so that the
    weights' squares add to 1 (overlapping patches keep their strength): ((H, W, C) float32, the
    std of the chosen patches in the painting)."""
    window = np.hanning(patch + 2)[1:-1]
    window = np.outer(window, window)[..., None].astype(np.float32)
    total = np.zeros((*shape, details[0].shape[-1]), np.float32)
    weight2 = np.zeros((*shape, 1), np.float32)
    for (y, x), (i, py, px) in zip([(y, x) for y in rows for x in cols], chosen):
        total[y:y + patch, x:x + patch] += window * details[i][py:py + patch, px:px + patch]
        weight2[y:y + patch, x:x + patch] += window ** 2
    std = math.sqrt(np.mean([np.var(details[i][py:py + patch, px:px + patch]) for i, py, px in chosen]))
    return total / np.sqrt(np.maximum(weight2, 1e-12)), std


def copy_brushwork(picture: np.ndarray, photo: np.ndarray, paintings: Sequence[np.ndarray],
                   weights: Sequence[float], strength: float = 1.0, seed: int = 0) -> np.ndarray:
    """`picture` with its fine detail replaced by the paintings' (each (h, w, 3) at the size the
    picture was stylized against; any of them may give a patch, but none whose blend `weights` is
    0), `strength` times as strong as the chosen patches are in the painting: where `photo` (its
    shape) is flat, all of it; where the photo has edges, COVERAGE_FLOOR of it, more as far as the
    paintings are strokes all over (`stroke_coverage`), the picture keeping there only the part of
    its detail that follows the photo's edges, 1 + EDGE_GAIN * (1 - that coverage) times as strong
    (under REFERENCE_SIDE px this fades to the picture's own detail). Deterministic for a `seed`.
    Returns float32 (H, W, 3) in [0, 1]."""
    if strength == 0:
        return picture
    height, width = picture.shape[:2]
    k = max(height, width) / REFERENCE_SIDE
    sources = [(np.asarray(p, np.float32), w) for p, w in zip(paintings, weights) if w > 0]
    patch = max(2, min([round(PATCH * k), height, width] + [min(p.shape[:2]) for p, _ in sources]))
    # above REFERENCE_SIDE the band widens as the square root of the size, not as the size: the
    # relief's ripples stay about 7 px apart at every size while the strokes grow with the picture,
    # and a band 12 px wide at 1024 px took the picture's own shading too (its layout under the
    # 512 px picture's: 0.818 against 0.829; 0.843 so)
    sigma = DETAIL_SIGMA * min(k, math.sqrt(k))
    splits = [split(painting, sigma) for painting, _ in sources]
    painted_over = sum(w * stroke_coverage(d, COVERAGE_SIGMA * k) for (_, w), (_, d) in zip(sources, splits))
    coverage = max(COVERAGE_FLOOR, painted_over / sum(w for _, w in sources))
    # under REFERENCE_SIDE a patch is too small to carry a stroke over an edge (7 px at 160 px,
    # where the shallow texture error was 0.12 with them, 0.018 with a third of them): the
    # brushwork on the edges fades out to the picture's own detail
    fade = min(1.0, k)
    flat = np.asarray(strokes.flatness(jnp.asarray(photo, jnp.float32)[None]))[0]  # (H, W, 1)
    reach = flat + (1 - flat) * fade * coverage  # how fully the strokes replace the picture's detail
    blurred, detail = split(np.asarray(picture, np.float32), sigma)
    rows, cols = grid(height, patch, max(1, patch // 2)), grid(width, patch, max(1, patch // 2))
    queries = patch_features(blurred, detail, patch, rows, cols)
    features, places = candidate_patches(splits, patch, max(1, round(CANDIDATE_STRIDE * k)))
    chosen = places[choose_patches(queries, features, places, reach=patch * REUSE_REACH, seed=seed)]
    copied, target = lay_patches([d for _, d in splits], chosen, rows, cols, patch, (height, width))
    flat_part = flat[..., 0] > 0.5
    # as strong as the chosen patches are in the painting: the blend's loss made good, no more
    copied *= strength * target / max(float((copied[flat_part] if flat_part.any() else copied).std()), 1e-6)
    light = color.luminance(np.asarray(photo, np.float32))
    edges = follow_edges(detail, light, max(1, round(EDGE_RADIUS * k)), EDGE_EPS)  # the part the photo's light explains
    own = (1 - fade) * detail + fade * (1 + EDGE_GAIN * (1 - coverage)) * edges
    return add_within_range(blurred, reach * copied + (1 - flat) * own).astype(np.float32)

"""The process's cache of style Gram matrices: a web service sees the same few styles (its
built-in paintings) again and again, and their Grams at a scale do not change."""

from __future__ import annotations

import collections
import hashlib
import threading

import jax
import numpy as np

from nst_jax import images, losses, shapes
from nst_jax.model import Model


def analysed(style: np.ndarray, longest: int) -> np.ndarray:
    """`style` (h, w, 3) as the network analyses it: resized to the working shape of longest
    side `longest` (`shapes.style_longest` of the content's scale)."""
    return images.resize(style, *shapes.working_shape(*style.shape[:2], longest))


class GramCache:
    """Bounded LRU of a style's Gram matrices, keyed by the model, the style's pixels and the
    size it is analysed at. Thread-safe."""

    def __init__(self, capacity: int = 64):
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many analyses (a style at a size and layers) it holds."""
        return len(self._items)

    def get(self, model: Model, style: np.ndarray, longest: int, layers: tuple[str, ...]) -> dict[str, jax.Array]:
        """{layer: (1, C, C)} of `layers` of `style` (h, w, 3) resized to longest side `longest`."""
        # The model itself, not id(model): an id can be reused by a later object.
        key = (model, longest, layers, style.shape, hashlib.sha1(np.ascontiguousarray(style).tobytes()).hexdigest())
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        feats = model.features(analysed(style, longest)[None], layers)
        grams = {name: losses.gram(f) for name, f in feats.items()}
        with self._lock:
            self._items[key] = grams
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return grams


style_grams = GramCache()  # the process's

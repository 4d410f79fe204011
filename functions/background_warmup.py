"""A server's warm-up in the background: `nst_jax.warmup.warmup` of `Settings.warmup_sizes` on a
thread of its own, so that the server answers (not ready) while it compiles."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from nst_jax import images, warmup
from nst_jax.model import Model


class BackgroundWarmup:
    """`warmup(sizes, styles=..., model=load(), max_batch=..., aspects=...)` on a thread of its own,
    started once by `start`, with `styles` (h, w, 3) uint8 RGB (a server's built-in styles); `load` gives the
    model and switches the persistent compilation cache on (what it compiles is kept for the
    next instance). A server reports itself not ready while `pending`. A failure is logged and
    ends the warm-up (the requests then compile what they need)."""

    def __init__(self, sizes: Sequence[int], load: Callable[[], Model], styles: Sequence[np.ndarray] = (),
                 max_batch: int = 1, aspects: Sequence[tuple[int, int]] | None = None):
        self.sizes, self.styles, self.load = tuple(sizes), tuple(styles), load
        self.max_batch, self.aspects = max_batch, aspects
        self._started = threading.Lock()  # held for good once started
        self._done = threading.Event()
        if not self.sizes:
            self._done.set()

    def start(self) -> None:
        if self.sizes and self._started.acquire(blocking=False):
            threading.Thread(target=self._run, name="neurastyle-warmup", daemon=True).start()

    def pending(self) -> bool:
        return not self._done.is_set()

    def _run(self) -> None:
        log = logging.getLogger("neurastyle")
        try:
            log.info("warming up sizes %s", ", ".join(map(str, self.sizes)))
            warmup.warmup(self.sizes, styles=[images.to_float(s) for s in self.styles], log=log.info,
                          model=self.load(), max_batch=self.max_batch, aspects=self.aspects)
            log.info("warm-up done; compilation cache: %s", warmup.cache_summary())
        except Exception:  # noqa: BLE001  (a server without a warm-up still serves)
            log.exception("warm-up failed")
        finally:
            self._done.set()

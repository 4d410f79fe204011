"""Errors a user can cause and fix. The CLI prints them; the HTTP function maps them to 4xx/503."""

from __future__ import annotations


class NSTError(ValueError):
    """Base of every user-facing error. `code` is a stable machine-readable name."""

    code = "invalid_request"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ImageError(NSTError):
    """An image could not be decoded or is outside the limits."""

    code = "invalid_image"


class OptionsError(NSTError):
    """An option is unknown, of the wrong type or out of range."""

    code = "invalid_option"


class WeightsError(NSTError):
    """A weights file is missing, truncated, tampered with or of the wrong layout."""

    code = "weights_unavailable"


class Cancelled(Exception):
    """Raised by a progress callback to stop a run (client gone, deadline passed)."""


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` says the host or the accelerator ran out of memory (XLA RESOURCE_EXHAUSTED):
    a smaller size may fit, so the HTTP function answers it as `out_of_memory`, not a bug."""
    if isinstance(e, MemoryError):
        return True
    if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
        return False
    return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()

"""Errors a user can cause and fix. The CLI prints them; the HTTP function maps them to 4xx/503."""


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

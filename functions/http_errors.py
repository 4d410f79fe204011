"""Errors as HTTP answers, in one place: each error code's status, the JSON body
``{"error": {"code", "message"}}`` every failure is answered with (plain, streamed, /healthz,
gunicorn's refusals), and the headers some errors carry (Allow, Retry-After)."""

from __future__ import annotations

from http import HTTPStatus

from nst_jax import errors

from functions.admission import Refused

STATUS = {  # error code -> HTTP status (every code the function answers with); any other is a 400
    "invalid_request": 400,
    "invalid_json": 400,
    "invalid_base64": 400,
    "invalid_option": 400,
    "invalid_image": 400,
    "unsupported_format": 400,
    "unknown_style_preset": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "body_too_large": 413,
    "image_too_large": 413,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "busy": 429,
    "headers_too_large": 431,
    "weights_unavailable": 503,
    "out_of_memory": 503,
    "shutting_down": 503,
    "warming_up": 503,
    "deadline_exceeded": 504,
    "client_closed": 499,  # nobody reads it: the client left
    "internal": 500,
}


class MethodNotAllowed(errors.NSTError):
    def __init__(self, method: str, allow: str):
        super().__init__(f"{method} is not allowed here; use {allow}", "method_not_allowed")
        self.allow = allow


def internal() -> errors.NSTError:
    """What a client is told of an unexpected failure (the details go to the log only)."""
    return errors.NSTError("internal error", "internal")


def status(code: str) -> int:
    return STATUS.get(code, 400)


def reason(code: str) -> str:
    """The status line's reason phrase of `code`'s status."""
    try:
        return HTTPStatus(status(code)).phrase
    except ValueError:  # 499 has none
        return "Client Closed Request"


def from_status(status_code: int, message: str) -> errors.NSTError:
    """The error of an answer made elsewhere (Flask's router, gunicorn): the first code of
    that status in STATUS, else invalid_request (400)."""
    code = next((code for code, s in STATUS.items() if s == status_code), "invalid_request")
    return errors.NSTError(message, code)


def body(e: errors.NSTError) -> dict:
    return {"error": {"code": e.code, "message": str(e)}}


def headers(e: errors.NSTError) -> dict[str, str]:
    """Allow of a method not allowed; Retry-After of a refusal, in whole seconds."""
    if isinstance(e, MethodNotAllowed):
        return {"Allow": e.allow}
    if isinstance(e, Refused):
        return {"Retry-After": str(e.retry_after)}
    return {}

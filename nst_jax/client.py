"""A client of a deployed NeuraStyle HTTP function (the contract of DEPLOY.md), with the
standard library's urllib: `stylize(server, content, styles | style_preset, options)` sends the
request the page sends and returns the result; with `on_progress` it streams, handing each
progress line to the callback as the library's `Progress` (the answer is a `Result`; both
are read as `nst_jax.messages` writes them). A busy (429) or unavailable (503)
server is asked again after its Retry-After, a bounded number of times; every error answer
raises `ServerError` with the server's code and message.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from nst_jax.errors import NSTError
from nst_jax.messages import Progress, Result

RETRIED = (429, 503)  # busy, shutting down, warming up: another try may be answered
MAX_RETRIES = 3
MAX_WAIT_S = 30.0  # longest wait before a retry, whatever Retry-After says
DEFAULT_WAIT_S = 1.0  # where a 429/503 says no Retry-After
TIMEOUT_S = 600.0  # per read: a plain request's answer comes when its work is done


class ServerError(NSTError):
    """An error answer of the server: `code` and `message` are the server's, `status` the HTTP
    status (200 for an error ending a stream), `retry_after` its Retry-After in seconds, if any.
    Its text says all three."""

    def __init__(self, message: str, code: str, status: int, retry_after: float | None = None):
        super().__init__(f"the server answered {status} {code}: {message}", code)
        self.message = message
        self.status = status
        self.retry_after = retry_after


def stylize(server: str, content: bytes, styles: Sequence[bytes] = (), style_preset: str | None = None,
            options: Mapping | None = None, on_progress: Callable[[Progress], None] | None = None,
            retries: int = MAX_RETRIES, max_wait_s: float = MAX_WAIT_S, timeout: float = TIMEOUT_S,
            on_retry: Callable[[ServerError, float, int], None] | None = None) -> Result:
    """Stylize on the function at URL `server` (its root; POST `server`/stylize).

    content, styles: encoded images (PNG, JPEG, ...), as files hold them; or `style_preset`,
    a built-in style's name (`GET /config`), instead of `styles`. options: those to send
    (the server's defaults for the rest). on_progress: streams ("stream": true) and is called
    with each progress line (`shape` and `elapsed` as the server sends them; `preview` decoded).
    A 429 or 503 is retried up to `retries` times after its Retry-After (at most `max_wait_s`
    seconds), telling `on_retry(error, wait_s, attempt)` first.

    Raises: ServerError for an error answer (the last one, where retries ran out); NSTError
    where the server cannot be reached or its answer is not the contract's."""
    if (not styles) == (style_preset is None):
        raise NSTError("give style images or a style preset, not both and not neither")
    payload: dict = {"content_image": _b64(content), "options": dict(options or {})}
    if style_preset is not None:
        payload["style_preset"] = style_preset
    else:
        payload["style_images"] = [_b64(s) for s in styles]
    if on_progress is not None:
        payload["stream"] = True
    request = urllib.request.Request(server.rstrip("/") + "/stylize", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json", "Accept": "application/json",
                                      "User-Agent": "nst-jax"}, method="POST")
    attempt = 0
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _read_stream(response, on_progress) if on_progress else _read(Result, _json(response.read()))
        except urllib.error.HTTPError as e:
            error = _error(e)
            if e.code not in RETRIED or attempt == retries:
                raise error from None
            attempt += 1
            wait = min(max_wait_s, error.retry_after if error.retry_after is not None else DEFAULT_WAIT_S)
            if on_retry is not None:
                on_retry(error, wait, attempt)
            time.sleep(wait)
        except (urllib.error.URLError, OSError) as e:  # refused, DNS, reset, timed out
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            what = "timed out" if isinstance(reason, (TimeoutError, socket.timeout)) else str(reason)
            raise NSTError(f"cannot reach the server at {server}: {what}", "unreachable") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise NSTError("the server's answer is not JSON; is the URL that of a NeuraStyle function?",
                       "invalid_answer") from None
    if not isinstance(value, dict):
        raise NSTError("the server's answer is not a JSON object", "invalid_answer")
    return value


def _read(message: type[Result] | type[Progress], body: dict) -> Result | Progress:
    """`message.from_json(body)`; NSTError invalid_answer where the body is not one."""
    try:
        return message.from_json(body)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, NSTError):
            raise
        raise NSTError(f"the server's {message.__name__.lower()} lacks or garbles {e}", "invalid_answer") from None


def _error(e: urllib.error.HTTPError) -> ServerError:
    """The ServerError of an error answer: the server's JSON error, or the status alone where
    something in between (a proxy, a platform's front end) answered."""
    retry_after = e.headers.get("Retry-After", "")
    seconds = float(retry_after) if retry_after.strip().isdigit() else None
    try:
        error = json.loads(e.read())["error"]
        return ServerError(str(error["message"]), str(error["code"]), e.code, seconds)
    except (ValueError, KeyError, TypeError, OSError):
        return ServerError(e.reason or "no details", f"http_{e.code}", e.code, seconds)


def _read_stream(response, on_progress: Callable[[Progress], None]) -> Result:
    """Read NDJSON lines to the result, handing each progress line to `on_progress`."""
    for line in response:
        if not line.strip():
            continue
        event = _json(line)
        kind = event.get("type")
        if kind == Progress.KIND:
            on_progress(_read(Progress, event))
        elif kind == "result":
            return _read(Result, event)
        elif kind == "error":
            error = event.get("error") or {}
            raise ServerError(str(error.get("message", "error")), str(error.get("code", "invalid_answer")), 200)
    raise NSTError("the server's stream ended without a result", "invalid_answer")


"""NeuraStyle as an HTTP function (functions-framework target ``neurastyle``): routes HTTP to
the serving machinery and back. functions-framework sends every path here:

  POST /  or  POST /stylize   stylize; JSON in, JSON (or NDJSON with "stream": true) out
  GET  /healthz               {"ready", "device", "weights", "load"}; 503 while weights are missing
  GET  /config                {"defaults", "limits", "options", "style_presets"}, read by the page
  GET  /, GET /<file>         the web page, files of web/ only
  OPTIONS *                   CORS preflight

Every failure is JSON ``{"error": {"code", "message"}}`` with the status of STATUS (else 400).
Parsing is `parsing.py`'s; a request's life (deadline, batch, stream) `serving.py`'s, its
place in line `admission.py`'s, its socket `connection.py`'s; the settings (environment, read
once when loaded) `settings.py`'s; `nst-jax serve` is `server.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from functions import connection, parsing, serving
from nst_jax import errors

SERVICE = serving.process_service()  # tests put their own in its place

STATUS = {  # error code -> HTTP status; any other NSTError code is a 400
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "body_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "busy": 429,
    "weights_unavailable": 503,
    "out_of_memory": 503,
    "shutting_down": 503,
    "deadline_exceeded": 504,
    "client_closed": 499,  # nobody reads it: the client left
    "internal": 500,
}


class MethodNotAllowed(errors.NSTError):
    def __init__(self, method: str, allow: str):
        super().__init__(f"{method} is not allowed here; use {allow}", "method_not_allowed")
        self.allow = allow


BODY_READ = "neurastyle.body_read"  # environ key: the body was read (by `stylize`)


@functions_framework.http
def neurastyle(request: flask.Request) -> flask.Response:
    try:
        response = route(request)
    except errors.NSTError as e:
        response = error_response(e)
    except Exception:
        serving.log.exception("internal error on %s %s", request.method, request.path)
        response = error_response(errors.NSTError("internal error", "internal"))
    if not request.environ.get(BODY_READ):
        response = without_reading_the_body(response, request)
    return with_headers(response, request.headers.get("Origin"))


def route(request: flask.Request) -> flask.Response:
    path = request.path.strip("/")
    method = request.method
    if (request.content_length or 0) > SERVICE.settings.max_body_bytes:  # on every route
        raise connection.body_too_large(SERVICE.settings.max_body_bytes)
    if method == "OPTIONS":
        return flask.Response(status=204, headers={"Allow": "GET, HEAD, POST, OPTIONS"})
    if path in ("", "stylize") and method == "POST":
        return stylize(request)
    if path == "healthz":
        require(method, "GET, HEAD")
        body, status = SERVICE.health()
        return json_response(body, status)
    if path == "config":
        require(method, "GET, HEAD")
        return json_response(SERVICE.config())
    if path == "stylize":
        require(method, "POST, OPTIONS")
    file = static_file(path, SERVICE.settings.web_dir)
    require(method, "GET, HEAD, POST, OPTIONS" if path == "" else "GET, HEAD")
    return flask.send_file(file, max_age=300)


def require(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise MethodNotAllowed(method, allowed)


def stylize(request: flask.Request) -> flask.Response:
    parsing.check_media_type(request.mimetype)
    deadline = SERVICE.deadline()  # time spent waiting in line counts
    connection = request.environ.get("gunicorn.socket")  # for read timeouts and to see the client leave
    body = SERVICE.read_body(request.stream, request.content_length, connection)
    request.environ[BODY_READ] = True
    ticket = SERVICE.admission.admit()  # 429 at once when the line is full
    try:
        parsed = SERVICE.parse(body)
        stylization = SERVICE.start(parsed, ticket, deadline, connection)
    except BaseException:
        SERVICE.admission.release(ticket)
        raise
    if not parsed.stream:
        return json_response(stylization.result())
    response = flask.Response(stylization.stream_lines(), mimetype="application/x-ndjson",
                              headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(stylization.cancel)
    return response


def static_file(path: str, web_dir: Path) -> Path:
    """The file of `web_dir` that `path` names (index.html for ""); not_found for anything else."""
    not_found = errors.NSTError(f"no such path: /{path}", "not_found")
    if any(part.startswith(".") for part in path.split("/")):
        raise not_found
    try:
        file = (web_dir / (path or "index.html")).resolve()
        if not (file.is_relative_to(web_dir) and file.is_file()):
            raise not_found
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        raise not_found from None
    return file


# --- answers -------------------------------------------------------------------

def json_response(body: dict, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body, allow_nan=False), status=status, mimetype="application/json")


def error_response(e: errors.NSTError) -> flask.Response:
    response = json_response({"error": {"code": e.code, "message": str(e)}}, STATUS.get(e.code, 400))
    if getattr(e, "allow", None):
        response.headers["Allow"] = e.allow
    if getattr(e, "retry_after", None):
        response.headers["Retry-After"] = str(e.retry_after)
    return response


def without_reading_the_body(response: flask.Response, request: flask.Request) -> flask.Response:
    """An answer sent without reading the request's body: made of an iterator, so that it
    counts as streamed and functions-framework does not read (and buffer) the body first;
    and where the body may be large (over the limit, or chunked), the connection stops
    reading once answered, so the server does not read it either (to keep the connection)."""
    if not response.is_streamed:
        data = response.get_data()
        response.response = iter([data])
        response.headers["Content-Length"] = str(len(data))
    sock = request.environ.get("gunicorn.socket")
    unbounded = request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if sock is not None and (unbounded or (request.content_length or 0) > SERVICE.settings.max_body_bytes):
        response.call_on_close(lambda: connection.stop_reading(sock))
    return response


def with_headers(response: flask.Response, origin: str | None) -> flask.Response:
    """The security headers, and CORS for the configured origins."""
    origins = SERVICE.settings.cors_origins
    response.headers.update(security_headers(origins))
    if origins:
        response.headers.add("Vary", "Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "3600"
    return response


def security_headers(cors_origins: tuple[str, ...]) -> dict[str, str]:
    return {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "; ".join([
            "default-src 'self'",
            "img-src 'self' data: blob:",
            "connect-src " + " ".join(["'self'", *cors_origins]),
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]),
    }


def flask_answer(e: HTTPException) -> flask.Response:
    """Answers Flask gives without calling the function: paths its router does not match
    (a newline in the path, /robots.txt, /favicon.ico). JSON errors like the function's."""
    code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.code, "invalid_request")
    message = f"no such path: {flask.request.path}" if e.code == 404 else e.description
    return with_headers(json_response({"error": {"code": code, "message": message}}, e.code or 400),
                        flask.request.headers.get("Origin"))


def flask_headers(response: flask.Response) -> flask.Response:
    for name, value in security_headers(SERVICE.settings.cors_origins).items():  # on Flask's redirects too
        response.headers.setdefault(name, value)
    return response


if flask.has_app_context():  # functions-framework runs this file inside its Flask app's context
    flask.current_app.register_error_handler(HTTPException, flask_answer)
    flask.current_app.after_request(flask_headers)

"""NeuraStyle as an HTTP function (functions-framework target ``neurastyle``): routes HTTP to
the serving machinery and back. functions-framework sends every path here:

  POST /  or  POST /stylize   stylize; JSON in, JSON (or NDJSON with "stream": true) out
  GET  /healthz               {"ready", "device", "weights", "load"}; 503 while weights are missing
  GET  /config                {"defaults", "limits", "options", "style_presets"}, read by the page
  GET  /openapi.json          this contract as OpenAPI 3.1 (`openapi.py`)
  GET  /, GET /<file>         the web page, files of web/ only
  OPTIONS *                   CORS preflight

Every failure is JSON ``{"error": {"code", "message"}}`` with its code's status (`http_errors.py`),
and every request gets one log line when its answer is closed (`requestlog.py`, `log_request`).
Parsing is `parsing.py`'s; a request's life (deadline, batch, stream) `serving.py`'s, its
place in line `admission.py`'s, its socket `connection.py`'s; the settings (environment, read
once when loaded) `settings.py`'s; `nst-jax serve` is `server.py`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from functions import connection, http_errors, openapi, parsing, requestlog, serving
from nst_jax import errors

SERVICE = serving.process_service()  # tests put their own in its place

# environ keys: what a request's log line says
STARTED = "neurastyle.started"  # time.perf_counter() when the request came in
BODY_READ = "neurastyle.body_read"  # bytes of the body read (by `stylize`), where it was read
ERROR = "neurastyle.error"  # the code of the error it was answered with
WORK = "neurastyle.work"  # its `serving.Work`, where it stylized


@functions_framework.http
def neurastyle(request: flask.Request) -> flask.Response:
    try:
        response = route(request)
    except errors.NSTError as e:
        response = error_response(e)
    except Exception:
        serving.log.exception("internal error on %s %s", request.method, request.path)
        response = error_response(http_errors.internal())
    if BODY_READ not in request.environ:
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
        if "error" in body:
            request.environ[ERROR] = body["error"]["code"]
        return json_response(body, status)
    if path == "config":
        require(method, "GET, HEAD")
        return json_response(SERVICE.config())
    if path == "openapi.json":
        require(method, "GET, HEAD")
        return json_response(openapi.document(SERVICE.settings, SERVICE.presets.names()))
    if path == "stylize":
        require(method, "POST, OPTIONS")
    file = static_file(path, SERVICE.settings.web_dir)
    require(method, "GET, HEAD, POST, OPTIONS" if path == "" else "GET, HEAD")
    return flask.send_file(file, max_age=300)


def require(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise http_errors.MethodNotAllowed(method, allowed)


def stylize(request: flask.Request) -> flask.Response:
    parsing.check_media_type(request.mimetype)
    deadline = SERVICE.deadline()  # time spent waiting in line counts
    connection = request.environ.get("gunicorn.socket")  # for read timeouts and to see the client leave
    body = SERVICE.read_body(request.stream, request.content_length, connection)
    request.environ[BODY_READ] = len(body)
    ticket = SERVICE.admission.admit()  # 429 at once when the line is full
    try:
        parsed = SERVICE.parse(body)
        stylization = SERVICE.stylization(parsed, ticket, deadline, connection)
        request.environ[WORK] = stylization.work
        SERVICE.wait_turn(stylization)
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
    flask.request.environ[ERROR] = e.code
    response = json_response(http_errors.body(e), http_errors.status(e.code))
    response.headers.update(http_errors.headers(e))
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
    message = f"no such path: {flask.request.path}" if e.code == 404 else e.description
    return with_headers(error_response(http_errors.from_status(e.code or 400, message)),
                        flask.request.headers.get("Origin"))


def flask_headers(response: flask.Response) -> flask.Response:
    for name, value in security_headers(SERVICE.settings.cors_origins).items():  # on Flask's redirects too
        response.headers.setdefault(name, value)
    return response


# --- the request's log line ------------------------------------------------------------

def request_started() -> None:
    flask.request.environ[STARTED] = time.perf_counter()


def log_when_closed(response: flask.Response) -> flask.Response:
    """Write the request's log line once its answer is closed (sent, or the client left): a
    streamed answer's when its stream ends. Every answer Flask gives comes here, the
    function's and Flask's own."""
    request = flask.request
    environ = request.environ
    started = environ.get(STARTED, time.perf_counter())
    request_size = environ.get(BODY_READ, request.content_length)
    head = dict(method=request.method, url=request.url, status=response.status_code,
                user_agent=request.headers.get("User-Agent"), remote_ip=client_address(request))
    trace = requestlog.trace(request.headers)
    counted = None
    if response.is_streamed and "Content-Length" not in response.headers:
        counted = response.response = requestlog.CountedBody(response.response)

    def log_line():
        work = environ.get(WORK)
        error = environ.get(ERROR) or (work.error if work else None)
        response_size = counted.sent if counted else response.content_length
        requestlog.log_request(
            requestlog.http_request(latency_s=time.perf_counter() - started, request_size=request_size,
                                    response_size=response_size, **head),
            trace, error, http_errors.status(error) if error else None, work.fields() if work else None)

    response.call_on_close(log_line)
    return response


def client_address(request: flask.Request) -> str | None:
    """The client's address: the last X-Forwarded-For entry, the one the platform's own front
    end added (earlier entries are the client's to write), else the connection's peer."""
    forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    return forwarded[-1] if forwarded else request.remote_addr


if flask.has_app_context():  # functions-framework runs this file inside its Flask app's context
    flask.current_app.register_error_handler(HTTPException, flask_answer)
    flask.current_app.before_request(request_started)
    flask.current_app.after_request(flask_headers)
    flask.current_app.after_request(log_when_closed)

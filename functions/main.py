"""NeuraStyle as an HTTP function (functions-framework target ``neurastyle``).

Thin glue between HTTP and `nst_jax`. functions-framework sends every path here:

  POST /  or  POST /stylize   stylize; JSON in, JSON (or NDJSON with "stream": true) out
  GET  /healthz               {"ready", "device", "weights"}; 503 while weights are missing
  GET  /config                {"defaults": options' defaults, "limits": this deployment's bounds}
  GET  /, GET /<file>         the web page, files of web/ only
  OPTIONS *                   CORS preflight

Every failure is JSON ``{"error": {"code", "message"}}`` with a 4xx/5xx status (table STATUS).
Stylizations go through admission control (serving.py beside this file): a few run, a few wait, the rest
get 429 with Retry-After; each has a deadline (504 past it, the work stopped). Waiting requests of one
size bucket (`nst_jax.transfer.batch_key`) are run together, as one batch of `stylize_batch`.

Environment:
  NEURASTYLE_WEIGHTS          weights file (default: nst_jax.weights.default_path())
  NEURASTYLE_MAX_SIZE/_STEPS  option limits (default 1024 px, 1000 steps)
  NEURASTYLE_MAX_PIXELS       largest decoded input image, pixels (default 40e6)
  NEURASTYLE_MAX_BODY_BYTES   largest request body (default 30e6)
  NEURASTYLE_CORS_ORIGINS     comma-separated origins allowed to call the API, or "*"
  NEURASTYLE_WEB_DIR          folder of the web page (default: web/ beside or above this file)
  NEURASTYLE_MAX_CONCURRENT, NEURASTYLE_MAX_QUEUE, NEURASTYLE_MAX_BATCH, NEURASTYLE_DEADLINE_S,
  NEURASTYLE_DRAIN_S          load and time limits, see serving.py (default 1, 8, 4, 300 s, 30 s)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib.util
import json
import logging
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path

import flask
import functions_framework
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("nst_jax") is None:  # a checkout that did not `pip install` the package
    sys.path.append(str(HERE.parent))

import serving  # noqa: E402  (beside this file; functions-framework puts this folder on sys.path)
from nst_jax import Limits, Options, Progress, errors, images, load_model, transfer  # noqa: E402
from nst_jax.transfer import stylize_batch  # noqa: E402

log = logging.getLogger("neurastyle")
log.setLevel(logging.INFO)
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # stderr, unless logging is set up already


def _web_dir() -> Path:
    if os.environ.get("NEURASTYLE_WEB_DIR"):
        return Path(os.environ["NEURASTYLE_WEB_DIR"]).resolve()
    return next((d for d in (HERE / "web", HERE.parent / "web") if d.is_dir()), HERE / "web").resolve()


LIMITS = Limits.from_env(max_size=1024, max_steps=1000)
MAX_PIXELS = int(serving.env_number("NEURASTYLE_MAX_PIXELS", 40e6))
MAX_BODY_BYTES = int(serving.env_number("NEURASTYLE_MAX_BODY_BYTES", 30e6))
MAX_STYLES = 8
CORS_ORIGINS = [o.strip() for o in os.environ.get("NEURASTYLE_CORS_ORIGINS", "").split(",") if o.strip()]
WEB_DIR = _web_dir()
PREVIEW_SIDE = 256  # px, longest side of streamed previews
PREVIEW_INTERVAL_S = 0.5  # at most this often
ADMISSION = serving.Admission.from_env()
DEADLINE_S = serving.deadline_s()

REQUEST_KEYS = {"content_image", "style_image", "style_images", "style_blend", "options", "stream"}
STATUS = {  # error code -> HTTP status; any other NSTError code is a 400
    "not_found": 404,
    "method_not_allowed": 405,
    "body_too_large": 413,
    "image_too_large": 413,
    "busy": 429,
    "weights_unavailable": 503,
    "out_of_memory": 503,
    "shutting_down": 503,
    "deadline_exceeded": 504,
    "internal": 500,
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "; ".join([
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src " + " ".join(["'self'", *CORS_ORIGINS]),
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]),
}


class HTTPError(errors.NSTError):
    """A request mistake that is about HTTP rather than images or options."""

    def __init__(self, code: str, message: str, allow: str | None = None):
        super().__init__(message, code)
        self.allow = allow


# --- entry point -------------------------------------------------------------

@functions_framework.http
def neurastyle(request: flask.Request) -> flask.Response:
    try:
        response = route(request)
    except errors.NSTError as e:
        response = error_response(e)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = error_response(HTTPError("internal", "internal error"))
    return with_headers(response, request.headers.get("Origin"))


def flask_answer(e: HTTPException) -> flask.Response:
    """Answers Flask gives without calling the function: paths its router does not match
    (a newline in the path, /robots.txt, /favicon.ico). JSON errors like the function's."""
    code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.code, "invalid_request")
    message = f"no such path: {flask.request.path}" if e.code == 404 else e.description
    return with_headers(json_response({"error": {"code": code, "message": message}}, e.code or 400),
                        flask.request.headers.get("Origin"))


def security_headers(response: flask.Response) -> flask.Response:
    for name, value in SECURITY_HEADERS.items():  # also on Flask's own redirects (// -> /)
        response.headers.setdefault(name, value)
    return response


if flask.has_app_context():  # functions-framework runs this file inside its Flask app's context
    flask.current_app.register_error_handler(HTTPException, flask_answer)
    flask.current_app.after_request(security_headers)


def route(request: flask.Request) -> flask.Response:
    path = request.path.strip("/")
    method = request.method
    if method == "OPTIONS":
        return flask.Response(status=204, headers={"Allow": "GET, HEAD, POST, OPTIONS"})
    if path in ("", "stylize") and method == "POST":
        return handle_stylize(request)
    if path == "healthz":
        require(method, "GET, HEAD")
        return health()
    if path == "config":
        require(method, "GET, HEAD")
        return json_response({"defaults": Options().to_dict(), "limits": dataclasses.asdict(LIMITS)})
    if path == "stylize":
        require(method, "POST, OPTIONS")
    file = static_file(path)
    require(method, "GET, HEAD, POST, OPTIONS" if path == "" else "GET, HEAD")
    return flask.send_file(file, max_age=300)


def require(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise HTTPError("method_not_allowed", f"{method} is not allowed here; use {allowed}", allow=allowed)


# --- responses ---------------------------------------------------------------

def json_response(body: dict, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body, allow_nan=False), status=status, mimetype="application/json")


def error_response(e: errors.NSTError) -> flask.Response:
    status = STATUS.get(e.code, 400)
    response = json_response({"error": {"code": e.code, "message": str(e)}}, status)
    if getattr(e, "allow", None):
        response.headers["Allow"] = e.allow
    if getattr(e, "retry_after", None):
        response.headers["Retry-After"] = str(e.retry_after)
    if e.code == "body_too_large":
        # A body made of an iterator counts as streamed, so functions-framework does not read
        # (and buffer) the rest of the oversized request before answering.
        response.response = iter([response.get_data()])
    return response


def with_headers(response: flask.Response, origin: str | None) -> flask.Response:
    response.headers.update(SECURITY_HEADERS)
    if CORS_ORIGINS:
        response.headers.add("Vary", "Origin")
        if origin and ("*" in CORS_ORIGINS or origin in CORS_ORIGINS):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in CORS_ORIGINS else origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "3600"
    return response


def static_file(path: str) -> Path:
    """The file of web/ that `path` names (index.html for ""); NotFound for anything else."""
    not_found = HTTPError("not_found", f"no such path: /{path}")
    if any(part.startswith(".") for part in path.split("/")):
        raise not_found
    try:
        file = (WEB_DIR / (path or "index.html")).resolve()
        if not (file.is_relative_to(WEB_DIR) and file.is_file()):
            raise not_found
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        raise not_found from None
    return file


def health() -> flask.Response:
    try:
        if serving.draining():
            raise serving.shutting_down()
        model = load_model()
    except errors.NSTError as e:  # weights missing or corrupt, or shutting down
        return json_response({"ready": False, "error": {"code": e.code, "message": str(e)}}, 503)
    return json_response({"ready": True, "device": model.device, "weights": weights_info(model),
                          "load": ADMISSION.stats()})


def weights_info(model) -> dict:
    return {"arch": model.weights.arch, "source": model.weights.source}


# --- parsing the request -----------------------------------------------------

def read_json(request: flask.Request) -> dict:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise HTTPError("body_too_large", f"request body is over the limit of {MAX_BODY_BYTES} bytes")
    request.max_content_length = MAX_BODY_BYTES  # also caps bodies sent without Content-Length
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise HTTPError("body_too_large", f"request body is over the limit of {MAX_BODY_BYTES} bytes") from None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise HTTPError("invalid_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise HTTPError("invalid_request", f"request body must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - REQUEST_KEYS)
    if unknown:
        raise HTTPError("invalid_request", f"unknown field(s) {unknown}; known fields are {sorted(REQUEST_KEYS)}")
    return payload


def image_bytes(value, name: str) -> bytes:
    """Bytes of a base64 string or a ``data:<type>;base64,`` URL."""
    if not isinstance(value, str):
        raise HTTPError("invalid_request", f"{name} must be a base64 string or a data: URL")
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise HTTPError("invalid_base64", f"{name}: a data: URL must be base64-encoded")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError("invalid_base64", f"{name} is not valid base64") from None


def decode_image(value, name: str):
    return images.decode(image_bytes(value, name), MAX_PIXELS, name)


def style_images(payload: dict) -> list:
    if ("style_image" in payload) == ("style_images" in payload):
        raise HTTPError("invalid_request", "give exactly one of style_image or style_images")
    if "style_image" in payload:
        return [decode_image(payload["style_image"], "style_image")]
    values = payload["style_images"]
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_STYLES:
        raise HTTPError("invalid_request", f"style_images must be a list of 1 to {MAX_STYLES} images")
    return [decode_image(v, f"style_images[{i}]") for i, v in enumerate(values)]


def parse_options(payload: dict, n_styles: int) -> Options:
    values = payload.get("options", {})
    if not isinstance(values, dict):
        raise errors.OptionsError(f"options must be an object, got {type(values).__name__}")
    if "style_blend" in payload:
        if "style_blend" in values:
            raise errors.OptionsError("give style_blend either at the top level or in options, not both")
        values = {**values, "style_blend": payload["style_blend"]}
    return Options.from_mapping(values, LIMITS, n_styles)


# --- stylizing ---------------------------------------------------------------

def handle_stylize(request: flask.Request) -> flask.Response:
    deadline = time.monotonic() + DEADLINE_S  # time spent waiting in line counts
    ticket = ADMISSION.admit()  # 429 at once when the line is full, before reading the body
    try:
        payload = read_json(request)
        stream = payload.get("stream", False)
        if not isinstance(stream, bool):
            raise HTTPError("invalid_request", "stream must be true or false")
        if "content_image" not in payload:
            raise HTTPError("invalid_request", "content_image is missing")
        content = decode_image(payload["content_image"], "content_image")
        styles = style_images(payload)
        options = parse_options(payload, len(styles))
        job = Job(content, styles, options, load_model(), ticket, deadline, stream)
        ticket.start(deadline, job, job.key())  # may join the batch of a request ahead in line
    except BaseException:
        ticket.done()
        raise
    if stream:  # the job's thread gives the ticket back
        return job.stream()
    return json_response(job.run())


def run_batch(jobs: list[Job]) -> list:
    """serving's batch runner: the requests' outcomes, an image or the exception that stopped one."""
    if len(jobs) > 1:
        log.info("running %d requests as one batch", len(jobs))
    return stylize_batch([job.work for job in jobs], jobs[0].model)


class Stop(errors.Cancelled):
    """Raised between steps to stop a job that ran out of time; answered with `error`."""

    def __init__(self, error: errors.NSTError):
        super().__init__(str(error))
        self.error = error


class Job:
    """One admitted stylization; `run` answers when done, `stream` reports progress as it goes.
    Either gives the admission ticket back when the work stops. The work itself (`work`, a
    `transfer.Job`) may run in a batch with other requests; its progress is this request's own."""

    def __init__(self, content, styles, options: Options, model, ticket: serving.Ticket, deadline: float,
                 stream: bool = False):
        self.options, self.model, self.ticket, self.deadline = options, model, ticket, deadline
        self.steps = 0
        self.work = transfer.Job(content, styles, options, self.progress)
        self.events: queue.Queue | None = queue.Queue() if stream else None  # NDJSON lines to send
        self.gone = threading.Event()  # the streaming client went away
        self.last_preview = -math.inf

    def key(self):
        """Requests with equal keys may run in one batch: same model and `transfer.batch_key`;
        None (never batched) where that is None."""
        key = transfer.batch_key(self.work)
        return None if key is None else (self.model, key)

    def check_time(self) -> None:
        now = time.monotonic()
        if now > self.deadline:
            raise Stop(HTTPError("deadline_exceeded", f"the request ran past its deadline of {DEADLINE_S:g} s "
                                 f"and was stopped after {self.steps} steps; ask for fewer steps or a smaller size"))
        if now > serving.drain_deadline():
            raise Stop(serving.shutting_down())

    def progress(self, p: Progress) -> None:
        """The work's progress callback; raising stops this request's work only."""
        self.steps = p.step
        self.check_time()
        if self.events is None:
            return
        if self.gone.is_set():
            raise errors.Cancelled()
        event = {"type": "progress", "step": p.step, "total": p.total, "scale": p.scale,
                 "scales": p.scales, "loss": p.loss if math.isfinite(p.loss) else None}
        now = time.monotonic()
        if p.preview is not None and (now - self.last_preview >= PREVIEW_INTERVAL_S or p.step == p.total):
            self.last_preview = now
            event["preview"] = preview_png(p.preview)
        self.events.put(event)

    def run(self) -> dict:
        start = time.perf_counter()
        try:
            outcome = self.ticket.run(run_batch)
        finally:
            self.ticket.done()
        if isinstance(outcome, Stop):
            raise outcome.error from None
        if isinstance(outcome, BaseException):
            if not serving.out_of_memory(outcome):
                raise outcome
            log.warning("out of memory at size %d: %s", self.options.size, outcome)
            raise HTTPError("out_of_memory", f"the server ran out of memory for an image of size {self.options.size}; "
                            "ask for a smaller size, or try again later") from None
        return {
            "image": base64.b64encode(images.encode(outcome, "PNG")).decode("ascii"),
            "width": int(outcome.shape[1]),
            "height": int(outcome.shape[0]),
            "steps": self.steps,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "weights": weights_info(self.model),
            "options": self.options.to_dict(),
        }

    def stream(self) -> flask.Response:
        """NDJSON lines: progress reports, then one result or error. The work runs in a
        thread; when the client goes away the answer is closed and the work stops at its
        next progress report."""
        events = self.events

        def work():
            try:
                events.put({"type": "result", **self.run()})
            except errors.Cancelled:
                log.info("client went away; stopped after %d of the steps", self.steps)
            except errors.NSTError as e:
                events.put({"type": "error", "error": {"code": e.code, "message": str(e)}})
            except Exception:
                log.exception("internal error while stylizing")
                events.put({"type": "error", "error": {"code": "internal", "message": "internal error"}})

        def lines():
            try:
                while True:
                    event = events.get()
                    yield json.dumps(event, allow_nan=False) + "\n"
                    if event["type"] != "progress":
                        return
            finally:
                self.gone.set()

        # Started here, not in `lines`: an answer closed before it is read still ends the work.
        try:
            threading.Thread(target=work, name="neurastyle-job", daemon=True).start()
        except BaseException:
            self.ticket.done()
            raise
        response = flask.Response(lines(), mimetype="application/x-ndjson",
                                  headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        response.call_on_close(self.gone.set)
        return response


def preview_png(image) -> str:
    h, w = image.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1.0:
        image = images.resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    return base64.b64encode(images.encode(image, "PNG")).decode("ascii")

"""The server `nst-jax serve` runs: the function the way functions-framework does in
production (gunicorn, one worker process, so the model is loaded once and shared, threads for
concurrent requests), with these changes:

* enough threads for every admitted request and upload to wait and still answer `/healthz`
  and refusals at once (`Settings.server_threads`);
* on SIGTERM the worker *drains*: requests already running finish (up to `Settings.drain_s`
  seconds, then they are stopped and answered 503), new and queued ones get 503
  ``shutting_down``, `/healthz` says 503, and then the process exits 0;
* gunicorn's own grace period covers the drain;
* the request line is capped (`MAX_REQUEST_LINE`; functions-framework lifts gunicorn's cap,
  and parsing a long line costs more than its length), and gunicorn's own refusals of
  malformed heads are JSON errors like the function's, with their log line.

The gunicorn application is this module's own (`Application`, as functions-framework's
private one is made), with functions-framework's settings where these say nothing.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from functions import http_errors, requestlog
from functions.serving import Service, process_service
from functions.settings import Settings
from nst_jax.errors import NSTError

TARGET = "neurastyle"
MAX_REQUEST_LINE = 8190  # bytes: gunicorn's largest cap, room for any URL the page or a client makes


def head_refusal(exc: Exception) -> NSTError | None:
    """The error of gunicorn's refusal of a request head that is too large, or None for the
    errors gunicorn answers itself."""
    from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

    if isinstance(exc, LimitRequestLine):
        return NSTError(f"the request line is over {MAX_REQUEST_LINE} bytes", "uri_too_long")
    if isinstance(exc, LimitRequestHeaders):
        return NSTError("the request's headers are too large", "headers_too_large")
    return None


def refusal_bytes(e: NSTError) -> bytes:
    """A whole HTTP answer of error `e`, for a request gunicorn could not parse."""
    body = json.dumps(http_errors.body(e)).encode()
    head = (f"HTTP/1.1 {http_errors.status(e.code)} {http_errors.reason(e.code)}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1")
    return head + body


def draining_worker(service: Service):
    """gunicorn's threaded worker, draining on SIGTERM (see the module's docstring)."""
    from gunicorn import util
    from gunicorn.workers.gthread import ThreadWorker

    class DrainingWorker(ThreadWorker):
        _active = 0  # requests being handled, streamed answers included

        def handle_request(self, req, conn):
            with self._lock:
                self._active += 1
            try:
                return super().handle_request(req, conn)
            finally:
                with self._lock:
                    self._active -= 1

        def init_process(self):
            self._lock = threading.Lock()
            service.warmup.start()  # in the worker: JAX must not start before gunicorn forks
            super().init_process()

        def handle_error(self, req, client, addr, exc):
            refusal = head_refusal(exc)
            if refusal is None:
                return super().handle_error(req, client, addr, exc)
            answer = refusal_bytes(refusal)
            try:
                util.write_nonblock(client, answer)
            except OSError:
                pass  # the client is gone
            # Its line: no URL or headers, which were not read whole (the latency is unknown: 0).
            requestlog.log_request(
                requestlog.http_request(method=getattr(req, "method", None) or "-", url=None,
                                        status=http_errors.status(refusal.code), latency_s=0.0, request_size=None,
                                        response_size=len(answer), user_agent=None,
                                        remote_ip=addr[0] if isinstance(addr, tuple) else None),
                {}, refusal.code, http_errors.status(refusal.code))

        def handle_exit(self, sig, frame):
            if not service.drain.draining:
                service.drain.begin(service.settings.drain_s)
                self.log.info("SIGTERM: draining for up to %g s", service.settings.drain_s)
                threading.Thread(target=self._drain, name="neurastyle-drain", daemon=True).start()

        def _drain(self):
            time.sleep(0.2)  # let requests accepted just now get their 503
            stop = service.drain.deadline() + 2  # jobs are stopped at the drain's deadline; time to answer
            while self._active and time.monotonic() < stop:
                time.sleep(0.1)
            ThreadWorker.handle_exit(self, None, None)  # gunicorn's own stop: close idle connections, exit

    return DrainingWorker


def application(app, options: dict):
    """A gunicorn application serving the WSGI `app` with gunicorn settings `options`."""
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    return Application()


def serve(host: str = "127.0.0.1", port: int | None = None) -> None:
    """Serve the function and its web page at http://host:port/ (default port: the settings',
    $PORT or 8080) until interrupted."""
    import functions_framework

    service = process_service()
    port = port or service.settings.port
    app = functions_framework.create_app(target=TARGET, source=str(Path(__file__).resolve().parent / "main.py"))
    print(f"NeuraStyle on http://{host}:{port}/  (stylize: POST /stylize, health: GET /healthz)", flush=True)
    application(app, {"bind": f"{host}:{port}", "worker_class": draining_worker(service),
                      **gunicorn_settings(service.settings)}).run()


def gunicorn_settings(settings: Settings) -> dict:
    """gunicorn's settings (other than where to listen and the worker class) of `settings`."""
    return {
        "workers": settings.workers,
        "threads": settings.server_threads(),
        "timeout": settings.worker_timeout_s,
        "graceful_timeout": math.ceil(settings.drain_s) + 5,  # covers the drain
        "limit_request_line": MAX_REQUEST_LINE,
        "loglevel": settings.gunicorn_log_level,
    }

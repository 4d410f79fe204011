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
  malformed heads are JSON errors like the function's.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from functions.serving import Service, process_service

TARGET = "neurastyle"
MAX_REQUEST_LINE = 8190  # bytes: gunicorn's largest cap, room for any URL the page or a client makes


def head_refusal(exc: Exception) -> tuple[int, str, str, str] | None:
    """(status, reason, code, message) of gunicorn's refusal of a request head that is too
    large, or None for the errors gunicorn answers itself."""
    from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

    if isinstance(exc, LimitRequestLine):
        return 414, "URI Too Long", "uri_too_long", f"the request line is over {MAX_REQUEST_LINE} bytes"
    if isinstance(exc, LimitRequestHeaders):
        return 431, "Request Header Fields Too Large", "headers_too_large", "the request's headers are too large"
    return None


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
            status, reason, code, message = refusal
            self.log.warning("refused a request head: %s", message)
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
            try:
                util.write_nonblock(client, head + body)
            except OSError:
                pass  # the client is gone

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


def serve(host: str = "127.0.0.1", port: int | None = None) -> None:
    """Serve the function and its web page at http://host:port/ (default port: the settings',
    $PORT or 8080) until interrupted."""
    import functions_framework
    from functions_framework._http import create_server  # what `functions-framework` itself uses

    service = process_service()
    port = port or service.settings.port
    app = functions_framework.create_app(target=TARGET, source=str(Path(__file__).resolve().parent / "main.py"))
    print(f"NeuraStyle on http://{host}:{port}/  (stylize: POST /stylize, health: GET /healthz)", flush=True)
    create_server(app, False, threads=service.settings.server_threads(), worker_class=draining_worker(service),
                  graceful_timeout=math.ceil(service.settings.drain_s) + 5,
                  limit_request_line=MAX_REQUEST_LINE).run(host, port)

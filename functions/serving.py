"""Serving machinery of the HTTP function (main.py, target ``neurastyle``): admission control,
the life of one admitted stylization (deadline, progress stream, cancellation), the drain on
SIGTERM, and the server `nst-jax serve` runs.

`serve` runs the function the way functions-framework does in production (gunicorn, one
worker process, so the model is loaded once and shared, threads for concurrent requests),
with three changes:

* enough threads for every admitted request to wait in line and still answer `/healthz`
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

import base64
import collections
import functools
import json
import logging
import math
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nst_jax import Options, Progress, errors, images, load_model
from nst_jax.transfer import Job, batch_key, stylize_batch
from nst_jax.warmup import InBackground

from functions.parsing import StylizeRequest, parse_stylize
from functions.presets import Presets
from functions.settings import Settings

TARGET = "neurastyle"
RETRY_AFTER_MAX_S = 600
MAX_REQUEST_LINE = 8190  # bytes: gunicorn's largest cap, room for any URL the page or a client makes
PREVIEW_SIDE = 256  # px, longest side of streamed previews
PREVIEW_INTERVAL_S = 0.5  # at most this often
READ_CHUNK = 1 << 20  # bytes of a body read at a time
DECODERS = 2  # requests decoding their images at once
LATE_GRACE_S = 1.0  # past its deadline, a request waits this long for its job's own report

log = logging.getLogger("neurastyle")
log.setLevel(logging.INFO)
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # stderr, unless logging is set up already


class Refused(errors.NSTError):
    """The server cannot take a request now; `retry_after` (seconds) says when to try again."""

    def __init__(self, message: str, code: str, retry_after: int):
        super().__init__(message, code)
        self.retry_after = retry_after


# --- graceful shutdown ---------------------------------------------------------------

class Drain:
    """Whether the process is shutting down: from `begin` on, new work is refused and running
    work may go on until `deadline()`."""

    def __init__(self):
        self._deadline: float | None = None  # time.monotonic() by which running jobs must stop

    def begin(self, seconds: float) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + seconds

    def end(self) -> None:
        """Take work again (for tests; a real server exits after draining)."""
        self._deadline = None

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    def read_body(self, stream, content_length: int | None, sock: socket.socket | None = None) -> bytes:
        """`read_body` while holding one of `max_uploads` places, or 429 busy at once: slow
        uploads never take every thread."""
        if not self.uploads.acquire(blocking=False):
            raise Refused("the server is busy (too many requests are sending their bodies); try again later",
                          "busy", retry_after=1)
        try:
            return read_body(stream, content_length, self.settings, sock)
        finally:
            self.uploads.release()

    def parse(self, body: bytes) -> StylizeRequest:
        """`parse_stylize`, `DECODERS` requests at a time: each may hold a whole image while decoding it."""
        with self.decoders:
            return parse_stylize(body, self.settings, self.presets.images())

    def deadline(self) -> float:
        return math.inf if self._deadline is None else self._deadline

    @staticmethod
    def refusal() -> Refused:
        return Refused("the server is shutting down; try again (another instance will answer)",
                       "shutting_down", retry_after=1)


# --- reading a request ---------------------------------------------------------------

def read_body(stream, content_length: int | None, settings: Settings, sock: socket.socket | None = None) -> bytes:
    """A request body, read whole before the request takes a place in line: at most
    `max_body_bytes` (413 body_too_large, at once when Content-Length says so), each read
    within `read_timeout_s` and all of it within `body_timeout_s` (408 request_timeout), so
    that a client sending slowly holds a thread for a bounded time and no place in line.
    `sock`, the client's connection (gunicorn's), carries the timeouts; without it (tests'
    in-process clients) there are none."""
    limit = settings.max_body_bytes
    too_large = body_too_large(limit)
    if (content_length or 0) > limit:
        raise too_large
    cut_off = threading.Event()

    def cut_off_reading():
        cut_off.set()
        stop_reading(sock)

    watchdog = threading.Timer(settings.body_timeout_s, cut_off_reading)
    if sock is not None:
        sock.settimeout(settings.read_timeout_s)
        watchdog.daemon = True
        watchdog.start()
    expected = limit + 1 if content_length is None else content_length
    body = bytearray()
    try:
        while len(body) < expected and (chunk := stream.read(min(READ_CHUNK, expected - len(body)))):
            body += chunk
    except Exception as e:  # noqa: BLE001  (what the server's stream raises when reads time out or end early)
        if not (isinstance(e, TimeoutError) or cut_off.is_set()):
            raise errors.NSTError("the request body ended early") from None
        cut_off.set()
    finally:
        watchdog.cancel()
        if sock is not None:
            sock.settimeout(None)
    if cut_off.is_set():
        raise errors.NSTError(f"the request body came too slowly (each read may take {settings.read_timeout_s:g} s, "
                              f"the whole body {settings.body_timeout_s:g} s)", "request_timeout")
    if len(body) > limit:
        raise too_large
    if len(body) < expected and content_length is not None:
        raise errors.NSTError("the request body ended before its Content-Length")
    return bytes(body)


def body_too_large(limit: int) -> errors.NSTError:
    return errors.NSTError(f"request body is over the limit of {limit} bytes", "body_too_large")


def peer_closed(sock: socket.socket) -> bool:
    """Whether the client closed the connection: it is readable and a read would see its end
    (a client that sent more, such as its next request, is still there)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # reset, or already closed
        return True


def stop_reading(sock: socket.socket) -> None:
    """Read no more from the client: a blocked read returns at once, as at the end of the body,
    and the server closes the connection after its answer."""
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already closed


# --- admission ------------------------------------------------------------------

class Ticket:
    """One admitted request, as `Admission` tracks it. `job` is what the batch runner gets
    for this request; `key` says which requests may share a batch (equal keys; None: never)."""

    def __init__(self):
        self.state = "admitted"  # then "waiting", "running", "done"
        self.batch: _Batch | None = None
        self.index = 0  # in its batch
        self.job = None
        self.key = None
        self.outcome = None  # its job's, once `settled`
        self.settled = threading.Event()


class Late(Exception):
    """A ticket's outcome when its deadline passed and its job gave none (no progress report
    came to stop it); the work goes on in its batch until its next report."""


class _Batch:
    """Tickets that run together, in a thread of their own; tickets[0] is the leader, which starts it."""

    def __init__(self, tickets: list[Ticket]):
        self.tickets = tickets
        self.started = time.monotonic()
        self.outcomes: list | None = None
        self.running = False  # its thread started


class Admission:
    """At most `max_running` batches at once and `max_waiting` more requests in line, first come
    first served; beyond that a request is refused at once (`busy`, with a Retry-After estimate).

    A request is `admit`ted, `wait_turn`s for a slot, is `run`, and is `release`d (always).
    Batching: when a slot frees, the request at the head of the line takes it together with up
    to `max_batch - 1` other waiting requests of the same key (taken out of the line, the order
    of the rest kept). The head (the leader) starts the batch, `run_batch(jobs) -> outcomes`,
    in a thread of its own. Each request waits for its own outcome only: the batch's, or one
    `settle`d as soon as its job stopped, or `Late` at its deadline; so a request stopped
    early answers while its batch goes on. A batch holds one slot until its last job ends;
    every request holds its own admission until released."""

    def __init__(self, max_running: int = 1, max_waiting: int = 8, max_batch: int = 1, drain: Drain | None = None):
        if max_running < 1 or max_waiting < 0 or max_batch < 1:
            raise ValueError("max_running and max_batch must be >= 1 and max_waiting >= 0")
        self.max_running, self.max_waiting, self.max_batch = max_running, max_waiting, max_batch
        self.drain = drain or Drain()
        self._cond = threading.Condition()
        self._admitted = 0  # tickets out: running, waiting, or still reading their request
        self._running = 0  # batches running, one slot each
        self._running_jobs = 0  # requests in those batches
        self._line: collections.deque[Ticket] = collections.deque()
        self._job_s = 10.0  # how long a batch takes, smoothed over the recent ones

    def admit(self) -> Ticket:
        """A ticket, or Refused (busy, shutting_down) at once."""
        with self._cond:
            if self.drain.draining:
                raise self.drain.refusal()
            if self._admitted >= self.max_running + self.max_waiting:
                raise Refused(f"the server is busy ({self._running} running, {len(self._line)} waiting); "
                              "try again later", "busy", self._retry_after())
            self._admitted += 1
        return Ticket()

    def wait_turn(self, ticket: Ticket, deadline: float, job=None, key=None) -> None:
        """Wait in line until `deadline` (time.monotonic()) for a slot: the ticket's own, as the
        head of the line, or a place in the batch of a ticket ahead with the same `key`.

        Raises: Refused (shutting_down), NSTError deadline_exceeded."""
        ticket.job, ticket.key = job, key
        with self._cond:
            self._line.append(ticket)
            ticket.state = "waiting"
            try:
                while ticket.batch is None and not (self._line[0] is ticket and self._running < self.max_running):
                    if self.drain.draining:
                        raise self.drain.refusal()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.NSTError("the request waited in line past its deadline; try again later "
                                              "or ask for fewer steps", "deadline_exceeded")
                    self._cond.wait(min(left, 0.25))
            finally:
                if ticket in self._line:  # a member was taken out of the line by its leader
                    self._line.remove(ticket)
                self._cond.notify_all()
            if ticket.batch is None:
                self._take_slot(ticket)

    def run(self, ticket: Ticket, run_batch: Callable[[list], list], deadline: float = math.inf):
        """The ticket's outcome, after `wait_turn`: what `run_batch` returned for its job (a
        result, or the exception that stopped it alone), the exception that failed the whole
        batch, what was `settle`d for it, or `Late` once `deadline` (plus a grace period for
        the job's own report) passed without any."""
        batch = ticket.batch
        if batch is None:
            raise RuntimeError("Admission.run before wait_turn")
        if batch.tickets[0] is ticket:
            batch.running = True
            threading.Thread(target=self._run_batch, args=(batch, run_batch), name="neurastyle-batch",
                             daemon=True).start()
        wait = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic()) + LATE_GRACE_S
        if not ticket.settled.wait(wait):
            self.settle(ticket, Late())
        return ticket.outcome

    def settle(self, ticket: Ticket, outcome) -> None:
        """Give `ticket` its outcome now (its job stopped) unless it has one already."""
        with self._cond:
            if not ticket.settled.is_set():
                ticket.outcome = outcome
                ticket.settled.set()

    def _run_batch(self, batch: _Batch, run_batch: Callable[[list], list]) -> None:
        outcomes: list = []
        try:
            outcomes = list(run_batch([t.job for t in batch.tickets]))
            if len(outcomes) != len(batch.tickets):
                raise RuntimeError(f"run_batch gave {len(outcomes)} outcomes for {len(batch.tickets)} jobs")
        except BaseException as e:  # noqa: BLE001  (every job of the batch failed; each is told)
            outcomes = [e] * len(batch.tickets)
        finally:
            self._finish(batch, outcomes)

    def release(self, ticket: Ticket) -> None:
        """Give the ticket's admission back (idempotent). A leader that never ran its batch fails it."""
        with self._cond:
            if ticket.state == "done":
                return
            batch = ticket.batch
            if batch is not None and batch.tickets[0] is ticket and not batch.running:
                self._finish(batch, [RuntimeError("the batch was not run")] * len(batch.tickets))
            self._admitted -= 1
            ticket.state = "done"
            self._cond.notify_all()

    def stats(self) -> dict:
        with self._cond:
            return {"running": self._running, "running_jobs": self._running_jobs, "waiting": len(self._line),
                    "max_running": self.max_running, "max_waiting": self.max_waiting,
                    "max_batch": self.max_batch}

    def admitted(self) -> int:
        with self._cond:
            return self._admitted

    def waiting_jobs(self) -> list:
        """The jobs in line, first first."""
        with self._cond:
            return [t.job for t in self._line]

    def _retry_after(self) -> int:
        rounds = self._admitted / self.max_running  # jobs ahead, per slot (as if none were batched)
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(self._job_s * rounds)))

    def _take_slot(self, leader: Ticket) -> None:
        """Give the free slot to `leader` (the head of the line, already out of it) and the
        waiting tickets of its key, up to max_batch in all. Called holding the lock."""
        members = [leader]
        if leader.key is not None:
            for t in list(self._line):
                if len(members) >= self.max_batch:
                    break
                if t.key is not None and t.key == leader.key:
                    self._line.remove(t)
                    members.append(t)
        batch = _Batch(members)
        for index, t in enumerate(members):
            t.batch, t.index, t.state = batch, index, "running"
        self._running += 1
        self._running_jobs += len(members)
        self._cond.notify_all()  # the members stop waiting

    def _finish(self, batch: _Batch, outcomes: list) -> None:
        """The batch is over: give each member its outcome (unless settled), the slot back (once)."""
        with self._cond:
            if batch.outcomes is not None:
                return
            batch.outcomes = outcomes
            self._running -= 1
            self._running_jobs -= len(batch.tickets)
            self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - batch.started)
            self._cond.notify_all()
        for ticket, outcome in zip(batch.tickets, outcomes):
            self.settle(ticket, outcome)


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` says the host or the accelerator ran out of memory (XLA RESOURCE_EXHAUSTED)."""
    if isinstance(e, MemoryError):
        return True
    if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
        return False
    return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()


# --- one stylization ------------------------------------------------------------------

class Stop(errors.Cancelled):
    """Raised between steps to stop a job that ran out of time; answered with `error`."""

    def __init__(self, error: errors.NSTError):
        super().__init__(str(error))
        self.error = error


class Stylization:
    """One admitted stylize request, from its place in line to its answer: `result` answers when
    the work is done, `stream_lines` reports progress as it goes; either releases the admission
    when the work stops. The work (`job()`, a `transfer.Job`) may run in a batch with other
    requests; its progress, deadline and cancellation are this request's own."""

    def __init__(self, service: Service, request: StylizeRequest, model, ticket: Ticket, deadline: float,
                 connection: socket.socket | None = None):
        self.service, self.request, self.model, self.ticket, self.deadline = service, request, model, ticket, deadline
        self.connection = connection  # the client's (gunicorn's socket), to notice that it left
        self.steps = 0
        self.events: queue.Queue | None = queue.Queue() if request.stream else None  # NDJSON lines to send
        self.gone = threading.Event()  # the streamed answer was closed
        self.last_preview = -math.inf

    def key(self):
        """Requests with equal keys may run in one batch: same model and `batch_key`; None
        (never batched) where that is None."""
        key = batch_key(Job(self.request.content, self.request.styles, self.request.options))  # shapes, options
        return None if key is None else (self.model, key)

    def job(self) -> Job:
        """The work, its images as the library takes them (float32 only while it runs)."""
        r = self.request
        return Job(images.to_float(r.content), [images.to_float(s) for s in r.styles], r.options, self.progress)

    def reason_to_stop(self) -> errors.Cancelled | None:
        """Why the work must stop now, if it must: past the deadline or the drain's, or the
        client left."""
        now = time.monotonic()
        if now > self.deadline:
            return Stop(self.deadline_error())
        if now > self.service.drain.deadline():
            return Stop(self.service.drain.refusal())
        if self.gone.is_set() or (self.connection is not None and peer_closed(self.connection)):
            return errors.Cancelled()
        return None

    def deadline_error(self) -> errors.NSTError:
        return errors.NSTError(f"the request ran past its deadline of {self.service.settings.deadline_s:g} s and "
                               f"was stopped after {self.steps} steps; ask for fewer steps or a smaller size",
                               "deadline_exceeded")

    def progress(self, p: Progress) -> None:
        """The work's progress callback; raising stops this request's work only."""
        self.steps = p.step
        stop = self.reason_to_stop()
        if stop is not None:
            self.service.admission.settle(self.ticket, stop)  # answered now, while a batch goes on
            raise stop
        if self.events is None:
            return
        event = {"type": "progress", "step": p.step, "total": p.total, "scale": p.scale,
                 "scales": p.scales, "loss": p.loss if math.isfinite(p.loss) else None}
        now = time.monotonic()
        if p.preview is not None and (now - self.last_preview >= PREVIEW_INTERVAL_S or p.step == p.total):
            self.last_preview = now
            event["preview"] = preview_png(p.preview)
        self.events.put(event)

    def result(self) -> dict:
        """Run (in a batch, maybe) and answer; the 200 body, or the NSTError to answer."""
        admission = self.service.admission
        start = time.perf_counter()
        try:
            outcome = admission.run(self.ticket, self.service.run_batch, self.deadline)
        finally:
            admission.release(self.ticket)
        if isinstance(outcome, Late):
            raise self.deadline_error() from None
        if isinstance(outcome, Stop):
            raise outcome.error from None
        if isinstance(outcome, errors.Cancelled):
            log.info("client went away; stopped after %d of the steps", self.steps)
            raise errors.NSTError("the client went away", "client_closed") from None
        if isinstance(outcome, BaseException):
            if not out_of_memory(outcome):
                raise outcome
            size = self.request.options.size
            log.warning("out of memory at size %d: %s", size, outcome)
            raise errors.NSTError(f"the server ran out of memory for an image of size {size}; "
                                  "ask for a smaller size, or try again later", "out_of_memory") from None
        return {
            "image": base64.b64encode(images.encode(outcome, "PNG")).decode("ascii"),
            "width": int(outcome.shape[1]),
            "height": int(outcome.shape[0]),
            "steps": self.steps,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "weights": weights_info(self.model),
            "options": self.request.options.to_dict(),
        }

    def stream_lines(self) -> Iterator[str]:
        """NDJSON lines: progress reports, then one result or error. The work runs in a thread
        started now (so that an answer closed before it is read still ends it); `cancel` when
        the client goes away, and the work stops at its next progress report."""
        events = self.events

        def work():
            try:
                events.put({"type": "result", **self.result()})
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
                self.cancel()

        try:
            threading.Thread(target=work, name="neurastyle-job", daemon=True).start()
        except BaseException:
            self.service.admission.release(self.ticket)
            raise
        return lines()

    def cancel(self) -> None:
        self.gone.set()


def preview_png(image) -> str:
    h, w = image.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1.0:
        image = images.resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    return base64.b64encode(images.encode(image, "PNG")).decode("ascii")


def model():
    """The loaded model; without usable weights an NSTError that says so in the project's
    words (the file's path and the reason go to the log, for the operator)."""
    try:
        return load_model()
    except errors.WeightsError as e:
        log.error("weights unavailable: %s", e)
        raise errors.NSTError("the server has no usable weights file (missing or corrupt; its log says which); "
                              "an operator must install one (nst-jax weights fetch)", "weights_unavailable") from None


def weights_info(model) -> dict:
    return {"arch": model.weights.arch, "source": model.weights.source}


# --- the service ------------------------------------------------------------------------

class Service:
    """What the function serves with: its settings, admission, drain state, built-in styles
    and the batch runner (`nst_jax.transfer.stylize_batch`; tests give a fake)."""

    def __init__(self, settings: Settings, run_jobs: Callable = stylize_batch, drain: Drain | None = None,
                 presets: Presets | None = None):
        self.settings = settings
        self.drain = drain or Drain()
        self.admission = Admission(settings.max_concurrent, settings.max_queue, settings.max_batch, self.drain)
        self.uploads = threading.BoundedSemaphore(settings.max_uploads)  # bodies being read
        self.decoders = threading.BoundedSemaphore(DECODERS)
        self.presets = presets if presets is not None else Presets.load(settings.web_dir)
        self.run_jobs = run_jobs
        self.warmup = InBackground(settings.warmup_sizes, list(self.presets.images().values()))

    def read_body(self, stream, content_length: int | None, sock: socket.socket | None = None) -> bytes:
        """`read_body` while holding one of `max_uploads` places, or 429 busy at once: slow
        uploads never take every thread."""
        if not self.uploads.acquire(blocking=False):
            raise Refused("the server is busy (too many requests are sending their bodies); try again later",
                          "busy", retry_after=1)
        try:
            return read_body(stream, content_length, self.settings, sock)
        finally:
            self.uploads.release()

    def parse(self, body: bytes) -> StylizeRequest:
        """`parse_stylize`, `DECODERS` requests at a time: each may hold a whole image while decoding it."""
        with self.decoders:
            return parse_stylize(body, self.settings, self.presets.images())

    def deadline(self) -> float:
        """The time.monotonic() by which a request arriving now must be answered."""
        return time.monotonic() + self.settings.deadline_s

    def start(self, request: StylizeRequest, ticket: Ticket, deadline: float,
              connection: socket.socket | None = None) -> Stylization:
        """Wait in line for `ticket`'s turn; the stylization, ready to answer. Where the client
        closes `connection`, the work stops at its next progress report."""
        stylization = Stylization(self, request, model(), ticket, deadline, connection)
        self.admission.wait_turn(ticket, deadline, stylization, stylization.key())
        return stylization

    def run_batch(self, stylizations: list[Stylization]) -> list:
        """Admission's batch runner: the requests' outcomes, an image or the exception that stopped one."""
        if len(stylizations) > 1:
            log.info("running %d requests as one batch", len(stylizations))
        return self.run_jobs([s.job() for s in stylizations], stylizations[0].model)

    def health(self) -> tuple[dict, int]:
        """(`/healthz` body, status): 503 while shutting down, without usable weights, or while
        the programs of `Settings.warmup_sizes` compile (started here where nothing started it)."""
        try:
            if self.drain.draining:
                raise self.drain.refusal()
            loaded = model()
            self.warmup.start()
            if self.warmup.pending():
                raise errors.NSTError("warming up: compiling the programs of sizes "
                                      + ", ".join(map(str, self.warmup.sizes)) + " px", "warming_up")
        except errors.NSTError as e:
            return {"ready": False, "error": {"code": e.code, "message": str(e)}}, 503
        return {"ready": True, "device": loaded.device, "weights": weights_info(loaded),
                "load": self.admission.stats()}, 200

    def config(self) -> dict:
        """`GET /config`: what the page needs to know."""
        return {"defaults": Options().to_dict(),
                "limits": {"min_size": self.settings.limits.min_size, "max_size": self.settings.limits.max_size,
                           "max_steps": self.settings.limits.max_steps},
                "style_presets": self.presets.listing()}


DRAIN = Drain()  # the process's: SIGTERM reaches the whole worker process


@functools.cache
def process_service() -> Service:
    """The process's service, built once from the environment (main.py's and the server's)."""
    return Service(Settings.from_env(), drain=DRAIN)


# --- the server ------------------------------------------------------------------

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


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the function and its web page at http://host:port/ until interrupted."""
    import functions_framework
    from functions_framework._http import create_server  # what `functions-framework` itself uses

    service = process_service()
    app = functions_framework.create_app(target=TARGET, source=str(Path(__file__).resolve().parent / "main.py"))
    print(f"NeuraStyle on http://{host}:{port}/  (stylize: POST /stylize, health: GET /healthz)", flush=True)
    create_server(app, False, threads=service.settings.server_threads(), worker_class=draining_worker(service),
                  graceful_timeout=math.ceil(service.settings.drain_s) + 5,
                  limit_request_line=MAX_REQUEST_LINE).run(host, port)

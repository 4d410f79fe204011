"""Serving the HTTP function (main.py, target ``neurastyle``): the life of one admitted
stylization (deadline, progress stream, cancellation) and the `Service` that holds what
requests are served with (settings, admission, drain state, built-in styles, the batch runner).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

from jax import monitoring

from nst_jax import Progress, errors, images, load_model
from nst_jax.batching import batch_key, batch_size_for
from nst_jax.messages import Result, weights_json
from nst_jax.model import Model, enable_compilation_cache
from nst_jax.options import Options, options_json_schema
from nst_jax.transfer import Job, check_time_budget, stylize_batch
from nst_jax.warmup import COMPILE_PHASES

from functions import http_errors, requestlog
from functions.admission import Admission, Drain, Late, Refused, Ticket
from functions.background_warmup import BackgroundWarmup
from functions.connection import peer_closed, read_body
from functions.parsing import StylizeRequest, parse_stylize
from functions.presets import Presets
from functions.settings import Settings

PREVIEW_INTERVAL_S = 0.5  # a stream sends a preview at most this often (and with its last report)
DECODERS = 2  # requests decoding their images at once

log = logging.getLogger("neurastyle")


# --- what a request did, for its log line ------------------------------------------------

@dataclasses.dataclass
class Work:
    """What one stylize request did, for its log line: `size` (px), `scales` and `steps` run (as
    its last progress report said), `batch` (requests run together), `queued_s` (waiting for a
    slot), `compile_s` (JAX tracing and compiling in its batch's thread, cache loads included),
    `device`, whether a deadline or a time budget cut it; `error`, the code it ended with, is
    the log line's own field."""

    size: int
    device: str
    scales: int | None = None
    steps: int = 0
    batch: int | None = None
    queued_s: float | None = None
    compile_s: float | None = None
    error: str | None = None
    budget_cut: bool = False

    def fields(self) -> dict:
        d = dataclasses.asdict(self)
        del d["error"]
        d["deadline_cut"] = self.error == "deadline_exceeded"
        for key in ("queued_s", "compile_s"):
            d[key] = None if d[key] is None else round(d[key], 3)
        return d


class CompileClock:
    """Seconds JAX spent tracing and compiling in the current thread, from JAX's own monitoring
    events (a listener registered once per process): a batch runs in one thread, so what
    compiled while it ran is its."""

    _local = threading.local()

    @classmethod
    @functools.cache
    def listen(cls) -> None:
        def on_event(event: str, seconds: float, **_) -> None:
            if event in COMPILE_PHASES:
                cls._local.seconds = cls.seconds() + seconds
        monitoring.register_event_duration_secs_listener(on_event)

    @classmethod
    def seconds(cls) -> float:
        return getattr(cls._local, "seconds", 0.0)


# --- one stylization ------------------------------------------------------------------

class Stop(errors.Cancelled):
    """Raised between steps to stop a job that ran out of time or that the drain ends; answered
    with `error`."""

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
        self.work = Work(size=request.options.size, device=model.device)
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
                               f"was stopped after {self.work.steps} steps; ask for fewer steps or a smaller size",
                               "deadline_exceeded")

    def progress(self, p: Progress) -> None:
        """The work's progress callback; raising stops this request's work only."""
        self.work.steps, self.work.scales, self.work.budget_cut = p.step, p.scales, p.budget_cut
        stop = self.reason_to_stop()
        if stop is not None:
            self.service.admission.settle(self.ticket, stop)  # answered now, while a batch goes on
            raise stop
        if self.events is None:
            return
        now = time.monotonic()
        if p.preview is not None and (now - self.last_preview >= PREVIEW_INTERVAL_S or p.step == p.total):
            self.last_preview = now
        else:
            p = dataclasses.replace(p, preview=None)
        self.events.put(p.to_json())

    def result(self) -> dict:
        """Run (in a batch, maybe) and answer; the 200 body, or the NSTError to answer."""
        try:
            return self._result()
        except errors.NSTError as e:
            self.work.error = e.code
            raise
        except Exception:
            self.work.error = "internal"
            raise

    def _result(self) -> dict:
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
            log.info("client went away; stopped after %d of the steps", self.work.steps)
            raise errors.NSTError("the client went away", "client_closed") from None
        if isinstance(outcome, BaseException):
            if not errors.is_out_of_memory(outcome):
                raise outcome
            size = self.request.options.size
            log.warning("out of memory at size %d: %s", size, outcome)
            raise errors.NSTError(f"the server ran out of memory for an image of size {size}; "
                                  "ask for a smaller size, or try again later", "out_of_memory") from None
        return Result(outcome, self.work.steps, time.perf_counter() - start, self.request.options.to_dict(),
                      weights_json(self.model), self.work.budget_cut).to_json()

    def stream_lines(self) -> Iterator[str]:
        """NDJSON lines: progress reports, then one result or error. The work runs in a thread
        started now (so that an answer closed before it is read still ends it); `cancel` when
        the client goes away, and the work stops at its next progress report."""
        events = self.events

        def work():
            try:
                events.put({"type": "result", **self.result()})
            except errors.NSTError as e:
                events.put({"type": "error", **http_errors.body(e)})
            except Exception:
                log.exception("internal error while stylizing")
                events.put({"type": "error", **http_errors.body(http_errors.internal())})

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


# --- the service ------------------------------------------------------------------------

class Service:
    """What the function serves with: its settings, admission, drain state, built-in styles
    and the batch runner (`stylize_batch`; tests give a fake)."""

    def __init__(self, settings: Settings, run_jobs: Callable | None = None, drain: Drain | None = None,
                 presets: Presets | None = None):
        self.settings = settings
        self.drain = drain or Drain()
        self.admission = Admission(settings.max_concurrent, settings.max_queue, settings.max_batch, self.drain)
        self.uploads = threading.BoundedSemaphore(settings.max_uploads)  # bodies being read
        self.decoders = threading.BoundedSemaphore(DECODERS)
        self.presets = presets if presets is not None else Presets.load(settings.web_dir)
        self.run_jobs = run_jobs or self.stylize_batch
        self.warmup = BackgroundWarmup(settings.warmup_sizes, self.model, list(self.presets.images().values()),
                                   settings.warmup_batch, settings.warmup_aspects)

    def stylize_batch(self, jobs: list[Job], model: Model) -> list:
        """`nst_jax.transfer.stylize_batch`, padded to a batch size of `batching.batch_sizes`:
        the few programs a warm-up builds (`Settings.warmup_batch`), whatever the number of jobs."""
        return stylize_batch(jobs, model, batch_size_for(len(jobs), self.settings.max_batch))

    def model(self) -> Model:
        """The loaded model of `settings.config`; without usable weights an NSTError that says
        so in the project's words (the file's path and the reason go to the log, for the operator)."""
        try:
            enable_compilation_cache(self.settings.config)  # a cold start then skips what earlier instances compiled
            return load_model(config=self.settings.config)
        except errors.WeightsError as e:
            log.error("weights unavailable: %s", e)
            raise errors.NSTError("the server has no usable weights file (missing or corrupt; its log says which); "
                                  "an operator must install one (nst-jax weights fetch)",
                                  "weights_unavailable") from None

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

    def stylization(self, request: StylizeRequest, ticket: Ticket, deadline: float,
                    connection: socket.socket | None = None) -> Stylization:
        """The stylization of an admitted request, not yet in line. Where the client closes
        `connection`, its work stops at its next progress report. A time budget too small for
        this size is refused here, before the wait in line."""
        model = self.model()
        check_time_budget(request.content.shape, request.options, model)
        return Stylization(self, request, model, ticket, deadline, connection)

    def wait_turn(self, stylization: Stylization) -> None:
        """Wait in line for the stylization's turn; then it is ready to answer."""
        work, queued = stylization.work, time.perf_counter()
        try:
            self.admission.wait_turn(stylization.ticket, stylization.deadline, stylization, stylization.key())
        except errors.NSTError as e:
            work.error = e.code
            raise
        finally:
            work.queued_s = time.perf_counter() - queued
        work.batch = len(stylization.ticket.batch.tickets)

    def run_batch(self, stylizations: list[Stylization]) -> list:
        """Admission's batch runner: the requests' outcomes, an image or the exception that stopped one."""
        if len(stylizations) > 1:
            log.info("running %d requests as one batch", len(stylizations))
        CompileClock.listen()
        compiled_before = CompileClock.seconds()
        try:
            return self.run_jobs([s.job() for s in stylizations], stylizations[0].model)
        finally:
            for s in stylizations:
                s.work.compile_s = CompileClock.seconds() - compiled_before

    def health(self) -> tuple[dict, int]:
        """(`/healthz` body, status): 503 while shutting down, without usable weights, or while
        the programs of `Settings.warmup_sizes` compile (started here where nothing started it)."""
        try:
            if self.drain.draining:
                raise self.drain.refusal()
            loaded = self.model()
            self.warmup.start()
            if self.warmup.pending():
                raise errors.NSTError("warming up: compiling the programs of sizes "
                                      + ", ".join(map(str, self.warmup.sizes)) + " px", "warming_up")
        except errors.NSTError as e:
            return {"ready": False, **http_errors.body(e)}, 503
        return {"ready": True, "device": loaded.device, "weights": weights_json(loaded),
                "load": self.admission.stats()}, 200

    def config(self) -> dict:
        """`GET /config`: what the page needs to know: the options' defaults, this deployment's
        limits, every option's JSON Schema {name: {type, default, minimum, maximum, enum,
        description, ...}} under those limits, and the built-in styles."""
        return {"defaults": Options().to_dict(),
                "limits": {"min_size": self.settings.limits.min_size, "max_size": self.settings.limits.max_size,
                           "max_steps": self.settings.limits.max_steps,
                           "max_seconds": self.settings.limits.max_seconds},
                "options": options_json_schema(self.settings.limits)["properties"],
                "style_presets": self.presets.listing()}


DRAIN = Drain()  # the process's: SIGTERM reaches the whole worker process


@functools.cache
def process_service() -> Service:
    """The process's service, built once from the environment (main.py's and the server's),
    and the process's log set up as its settings say. A malformed setting stops it here."""
    settings = Settings.from_env()
    requestlog.configure(settings.log_format, settings.cloud_project)
    return Service(settings, drain=DRAIN)

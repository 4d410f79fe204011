"""Serving machinery for the HTTP function (main.py beside this file, target ``neurastyle``):
admission control, request deadlines, graceful shutdown, and the server `nst-jax serve` runs.

`serve` runs the function the way functions-framework does in production (gunicorn, one
worker process, so the model is loaded once and shared, threads for concurrent requests),
with three changes:

* enough threads for every admitted request to wait in line and still answer `/healthz`
  and refusals at once (env THREADS overrides);
* on SIGTERM the worker *drains*: requests already running finish (up to NEURASTYLE_DRAIN_S
  seconds, then they are stopped and answered 503), new and queued ones get 503
  ``shutting_down``, `/healthz` says 503, and then the process exits 0;
* gunicorn's own grace period covers the drain.

Settings (environment, read when the function is loaded):
  NEURASTYLE_MAX_CONCURRENT   stylizations (batches) running at once (default 1)
  NEURASTYLE_MAX_BATCH        most requests of one batch key run together in one slot (default 4; 1: no batching)
  NEURASTYLE_MAX_QUEUE        more that may wait for a slot (default 8); beyond: 429 busy
  NEURASTYLE_DEADLINE_S       a request's time limit, waiting included (default 300); 504 past it
  NEURASTYLE_DRAIN_S          how long running requests may finish after SIGTERM (default 30)
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from pathlib import Path

from nst_jax.errors import NSTError

TARGET = "neurastyle"
RETRY_AFTER_MAX_S = 600


def env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise NSTError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise NSTError(f"{name}={value!r} must be a finite number >= 0")
    return number


def max_concurrent() -> int:
    return max(1, int(env_number("NEURASTYLE_MAX_CONCURRENT", 1)))


def max_batch() -> int:
    return max(1, int(env_number("NEURASTYLE_MAX_BATCH", 4)))


def max_queue() -> int:
    return int(env_number("NEURASTYLE_MAX_QUEUE", 8))


def deadline_s() -> float:
    return env_number("NEURASTYLE_DEADLINE_S", 300)


def drain_s() -> float:
    return env_number("NEURASTYLE_DRAIN_S", 30)


class Refused(NSTError):
    """The server cannot take a request now; `retry_after` (seconds) says when to try again."""

    def __init__(self, message: str, code: str, retry_after: int):
        super().__init__(message, code)
        self.retry_after = retry_after


# --- graceful shutdown ---------------------------------------------------------------

_drain_deadline: float | None = None  # time.monotonic() by which running jobs must stop


def begin_drain(seconds: float | None = None) -> None:
    """Refuse new work from now on; running jobs may go on for `seconds` (NEURASTYLE_DRAIN_S)."""
    global _drain_deadline
    if _drain_deadline is None:
        _drain_deadline = time.monotonic() + (drain_s() if seconds is None else seconds)


def end_drain() -> None:
    """Take work again (for tests; a real server exits after draining)."""
    global _drain_deadline
    _drain_deadline = None


def draining() -> bool:
    return _drain_deadline is not None


def drain_deadline() -> float:
    return math.inf if _drain_deadline is None else _drain_deadline


def shutting_down() -> Refused:
    return Refused("the server is shutting down; try again (another instance will answer)",
                   "shutting_down", retry_after=1)


# --- admission ------------------------------------------------------------------

class Admission:
    """At most `max_running` batches at once and `max_waiting` more requests in line, first come
    first served; beyond that a request is refused at once (`busy`, with a Retry-After estimate).

    Batching: when a slot frees, the request at the head of the line takes it together with up
    to `max_batch - 1` other waiting requests of the same key (taken out of the line, the order
    of the rest kept). The head's thread (the leader) runs the batch, `run_batch(jobs) ->
    outcomes`, and hands each member its own outcome. A batch holds one slot; every request
    still holds its own admission until `done`."""

    def __init__(self, max_running: int = 1, max_waiting: int = 8, max_batch: int = 1):
        if max_running < 1 or max_waiting < 0 or max_batch < 1:
            raise ValueError("max_running and max_batch must be >= 1 and max_waiting >= 0")
        self.max_running, self.max_waiting, self.max_batch = max_running, max_waiting, max_batch
        self._cond = threading.Condition()
        self._admitted = 0  # tickets out: running, waiting, or still reading their request
        self._running = 0  # batches running, one slot each
        self._running_jobs = 0  # requests in those batches
        self._line: collections.deque[Ticket] = collections.deque()
        self._job_s = 10.0  # how long a batch takes, smoothed over the recent ones

    @classmethod
    def from_env(cls) -> Admission:
        return cls(max_concurrent(), max_queue(), max_batch())

    def admit(self) -> Ticket:
        with self._cond:
            if draining():
                raise shutting_down()
            if self._admitted >= self.max_running + self.max_waiting:
                raise Refused(f"the server is busy ({self._running} running, {len(self._line)} waiting); "
                              "try again later", "busy", self._retry_after())
            self._admitted += 1
        return Ticket(self)

    def _retry_after(self) -> int:
        rounds = self._admitted / self.max_running  # jobs ahead, per slot (as if none were batched)
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(self._job_s * rounds)))

    def stats(self) -> dict:
        with self._cond:
            return {"running": self._running, "running_jobs": self._running_jobs, "waiting": len(self._line),
                    "max_running": self.max_running, "max_waiting": self.max_waiting,
                    "max_batch": self.max_batch}

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
            t._batch, t._index, t._state = batch, index, "running"
        self._running += 1
        self._running_jobs += len(members)
        self._cond.notify_all()  # the members stop waiting

    def _finish(self, batch: _Batch, outcomes: list) -> None:
        """The batch is over: record the outcomes, wake its members, give the slot back (once)."""
        with self._cond:
            if batch.outcomes is not None:
                return
            batch.outcomes = outcomes
            self._running -= 1
            self._running_jobs -= len(batch.tickets)
            self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - batch.started)
            self._cond.notify_all()
        batch.finished.set()


class _Batch:
    """Tickets that run together; tickets[0] is the leader, whose thread runs them."""

    def __init__(self, tickets: list[Ticket]):
        self.tickets = tickets
        self.started = time.monotonic()
        self.outcomes: list | None = None
        self.finished = threading.Event()


class Ticket:
    """One admitted request: `start` waits for a slot, `run` runs its job (in a batch), `done`
    (always, idempotent) gives its admission back.

    `job` is what `run_batch` gets for this request; `key` says which requests may share a batch
    (equal keys; None: never batched)."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._state = "admitted"
        self._batch: _Batch | None = None
        self._index = 0
        self.job = None
        self.key = None

    @property
    def batch_size(self) -> int:
        """How many requests run in this ticket's batch (after `start`)."""
        return len(self._batch.tickets) if self._batch else 0

    def start(self, deadline: float, job=None, key=None) -> None:
        """Wait in line until `deadline` (time.monotonic()) for a slot: this ticket's own, as the
        head of the line, or a place in the batch of a ticket ahead with the same `key`.

        Raises: Refused (shutting_down), NSTError deadline_exceeded."""
        a = self._admission
        self.job, self.key = job, key
        with a._cond:
            a._line.append(self)
            try:
                while self._batch is None and not (a._line[0] is self and a._running < a.max_running):
                    if draining():
                        raise shutting_down()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NSTError("the request waited in line past its deadline; try again later "
                                       "or ask for fewer steps", "deadline_exceeded")
                    a._cond.wait(min(left, 0.25))
            finally:
                if self in a._line:  # a member was taken out of the line by its leader
                    a._line.remove(self)
                a._cond.notify_all()
            if self._batch is None:
                a._take_slot(self)

    def run(self, run_batch):
        """This ticket's outcome, after `start`: what `run_batch` returned for its job (a result,
        or the exception that stopped it alone), or the exception that failed the whole batch.
        The leader calls `run_batch([jobs of the batch])`; the others wait for it."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("Ticket.run before Ticket.start")
        if batch.tickets[0] is self:
            outcomes: list = []
            try:
                outcomes = list(run_batch([t.job for t in batch.tickets]))
                if len(outcomes) != len(batch.tickets):
                    raise RuntimeError(f"run_batch gave {len(outcomes)} outcomes for {len(batch.tickets)} jobs")
            except BaseException as e:  # noqa: BLE001  (every job of the batch failed; each is told)
                outcomes = [e] * len(batch.tickets)
            finally:
                self._admission._finish(batch, outcomes)
        else:
            batch.finished.wait()
        return batch.outcomes[self._index]

    def done(self) -> None:
        a = self._admission
        with a._cond:
            if self._state == "done":
                return
            batch = self._batch
            if batch is not None and batch.tickets[0] is self and batch.outcomes is None:
                # a leader that will not run its batch (e.g. its thread did not start): fail it
                a._finish(batch, [RuntimeError("the batch was not run")] * len(batch.tickets))
            a._admitted -= 1
            self._state = "done"
            a._cond.notify_all()


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` says the host or the accelerator ran out of memory (XLA RESOURCE_EXHAUSTED)."""
    if isinstance(e, MemoryError):
        return True
    if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
        return False
    return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()


# --- the server ------------------------------------------------------------------

def threads() -> int:
    """gunicorn threads: functions-framework's 4 per CPU, but at least one per admitted
    request plus a few for /healthz and refusals, which must not wait behind queued jobs."""
    if os.environ.get("THREADS"):
        return max(1, int(env_number("THREADS", 1)))
    return max(4 * (os.cpu_count() or 1), max_concurrent() + max_queue() + 4)


def draining_worker():
    """gunicorn's threaded worker, draining on SIGTERM (see the module's docstring)."""
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
            super().init_process()

        def handle_exit(self, sig, frame):
            if not draining():
                begin_drain()
                self.log.info("SIGTERM: draining for up to %g s", drain_s())
                threading.Thread(target=self._drain, name="neurastyle-drain", daemon=True).start()

        def _drain(self):
            time.sleep(0.2)  # let requests accepted just now get their 503
            stop = drain_deadline() + 2  # jobs are stopped at drain_deadline(); time to answer
            while self._active and time.monotonic() < stop:
                time.sleep(0.1)
            ThreadWorker.handle_exit(self, None, None)  # gunicorn's own stop: close idle connections, exit

    return DrainingWorker


def serve(host: str = "127.0.0.1", port: int = 8080, debug: bool = False) -> None:
    """Serve the function and its web page at http://host:port/ until interrupted."""
    import functions_framework
    from functions_framework._http import create_server  # what `functions-framework` itself uses

    app = functions_framework.create_app(target=TARGET, source=str(Path(__file__).resolve().parent / "main.py"))
    print(f"NeuraStyle on http://{host}:{port}/  (stylize: POST /stylize, health: GET /healthz)", flush=True)
    options = {} if debug else {
        "threads": threads(),
        "worker_class": draining_worker(),
        "graceful_timeout": math.ceil(drain_s()) + 5,
    }
    create_server(app, debug, **options).run(host, port)

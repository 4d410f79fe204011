"""Admission control: at most a few batches of work at once and a few more requests in line,
the rest refused at once (429 with Retry-After); requests of one key run as one batch; the
drain on SIGTERM refuses new work and sets when running work must stop."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from nst_jax import errors

RETRY_AFTER_MAX_S = 600
LATE_GRACE_S = 1.0  # past its deadline, a request waits this long for its job's own report


class Refused(errors.NSTError):
    """The server cannot take a request now; `retry_after` (seconds) says when to try again."""

    def __init__(self, message: str, code: str, retry_after: int):
        super().__init__(message, code)
        self.retry_after = retry_after


class Drain:
    """Whether the process is shutting down: from `begin` on, new work is refused and running
    work may go on until `deadline()`."""

    def __init__(self):
        self._deadline: float | None = None  # time.monotonic() by which running jobs must stop

    def begin(self, seconds: float) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + seconds

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    def deadline(self) -> float:
        return math.inf if self._deadline is None else self._deadline

    @staticmethod
    def refusal() -> Refused:
        return Refused("the server is shutting down; try again (another instance will answer)",
                       "shutting_down", retry_after=1)



# --- admission ------------------------------------------------------------------

class Ticket:
    """One admitted request, as `Admission` tracks it. `job` is what the batch runner gets
    for this request; `key` says which requests may share a batch (equal keys; None: never)."""

    def __init__(self):
        self.state = "admitted"  # then "waiting", "running", "done"
        self.batch: _Batch | None = None
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
        for t in members:
            t.batch, t.state = batch, "running"
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

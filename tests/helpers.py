"""Helpers of the serving tests (HTTP, reliability, fuzz, live servers): request bodies, answer
checks, fake batch runners, and waiting for threads. The PNG/Base64 helpers are those of
liveserver.py (shared with the benchmarks that start servers), imported from here too."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
import time

import numpy as np
from liveserver import b64, decode_png, encode, png  # noqa: F401  (decode_png, encode: for the tests)

from nst_jax import Progress

SMALL = {"size": 32, "steps": 1}  # every square image below works at 32x32: one compiled shape


CONTENT = b64(png())
STYLE = "data:image/png;base64," + b64(png((20, 40, 220)))


def body(content: str = CONTENT, style: str = STYLE, stream: bool | None = None, **options) -> dict:
    """A stylize request of SMALL options, overridden by `options`."""
    payload = {"content_image": content, "style_image": style, "options": {**SMALL, **options}}
    if stream is not None:
        payload["stream"] = stream
    return payload


def assert_error(response, status: int, code: str) -> dict:
    """The answer is the JSON error `code` with `status`, a message and no traceback; returns it."""
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    return error


def ndjson(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines() if line.strip()]


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_every_place_free(admission) -> None:
    """Every ticket was given back: all of `admission`'s places can be taken, and no more."""
    from functions.admission import Refused

    tickets = [admission.admit() for _ in range(admission.max_running + admission.max_waiting)]
    try:
        admission.admit()
    except Refused:
        pass
    else:
        raise AssertionError("admitted more tickets than there are places")
    for t in tickets:
        admission.release(t)


def in_threads(n: int, call) -> list[concurrent.futures.Future]:
    pool = concurrent.futures.ThreadPoolExecutor(n)
    futures = [pool.submit(call) for _ in range(n)]
    pool.shutdown(wait=False)
    return futures


# --- fake batch runners --------------------------------------------------------------------

def per_job(fn, fails_batch: type[BaseException] | tuple[type[BaseException], ...] = ()):
    """A fake `stylize_batch(jobs, model=None)` made of a per-job fake
    `fn(content, styles, options, model=None, on_progress=None)`, run for each job in turn.
    A job's outcome is what `fn` returns for it, or the exception it raises (stopping that job
    alone), except exceptions of the `fails_batch` types (e.g. out of memory), which fail the
    whole call as they would a real batch."""
    def stylize_batch(jobs, model=None):
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(fn(job.content, job.styles, job.options, model=model, on_progress=job.on_progress))
            except fails_batch:
                raise
            except Exception as e:  # noqa: BLE001  (the job's outcome, as stylize_batch gives it)
                outcomes.append(e)
        return outcomes
    return stylize_batch


def progress(step: int, total: int) -> Progress:
    return Progress(step=step, total=total, scale=0, scales=1, shape=(32, 32), loss=1.0, elapsed=0.0)


class FakeStylize:
    """Stands in for `stylize` (as `per_job(fake)`): reports `options.steps` steps, `step_s`
    apart, unless `gate` holds it before the first one. Records how the run ended."""

    def __init__(self, step_s: float = 0.01):
        self.step_s = step_s
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Semaphore(0)
        self.outcomes: list = []

    def __call__(self, content, styles, options, model=None, on_progress=None):
        self.started.release()
        self.gate.wait(30)
        try:
            for step in range(1, options.steps + 1):
                time.sleep(self.step_s)
                on_progress(progress(step, options.steps))
        except BaseException as e:
            self.outcomes.append(e)
            raise
        self.outcomes.append("done")
        return np.zeros((32, 32, 3), np.float32)


def lockstep(step_s: float = 0.02):
    """A fake `stylize_batch` that steps its jobs together, as the real one does: a job whose
    `on_progress` raises stops alone, the others go on."""
    def stylize_batch(jobs, model=None):
        outcomes: list = [None] * len(jobs)
        steps = jobs[0].options.steps
        for step in range(1, steps + 1):
            time.sleep(step_s)
            for i, job in enumerate(jobs):
                if outcomes[i] is None:
                    try:
                        job.on_progress(progress(step, steps))
                    except Exception as e:  # noqa: BLE001
                        outcomes[i] = e
            if all(o is not None for o in outcomes):
                break
        return [np.zeros((32, 32, 3), np.float32) if o is None else o for o in outcomes]
    return stylize_batch


class BatchSpy:
    """Wraps a `stylize_batch` (real or fake): records the options of each call's jobs and their
    outcomes. The first call waits for `first` (so a request holds the slot while others queue
    up); while `resume` is clear, every job's reports from step 2 on wait for it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list] = []  # per call, the jobs' options
        self.outcomes: list[list] = []
        self.started = threading.Semaphore(0)
        self.first = threading.Event()
        self.resume = threading.Event()
        self.resume.set()

    def __call__(self, jobs, model=None):
        call = len(self.calls)
        self.calls.append([job.options for job in jobs])
        self.started.release()
        if call == 0:
            assert self.first.wait(30)

        def held(job):
            def on_progress(p):
                if p.step >= 2:
                    self.resume.wait(30)
                job.on_progress(p)
            return dataclasses.replace(job, on_progress=on_progress)

        outcomes = self.inner([held(job) for job in jobs], model)
        self.outcomes.append(outcomes)
        return outcomes

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.calls]


def hold_the_slot(function, run_batch, **settings):
    """Serve with a `BatchSpy` around `run_batch` and start one request that holds the only
    slot until `spy.first` is set. Returns (client, service, spy, that request's future)."""
    spy = BatchSpy(run_batch)
    client, service = function(run_jobs=spy, **settings)
    first = in_threads(1, lambda: client.post("/stylize", json=body()))
    assert spy.started.acquire(timeout=30)
    return client, service, spy, first


def queue_up(client, service, bodies) -> list[concurrent.futures.Future]:
    """Post `bodies` one after the other, each once the one before is waiting in line."""
    futures = []
    for b in bodies:
        waiting = service.admission.stats()["waiting"]
        futures += in_threads(1, lambda b=b: client.post("/stylize", json=b, buffered=not b.get("stream")))
        wait_for(lambda: service.admission.stats()["waiting"] == waiting + 1, what="a request in line")
    return futures

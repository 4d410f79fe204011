"""Reliability of the HTTP function in-process: admission over HTTP (429 busy + Retry-After),
batching, deadlines (504), out of memory (503), client disconnects and the drain. A fake
batch runner stands in where timing matters. Admission alone: test_admission.py; real
servers: test_live_server.py."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time

import numpy as np
from helpers import (FakeStylize, assert_error, b64, body, decode_png, hold_the_slot, in_threads, lockstep, ndjson,
                     per_job, png, queue_up, wait_for)

from functions import serving
from nst_jax import errors
from nst_jax.errors import is_out_of_memory
from nst_jax.transfer import stylize_batch


def test_a_full_line_is_429_busy_with_retry_after(function):
    fake = FakeStylize()
    fake.gate.clear()
    client, service = function(max_concurrent=1, max_queue=1, run_jobs=per_job(fake))
    running = in_threads(1, lambda: client.post("/stylize", json=body()))
    assert fake.started.acquire(timeout=10)
    waiting = in_threads(1, lambda: client.post("/stylize", json=body(stream=True)))
    wait_for(lambda: service.admission.stats()["waiting"] == 1, what="a request in line")
    refused = [client.post("/stylize", json=body()), client.post("/stylize", json=body(stream=True))]
    for r in refused:
        assert_error(r, 429, "busy")
        assert int(r.headers["Retry-After"]) >= 1
    health = client.get("/healthz")  # answered while the slots are taken
    assert health.status_code == 200 and health.get_json()["load"]["waiting"] == 1
    fake.gate.set()
    assert running[0].result(30).status_code == 200
    assert ndjson(waiting[0].result(30))[-1]["type"] == "result"
    assert client.post("/stylize", json=body()).status_code == 200
    assert service.admission.stats()["running"] == service.admission.stats()["waiting"] == 0


def test_bad_requests_give_their_place_back(function):
    client, service = function(max_concurrent=1, max_queue=0, run_jobs=per_job(FakeStylize()))
    for bad in (b"{", json.dumps({**body(), "content_image": "!!"}).encode(),
                json.dumps(body(size=1)).encode()):
        assert client.post("/stylize", data=bad, content_type="application/json").status_code == 400
    assert client.post("/stylize", json=body()).status_code == 200


def test_requests_still_sending_their_bodies_are_bounded_apart_from_the_line(function):
    client, service = function(max_uploads=1, max_queue=0)
    assert service.uploads.acquire(blocking=False)  # one upload under way
    r = client.post("/stylize", json=body())
    assert "sending their bodies" in assert_error(r, 429, "busy")["message"]
    service.uploads.release()
    assert client.post("/stylize", json=body()).status_code == 200


# --- batching ---------------------------------------------------------------------------

def test_compatible_waiting_requests_run_as_one_batch_each_with_its_own_answer(function):
    client, service, spy, first = hold_the_slot(function, stylize_batch, max_batch=4)  # the real one
    # one size bucket (32 x 32 working shape), three output shapes; different seeds too
    sizes = [(40, 36), (40, 30), (30, 40)]  # PIL (width, height)
    queued = queue_up(client, service, [body(content=b64(png(size=size, seed=i)), seed=i, steps=2)
                                       for i, size in enumerate(sizes)])
    assert client.get("/healthz").get_json()["load"]["max_batch"] == 4
    spy.first.set()
    assert first[0].result(60).status_code == 200
    answers = [f.result(120) for f in queued]
    assert spy.sizes == [1, 3]  # the three that waited ran together
    assert [o.seed for o in spy.calls[1]] == [0, 1, 2]  # in the order they came
    expected = [(32, 29), (32, 24), (24, 32)]
    for r, (width, height) in zip(answers, expected):
        assert r.status_code == 200, r.data
        out = r.get_json()
        assert (out["width"], out["height"]) == (width, height) and out["steps"] == 2
        image = decode_png(out["image"])
        assert image.size == (width, height)
    for outcome, (width, height) in zip(spy.outcomes[1], expected):
        assert isinstance(outcome, np.ndarray) and outcome.shape == (height, width, 3)
    assert service.admission.stats()["running"] == service.admission.stats()["running_jobs"] == 0


def test_the_server_pads_its_batches_to_the_sizes_a_warmup_builds(function, monkeypatch):
    runs = []
    monkeypatch.setattr(serving, "stylize_batch",
                        lambda jobs, model, batch_size=None: runs.append((len(jobs), batch_size)) or [None] * len(jobs))
    _, service = function(max_batch=6)  # no batch runner given: the real one
    for n in range(1, 7):
        service.run_jobs(["job"] * n, None)
    assert runs == [(1, 1), (2, 2), (3, 4), (4, 4), (5, 6), (6, 6)]


def test_incompatible_requests_are_not_batched_together(function):
    client, service, spy, first = hold_the_slot(function, per_job(FakeStylize()), max_batch=4)
    lbfgs = body(size=32, optimizer="lbfgs")
    queued = queue_up(client, service, [body(size=32), lbfgs, body(size=64), body(size=32), lbfgs,
                                       body(size=32, steps=2)])
    spy.first.set()
    assert first[0].result(30).status_code == 200
    assert all(f.result(30).status_code == 200 for f in queued)
    # the two 32 px, 1 step Adam requests together; the 64 px one, the 2-step one and each
    # L-BFGS one (never batched, even with an equal request) alone, in order
    assert [[(o.size, o.steps, o.optimizer) for o in call] for call in spy.calls] == [
        [(32, 1, "adam")], [(32, 1, "adam"), (32, 1, "adam")], [(32, 1, "lbfgs")], [(64, 1, "adam")],
        [(32, 1, "lbfgs")], [(32, 2, "adam")]]
    assert service.admission.stats()["running"] == 0


def test_in_a_batch_a_client_that_leaves_stops_only_its_own_job(function):
    client, service, spy, first = hold_the_slot(function, stylize_batch, max_batch=4)  # the real one
    spy.resume.clear()  # the batch will pause at step 2
    leaving, streaming, plain = queue_up(client, service, [
        body(stream=True, steps=20, content=b64(png(seed=1))),  # the head of the line: it runs the batch
        body(stream=True, steps=20, content=b64(png(seed=2))),
        body(steps=20, content=b64(png(seed=3))),
    ])
    spy.first.set()
    assert first[0].result(60).status_code == 200
    r = leaving.result(60)
    assert json.loads(next(iter(r.response)))["type"] == "progress"
    stats = service.admission.stats()
    assert stats["running"] == 1 and stats["running_jobs"] == 3  # one slot, three requests
    r.close()  # the connection drops
    spy.resume.set()
    lines = ndjson(streaming.result(120))
    assert lines[-1]["type"] == "result" and lines[-1]["steps"] == 20
    assert [line["step"] for line in lines[:-1]] == list(range(1, 21))  # its own progress, all of it
    done = plain.result(120)
    assert done.status_code == 200 and done.get_json()["steps"] == 20
    assert spy.sizes == [1, 3]
    left, *others = spy.outcomes[1]
    assert isinstance(left, errors.Cancelled)
    assert all(isinstance(o, np.ndarray) for o in others)
    assert service.admission.stats()["running"] == service.admission.stats()["running_jobs"] == 0


def test_max_batch_1_runs_one_request_at_a_time(function):
    client, service, spy, first = hold_the_slot(function, per_job(FakeStylize()), max_batch=1)
    queued = queue_up(client, service, [body(), body(stream=True), body()])
    assert client.get("/healthz").get_json()["load"]["max_batch"] == 1
    spy.first.set()
    assert first[0].result(30).status_code == 200
    assert [f.result(30).status_code for f in queued] == [200] * 3
    assert spy.sizes == [1, 1, 1, 1]


def test_a_failed_batch_fails_every_request_in_it(function):
    from jax.errors import JaxRuntimeError

    fake = FakeStylize()

    def oom_in_batches(content, styles, options, model=None, on_progress=None):
        if options.seed == 1:
            raise JaxRuntimeError(OOM)
        return fake(content, styles, options, model, on_progress)

    client, service, spy, first = hold_the_slot(function, per_job(oom_in_batches, fails_batch=JaxRuntimeError),
                                                max_batch=4)
    queued = queue_up(client, service, [body(seed=0), body(stream=True, seed=1), body(seed=2)])
    spy.first.set()
    assert first[0].result(30).status_code == 200
    assert_error(queued[0].result(30), 503, "out_of_memory")
    assert ndjson(queued[1].result(30))[-1]["error"]["code"] == "out_of_memory"
    assert_error(queued[2].result(30), 503, "out_of_memory")
    assert spy.sizes == [1, 3]
    assert service.admission.stats()["running"] == 0
    assert client.post("/stylize", json=body()).status_code == 200


def test_in_a_batch_only_the_request_past_its_deadline_stops(function):
    client, service, spy, first = hold_the_slot(function, lockstep(step_s=0.02), max_batch=4, deadline_s=4)
    early = queue_up(client, service, [body(steps=130)])[0]  # deadline in 4 s
    time.sleep(2)
    late = queue_up(client, service, [body(steps=130)])[0]  # in 6 s; the batch ends in ~4.6 s
    spy.first.set()
    assert first[0].result(30).status_code == 200
    error = assert_error(early.result(30), 504, "deadline_exceeded")
    assert "stopped after" in error["message"]
    done = late.result(30)
    assert done.status_code == 200 and done.get_json()["steps"] == 130
    assert spy.sizes == [1, 2]
    assert isinstance(spy.outcomes[1][0], errors.Cancelled) and isinstance(spy.outcomes[1][1], np.ndarray)
    assert service.admission.stats()["running"] == 0


def test_a_batch_leader_past_its_deadline_answers_while_the_batch_goes_on(function):
    """The leader's thread used to run the batch, so its 504 waited for the batch's last job,
    up to about twice the deadline after it came."""
    batch_goes_on = threading.Event()
    steps_together = lockstep(step_s=0.02)

    def run(jobs, model=None):
        def held(job):  # once any job stopped, the others' next reports wait for the test
            def on_progress(p):
                if leader_stopped.is_set():
                    batch_goes_on.wait(30)
                try:
                    job.on_progress(p)
                except Exception:
                    leader_stopped.set()
                    raise
            return dataclasses.replace(job, on_progress=on_progress)
        return steps_together([held(job) for job in jobs], model)

    leader_stopped = threading.Event()
    client, service, spy, first = hold_the_slot(function, run, max_batch=4, deadline_s=2)
    leader = queue_up(client, service, [body(steps=1000)])[0]  # deadline in 2 s
    time.sleep(1)
    member = queue_up(client, service, [body(steps=1000)])[0]  # in 3 s
    spy.first.set()
    assert first[0].result(30).status_code == 200
    try:
        error = assert_error(leader.result(20), 504, "deadline_exceeded")  # while the member still runs
        assert "stopped after" in error["message"] and not member.done()
    finally:
        batch_goes_on.set()
    assert_error(member.result(30), 504, "deadline_exceeded")
    assert spy.sizes == [1, 2]
    wait_for(lambda: service.admission.stats()["running"] == 0, what="the batch to end")


# --- deadlines -------------------------------------------------------------------------

def test_past_the_deadline_the_work_stops_and_the_answer_is_504(function):
    fake = FakeStylize(step_s=0.02)
    client, service = function(deadline_s=0.5, run_jobs=per_job(fake))
    start = time.monotonic()
    error = assert_error(client.post("/stylize", json=body(steps=1000)), 504, "deadline_exceeded")
    assert time.monotonic() - start < 5 and "0.5 s" in error["message"]
    assert isinstance(fake.outcomes[-1], errors.Cancelled)
    lines = ndjson(client.post("/stylize", json=body(stream=True, steps=1000)))
    assert lines[-1]["type"] == "error" and lines[-1]["error"]["code"] == "deadline_exceeded"
    assert 1 < len(lines) < 100
    assert service.admission.stats()["running"] == 0


def test_time_in_line_counts_against_the_deadline(function):
    fake = FakeStylize()
    fake.gate.clear()  # the first request holds the slot without reporting progress
    client, service = function(deadline_s=1, run_jobs=per_job(fake))
    first = in_threads(1, lambda: client.post("/stylize", json=body()))
    assert fake.started.acquire(timeout=10)
    start = time.monotonic()
    error = assert_error(client.post("/stylize", json=body()), 504, "deadline_exceeded")
    assert 0.9 < time.monotonic() - start < 5 and "line" in error["message"]
    fake.gate.set()
    first[0].result(30)


def test_a_real_stylization_stops_at_its_deadline(function):
    client, service = function(deadline_s=3)
    start = time.monotonic()
    assert_error(client.post("/stylize", json=body(steps=1000)), 504, "deadline_exceeded")
    assert time.monotonic() - start < 30
    assert client.post("/stylize", json=body()).status_code == 200


# --- faults ------------------------------------------------------------------------------

OOM = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 68719476736 bytes."


def test_running_out_of_device_memory_is_503_and_serving_goes_on(function):
    from jax.errors import JaxRuntimeError

    runner = {"jobs": None}
    client, service = function(run_jobs=lambda jobs, model=None: runner["jobs"](jobs, model))

    def raising(error):
        def stylize(*args, **kwargs):
            raise error
        return per_job(stylize, fails_batch=type(error))  # the whole batch fails

    runner["jobs"] = raising(JaxRuntimeError(OOM))
    r = client.post("/stylize", json=body(size=1024))
    error = assert_error(r, 503, "out_of_memory")
    assert "smaller size" in error["message"] and "RESOURCE_EXHAUSTED" not in r.get_data(as_text=True)
    assert ndjson(client.post("/stylize", json=body(stream=True)))[-1]["error"]["code"] == "out_of_memory"
    runner["jobs"] = raising(MemoryError())  # host memory
    assert_error(client.post("/stylize", json=body()), 503, "out_of_memory")
    runner["jobs"] = stylize_batch
    assert client.post("/stylize", json=body()).status_code == 200
    assert service.admission.stats()["running"] == 0


def test_other_runtime_errors_are_not_taken_for_out_of_memory():
    from jax.errors import JaxRuntimeError

    assert is_out_of_memory(JaxRuntimeError(OOM))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(JaxRuntimeError("INVALID_ARGUMENT: bad shape"))
    assert not is_out_of_memory(RuntimeError(OOM))  # not from XLA


def test_a_stream_whose_client_leaves_frees_its_slot(function):
    fake = FakeStylize(step_s=0.02)
    client, service = function(max_concurrent=1, max_queue=0, run_jobs=per_job(fake))
    r = client.post("/stylize", json=body(stream=True, steps=1000), buffered=False)
    assert json.loads(next(iter(r.response)))["type"] == "progress"
    assert_error(client.post("/stylize", json=body()), 429, "busy")  # the slot is taken meanwhile
    r.close()  # the connection drops
    wait_for(lambda: fake.outcomes, what="the job to stop")
    assert isinstance(fake.outcomes[0], errors.Cancelled)
    assert service.admission.stats()["running"] == 0
    assert client.post("/stylize", json=body()).status_code == 200


def test_a_plain_request_whose_client_leaves_stops_its_work(function):
    fake = FakeStylize(step_s=0.02)
    client, service = function(run_jobs=per_job(fake))
    ours, theirs = socket.socketpair()  # the connection, as the server sees it, and the client's end
    answer = in_threads(1, lambda: client.post("/stylize", json=body(steps=1000),
                                               environ_overrides={"gunicorn.socket": ours}))
    assert fake.started.acquire(timeout=10)
    theirs.close()
    wait_for(lambda: fake.outcomes, what="the job to stop")
    assert isinstance(fake.outcomes[0], errors.Cancelled)
    assert answer[0].result(30).status_code == 499
    assert service.admission.stats()["running"] == 0
    ours.close()


def test_an_answer_closed_before_it_is_read_still_ends_the_work(function):
    fake = FakeStylize(step_s=0.02)
    client, service = function(max_concurrent=1, max_queue=0, run_jobs=per_job(fake))
    r = client.post("/stylize", json=body(stream=True, steps=1000), buffered=False)
    r.close()  # not a line read
    wait_for(lambda: fake.outcomes, what="the job to stop")
    assert service.admission.stats()["running"] == 0


def test_draining_refuses_new_work_and_stops_running_work_at_its_end(function):
    fake = FakeStylize(step_s=0.02)
    client, service = function(run_jobs=per_job(fake))
    running = in_threads(1, lambda: client.post("/stylize", json=body(steps=1000)))
    assert fake.started.acquire(timeout=10)
    service.drain.begin(0.5)
    r = client.post("/stylize", json=body())
    assert_error(r, 503, "shutting_down")
    assert r.headers["Retry-After"] == "1"
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["ready"] is False
    assert health.get_json()["error"]["code"] == "shutting_down"
    assert client.get("/").status_code == 200  # the page is still served
    assert_error(running[0].result(30), 503, "shutting_down")  # stopped at the end of the drain
    assert isinstance(fake.outcomes[-1], errors.Cancelled)

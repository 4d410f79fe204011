"""Admission control on its own (functions/admission.py, no HTTP): slots, the
line, refusals, deadlines in line, draining, and batches of one key."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import assert_every_place_free, wait_for

from functions.admission import Admission, Drain, Refused
from nst_jax import errors


def test_admission_runs_n_queues_q_and_refuses_the_rest():
    a = Admission(max_running=1, max_waiting=2)
    first, second, third = a.admit(), a.admit(), a.admit()
    with pytest.raises(Refused) as refused:
        a.admit()
    assert refused.value.code == "busy" and refused.value.retry_after >= 1
    a.wait_turn(first, time.monotonic() + 5)
    order = []

    def wait(ticket, name):
        a.wait_turn(ticket, time.monotonic() + 10)
        order.append(name)
        a.release(ticket)

    threads = [threading.Thread(target=wait, args=(t, n)) for t, n in ((second, "second"), (third, "third"))]
    threads[0].start()
    wait_for(lambda: a.stats()["waiting"] == 1)
    threads[1].start()
    wait_for(lambda: a.stats()["waiting"] == 2)
    assert a.stats() == {"running": 1, "running_jobs": 1, "waiting": 2, "max_running": 1, "max_waiting": 2,
                         "max_batch": 1}
    a.release(first)
    a.release(first)  # idempotent
    for t in threads:
        t.join(10)
    assert order == ["second", "third"]  # first come, first served
    assert a.stats()["running"] == a.stats()["waiting"] == 0
    a.release(a.admit())  # the refused one's place is free again


def test_admission_waiting_has_a_deadline_and_stops_when_draining():
    drain = Drain()
    a = Admission(max_running=1, max_waiting=2, drain=drain)
    running = a.admit()
    a.wait_turn(running, time.monotonic() + 5)
    waiting = a.admit()
    start = time.monotonic()
    with pytest.raises(errors.NSTError) as late:
        a.wait_turn(waiting, time.monotonic() + 0.3)
    assert late.value.code == "deadline_exceeded" and 0.25 < time.monotonic() - start < 5
    a.release(waiting)
    queued = a.admit()
    result = {}

    def wait():
        try:
            a.wait_turn(queued, time.monotonic() + 30)
        except Refused as e:
            result["error"] = e

    t = threading.Thread(target=wait)
    t.start()
    wait_for(lambda: a.stats()["waiting"] == 1)
    drain.begin(10)
    t.join(5)
    assert result["error"].code == "shutting_down"
    with pytest.raises(Refused):
        a.admit()
    a.release(queued)
    a.release(running)
    assert a.stats()["running"] == a.stats()["waiting"] == 0


def test_admission_batches_waiting_tickets_of_one_key():
    a = Admission(max_running=1, max_waiting=5, max_batch=3)
    holder = a.admit()
    a.wait_turn(holder, time.monotonic() + 5, "h", key="k")
    outcomes = {}

    def go(job, key):
        waiting = a.stats()["waiting"]
        ticket = a.admit()
        def wait():
            try:
                a.wait_turn(ticket, time.monotonic() + 10, job, key)
                outcomes[job] = (len(ticket.batch.tickets), a.run(ticket, lambda jobs: [j.upper() for j in jobs]))
            finally:
                a.release(ticket)
        t = threading.Thread(target=wait)
        t.start()
        wait_for(lambda: a.stats()["waiting"] == waiting + 1, what=f"{job} in line")
        return t

    threads = [go(job, key) for job, key in (("a", "k"), ("b", "other"), ("c", "k"), ("d", "k"), ("e", None))]
    assert a.stats()["waiting"] == 5
    assert a.run(holder, lambda jobs: ["H"]) == "H"
    a.release(holder)
    for t in threads:
        t.join(10)
    assert outcomes == {"a": (3, "A"), "c": (3, "C"), "d": (3, "D"), "b": (1, "B"), "e": (1, "E")}
    assert a.stats()["running"] == a.stats()["running_jobs"] == a.stats()["waiting"] == 0
    assert_every_place_free(a)

    # a leader that gives its ticket back without running its batch fails the batch's members
    holder = a.admit()
    a.wait_turn(holder, time.monotonic() + 5)
    leader, member = a.admit(), a.admit()
    result = {}

    def member_waits():
        a.wait_turn(member, time.monotonic() + 10, "m", key="k")
        result["outcome"] = a.run(member, lambda jobs: ["never"] * len(jobs))
        a.release(member)

    starts = [threading.Thread(target=a.wait_turn, args=(leader, time.monotonic() + 10, "l", "k")),
              threading.Thread(target=member_waits)]
    starts[0].start()
    wait_for(lambda: a.stats()["waiting"] == 1)
    starts[1].start()
    wait_for(lambda: a.stats()["waiting"] == 2)
    a.release(holder)  # never ran: its slot is given back all the same
    starts[0].join(10)
    assert len(leader.batch.tickets) == 2
    a.release(leader)
    starts[1].join(10)
    assert isinstance(result["outcome"], RuntimeError)
    assert a.stats()["running"] == a.stats()["running_jobs"] == 0
    assert_every_place_free(a)

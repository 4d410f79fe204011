"""Each request's log line (functions/requestlog.py, written by functions/main.py), in-process:
what it says (status, trace, sizes, the work done, the error) and what it never holds (images,
paths, stack traces). A real server's line: test_client.py."""

from __future__ import annotations

import json
import logging
import re

import pytest
from helpers import CONTENT, STYLE, FakeStylize, assert_error, body, hold_the_slot, lockstep, per_job

from functions.requestlog import JsonFormatter, TextFormatter

TRACE_ID = "105445aa7843bc8bf206b12000100000"


@pytest.fixture
def lines(caplog):
    """lines() -> the request lines logged so far, as the JSON formatter writes them (project "proj")."""
    caplog.set_level(logging.INFO, "neurastyle")

    def request_lines() -> list[dict]:
        return [json.loads(JsonFormatter("proj").format(r)) for r in caplog.records if r.name == "neurastyle.request"]
    return request_lines


def sent(client, method: str, path: str, **kwargs):
    """The answer, read whole and closed (the line is written when the answer is closed)."""
    response = client.open(path, method=method, **kwargs)
    response.get_data()
    response.close()
    return response


def test_a_stylize_request_has_one_json_line_with_its_status_trace_sizes_and_work(client, lines):
    payload = json.dumps(body(steps=2)).encode()
    r = sent(client, "POST", "/stylize", data=payload, content_type="application/json",
             headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/7;o=1", "User-Agent": "tests/1.0"})
    assert r.status_code == 200
    [line] = lines()
    assert line["severity"] == "INFO" and line["message"].startswith("POST /stylize 200 ")
    http = line["httpRequest"]
    assert http["requestMethod"] == "POST" and http["requestUrl"].endswith("/stylize") and http["status"] == 200
    assert re.fullmatch(r"\d+\.\d{3}s", http["latency"])
    assert http["requestSize"] == str(len(payload)) and http["responseSize"] == str(len(r.data))
    assert http["userAgent"] == "tests/1.0" and http["remoteIp"] == "127.0.0.1"
    assert line["logging.googleapis.com/trace"] == f"projects/proj/traces/{TRACE_ID}"
    assert line["logging.googleapis.com/spanId"] == format(7, "016x")
    assert line["error"] is None
    work = line["work"]
    assert (work["size"], work["steps"], work["scales"], work["batch"]) == (32, 2, 1, 1)
    assert work["queued_s"] >= 0 and work["compile_s"] >= 0 and work["device"]
    assert work["budget_cut"] is False and work["deadline_cut"] is False
    text = json.dumps(line)
    for image in (CONTENT, STYLE.partition(",")[2], r.get_json()["image"]):
        assert image[:40] not in text  # no image data


def test_traceparent_gives_the_trace_and_without_a_project_it_is_bare(client, caplog):
    caplog.set_level(logging.INFO, "neurastyle")
    sent(client, "GET", "/healthz", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    [record] = [r for r in caplog.records if r.name == "neurastyle.request"]
    line = json.loads(JsonFormatter(None).format(record))
    assert line["logging.googleapis.com/trace"] == TRACE_ID
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert line["httpRequest"]["status"] == 200 and "work" not in line


def test_malformed_trace_headers_are_left_out(client, lines):
    sent(client, "GET", "/healthz", headers={"X-Cloud-Trace-Context": "not-a-trace", "traceparent": "00-zz"})
    assert "logging.googleapis.com/trace" not in lines()[0]


def test_a_bad_request_has_its_line_with_the_error_code(client, lines):
    r = sent(client, "POST", "/stylize", json=body(size="huge"), headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    assert_error(r, 400, "invalid_option")
    [line] = lines()
    assert line["severity"] == "WARNING" and line["error"] == "invalid_option"
    assert line["httpRequest"]["status"] == 400 and line["logging.googleapis.com/trace"].endswith(TRACE_ID)
    assert "work" not in line  # refused before any work


def test_a_busy_refusal_has_its_line(function, lines):
    fake = FakeStylize()
    client, service, spy, first = hold_the_slot(function, per_job(fake), max_queue=0)
    r = sent(client, "POST", "/stylize", json=body())
    assert_error(r, 429, "busy")
    spy.first.set()
    assert first[0].result(timeout=30).status_code == 200
    busy = [line for line in lines() if line["httpRequest"]["status"] == 429]
    assert len(busy) == 1 and busy[0]["error"] == "busy" and busy[0]["severity"] == "WARNING"


def test_unknown_paths_and_flask_s_own_answers_have_their_line(client, lines):
    assert_error(sent(client, "GET", "/no-such-file.txt"), 404, "not_found")
    assert_error(sent(client, "POST", "/config"), 405, "method_not_allowed")
    assert [(line["httpRequest"]["status"], line["error"]) for line in lines()] == [
        (404, "not_found"), (405, "method_not_allowed")]


def test_a_streamed_answer_is_logged_when_its_stream_ends(function, lines):
    client, _ = function(run_jobs=lockstep())
    r = client.post("/stylize", json=body(steps=3, stream=True), buffered=False)
    stream = r.response
    first = next(iter(stream))
    assert b'"progress"' in (first if isinstance(first, bytes) else first.encode())
    assert lines() == []  # still streaming
    rest = b"".join(c if isinstance(c, bytes) else c.encode() for c in stream)
    r.close()
    [line] = lines()
    assert line["httpRequest"]["status"] == 200
    assert line["httpRequest"]["responseSize"] == str(len(first) + len(rest))
    assert line["work"]["steps"] == 3 and line["error"] is None


def test_a_deadline_cut_is_said_and_is_an_error(function, lines):
    client, _ = function(run_jobs=per_job(FakeStylize(step_s=0.1)), deadline_s=0.3)
    assert_error(sent(client, "POST", "/stylize", json=body(steps=50)), 504, "deadline_exceeded")
    [line] = lines()
    assert line["severity"] == "ERROR" and line["error"] == "deadline_exceeded"
    assert line["work"]["deadline_cut"] is True and 0 < line["work"]["steps"] < 50


def test_an_internal_error_s_line_has_no_detail(function, caplog, lines):
    def fails(*args, **kwargs):
        raise RuntimeError("secret detail in /srv/app/file.py")

    client, _ = function(run_jobs=per_job(fails))
    assert_error(sent(client, "POST", "/stylize", json=body()), 500, "internal")
    [line] = lines()
    assert line["severity"] == "ERROR" and line["error"] == "internal"
    text = json.dumps(line)
    assert "secret detail" not in text and "Traceback" not in text and "/srv/app" not in text
    assert "secret detail" in caplog.text  # the operator's own record has it


def test_the_text_format_is_one_readable_line(client, caplog):
    caplog.set_level(logging.INFO, "neurastyle")
    sent(client, "POST", "/stylize", json=body(), headers={"X-Cloud-Trace-Context": TRACE_ID})
    [record] = [r for r in caplog.records if r.name == "neurastyle.request"]
    text = TextFormatter().format(record)
    assert "\n" not in text
    assert text.startswith("INFO neurastyle.request: POST /stylize 200 ")
    assert "size=32" in text and "steps=1" in text and f"trace={TRACE_ID}" in text

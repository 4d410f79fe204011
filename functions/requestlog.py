"""The function's log: one structured line per request, in the format serverless platforms
parse (Cloud Logging's structured JSON: ``severity``, ``message``, ``httpRequest``, the trace),
or plain text on a terminal.

`configure(log_format, project)` sets up the standard `logging` machinery once per process: a
handler on stdout whose formatter writes JSON or text (`Settings.log_format`: JSON where
``K_SERVICE`` is set (Cloud Run) or ``NEURASTYLE_LOG_FORMAT=json``). Every record of the ``neurastyle`` loggers goes through it; `log_request` writes the request's
line. A line never holds a request's images, a file path or a stack trace: its fields are
the request's head (method, URL, sizes, user agent, address, trace), status, timings and the
`Work` summary (numbers and names).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping

log = logging.getLogger("neurastyle.request")

TRACE = "logging.googleapis.com/trace"
SPAN = "logging.googleapis.com/spanId"
USER_AGENT_MAX = 300  # characters of a User-Agent kept (the header is the client's to fill)
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")  # X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")  # W3C


def configure(log_format: str, project: str | None = None) -> None:
    """The process's log handler on stdout, writing `log_format` ("json", with trace ids of
    `project`, or "text"); the ``neurastyle`` loggers at INFO. Where logging is set up already
    (a host application, pytest), it is kept."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(project) if log_format == "json" else TextFormatter())
    logging.basicConfig(handlers=[handler])
    logging.getLogger("neurastyle").setLevel(logging.INFO)


class JsonFormatter(logging.Formatter):
    """A record as one line of Cloud Logging's structured JSON. The trace becomes
    ``projects/PROJECT/traces/TRACE`` where the project is known, else the bare trace id."""

    def __init__(self, project: str | None = None):
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage(),
                 "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
                 "logger": record.name}
        if record.exc_info:  # an operator's record (an internal error), never a request's line
            entry["message"] += "\n" + self.formatException(record.exc_info)
        fields = dict(getattr(record, "fields", {}))
        if TRACE in fields and self.project:
            fields[TRACE] = f"projects/{self.project}/traces/{fields[TRACE]}"
        entry.update(fields)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message``, then a request line's work as key=value."""

    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", {})
        extra = {**fields.get("work", {}), "trace": fields.get(TRACE)}
        return text + "".join(f" {k}={v}" for k, v in extra.items() if v is not None)


def trace(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace fields of a request's headers: X-Cloud-Trace-Context (as Google's front end
    sets it), else W3C traceparent; none where neither is well formed."""
    if m := _CLOUD_TRACE.match(headers.get("X-Cloud-Trace-Context", "")):
        return {TRACE: m[1].lower(), **({SPAN: format(int(m[2]), "016x")} if m[2] else {})}
    if m := _TRACEPARENT.match(headers.get("traceparent", "").strip()):
        return {TRACE: m[1], SPAN: m[2]}
    return {}


def severity(status: int, error: str | None, error_status: int | None) -> int:
    """ERROR for what the server failed at (5xx), WARNING for refusals and bad requests (4xx),
    INFO otherwise; a streamed answer is judged by the error it ended with, if any."""
    effective = error_status if error else status
    return logging.ERROR if effective >= 500 else logging.WARNING if effective >= 400 else logging.INFO


def log_request(http_request: dict, trace_fields: dict, error: str | None = None,
                error_status: int | None = None, work: dict | None = None) -> None:
    """Write a request's line. `http_request` is Cloud Logging's HttpRequest (`http_request()`),
    `work` what the request did (`serving.Work.fields()`), `error` the code it was answered with."""
    fields = {"httpRequest": http_request, **trace_fields, "error": error}
    if work:
        fields["work"] = work
    path = urllib.parse.urlsplit(http_request.get("requestUrl", "")).path or "-"
    message = (f"{http_request['requestMethod']} {path} {http_request['status']} {http_request['latency']}"
               + (f" {error}" if error else ""))
    log.log(severity(http_request["status"], error, error_status), "%s", message, extra={"fields": fields})


def http_request(method: str, url: str | None, status: int, latency_s: float, request_size: int | None,
                 response_size: int | None, user_agent: str | None, remote_ip: str | None) -> dict:
    """Cloud Logging's HttpRequest: sizes in bytes (as strings, int64 in its JSON), latency as "1.234s"."""
    fields = {"requestMethod": method, "requestUrl": url, "status": status, "latency": f"{latency_s:.3f}s",
              "requestSize": None if request_size is None else str(request_size),
              "responseSize": None if response_size is None else str(response_size),
              "userAgent": user_agent[:USER_AGENT_MAX] if user_agent else None, "remoteIp": remote_ip}
    return {k: v for k, v in fields.items() if v is not None}


class CountedBody:
    """A response body (an iterable of str or bytes) that counts the bytes sent, and closes
    what it wraps when closed (so that a generator's cleanup still runs)."""

    def __init__(self, body: Iterable):
        self.body = body
        self.sent = 0

    def __iter__(self) -> Iterator:
        for chunk in self.body:
            self.sent += len(chunk.encode() if isinstance(chunk, str) else chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self.body, "close", None)  # generators and files have one, lists not
        if close is not None:
            close()

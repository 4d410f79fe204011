"""The client's connection, as gunicorn hands it over: reading a request's body whole under
time limits, noticing that the client left, and reading no more from it."""

from __future__ import annotations

import select
import socket
import threading

from nst_jax import errors

from functions.settings import Settings

READ_CHUNK = 1 << 20  # bytes of a body read at a time


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

"""The HTTP function in real servers (`nst-jax serve`: gunicorn, functions-framework) on
127.0.0.1: stylizing, streaming, paths, weights faults, load, memory, SIGTERM."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import signal
import socket
import threading
import time

import pytest
from conftest import server_env
from helpers import b64, body, decode_png, png, wait_for
from liveserver import LiveServer, rss_mb


@pytest.mark.slow
def test_real_server_stylizes(live_server):
    import requests

    r = requests.post(live_server.url + "/stylize", json=body(), timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert decode_png(r.json()["image"]).size == (32, 32)
    health = requests.get(live_server.url + "/healthz", timeout=10).json()
    assert health["ready"] is True and health["weights"]["arch"] == "vgg16"


@pytest.mark.slow
def test_real_server_streams_and_stops_work_when_the_client_leaves(live_server):
    import requests

    with requests.post(live_server.url + "/stylize", json={**body(steps=1000), "stream": True},
                       stream=True, timeout=120) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(next(r.iter_lines()))
        assert first["type"] == "progress" and first["total"] == 1000
    # The connection is closed now; the server notices at its next write and stops the job.
    deadline = time.monotonic() + 60
    while "client went away" not in live_server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "client went away" in live_server.log()
    start = time.monotonic()
    assert requests.post(live_server.url + "/stylize", json=body(), timeout=120).status_code == 200
    assert time.monotonic() - start < 30


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml",
                                  "/%2e%2e%2f%2e%2e%2fetc%2fpasswd"])
def test_real_server_serves_nothing_outside_web(live_server, path):
    conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=10)
    conn.request("GET", path)  # sent as is, no client-side normalisation
    r = conn.getresponse()
    data = r.read()
    conn.close()
    assert r.status == 404
    assert json.loads(data)["error"]["code"] == "not_found"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["missing", "truncated"])
def test_a_server_without_usable_weights_keeps_running_and_says_why(tmp_path, random_weights_path, fault):
    import requests

    weights = tmp_path / "weights.npz"
    if fault == "truncated":
        data = random_weights_path.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    server = LiveServer(tmp_path / "server.log", server_env({"NEURASTYLE_WEIGHTS": str(weights)}), expect_ready=False)
    try:
        for _ in range(2):  # and again: the failure is not cached into a crash
            health = requests.get(server.url + "/healthz", timeout=30)
            assert health.status_code == 503
            reason = health.json()
            assert reason["ready"] is False and reason["error"]["code"] == "weights_unavailable"
            assert str(tmp_path) not in health.text and "weights.npz" not in health.text
            assert "/" not in reason["error"]["message"]
            r = requests.post(server.url + "/stylize", json=body(), timeout=30)
            assert r.status_code == 503 and r.json() == {"error": reason["error"]}
        assert "Traceback" not in r.text and str(tmp_path) not in r.text
        assert str(weights) in server.log()  # the reason is in the server's log
        assert requests.get(server.url + "/", timeout=30).status_code == 200
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory, random_weights_path):
    """A real server: one job at a time, two more in line."""
    with LiveServer(tmp_path_factory.mktemp("load") / "server.log",
                    server_env({"NEURASTYLE_WEIGHTS": str(random_weights_path),
                                "NEURASTYLE_MAX_CONCURRENT": "1", "NEURASTYLE_MAX_QUEUE": "2"})) as server:
        yield server


@pytest.mark.slow
def test_under_load_every_request_is_answered(small_queue_server):
    """12 clients x 4 requests at once: each gets a PNG or a clean 429; nothing is dropped."""
    import requests

    url = small_queue_server.url
    requests.post(url + "/stylize", json=body(), timeout=120).raise_for_status()  # compile first

    def client(i: int) -> list[tuple[int, str]]:
        outcomes = []
        with requests.Session() as session:
            for j in range(4):
                r = session.post(url + "/stylize", json=body(stream=(i + j) % 3 == 0), timeout=120)
                if r.status_code == 200:
                    if r.headers["Content-Type"].startswith("application/x-ndjson"):
                        last = json.loads(r.text.splitlines()[-1])
                        assert last["type"] == "result", last
                        image = last["image"]
                    else:
                        image = r.json()["image"]
                    decode_png(image)
                    outcomes.append((200, ""))
                else:
                    assert r.status_code == 429, r.text
                    assert r.json()["error"]["code"] == "busy" and int(r.headers["Retry-After"]) >= 1
                    outcomes.append((429, r.headers["Retry-After"]))
        return outcomes

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = [o for f in [pool.submit(client, i) for i in range(12)] for o in f.result()]
    elapsed = time.monotonic() - start
    served = sum(1 for status, _ in results if status == 200)
    assert len(results) == 48 and served >= 3 and served + sum(1 for s, _ in results if s == 429) == 48
    assert elapsed < 120
    health = requests.get(url + "/healthz", timeout=10).json()
    assert health["ready"] is True
    assert health["load"]["running"] == 0 and health["load"]["waiting"] == 0
    assert small_queue_server.process.poll() is None


@pytest.mark.slow
def test_memory_stays_flat_over_many_requests(small_queue_server):
    """100 requests with different content (one shape): resident memory after a warm-up grows
    less than 50 MB (no per-request leak: previews are not kept, the Gram cache is bounded).
    RSS swings between requests as large buffers come and go (and its floor settles slowly),
    so the high-water mark of requests 20-39 is compared with that of requests 80-99: a leak
    raises it, the swings do not."""
    import requests

    pid = small_queue_server.worker_pid()
    rss = []
    with requests.Session() as session:
        for i in range(100):
            r = session.post(small_queue_server.url + "/stylize",
                             json=body(stream=i % 2 == 1, content=b64(png(seed=i))), timeout=120)
            assert r.status_code == 200, r.text
            rss.append(rss_mb(pid))
    early, late = rss[20:40], rss[80:]
    print(f"RSS MB, requests 20-39: {min(early):.0f}-{max(early):.0f}, 80-99: {min(late):.0f}-{max(late):.0f}")
    assert max(late) - max(early) < 50


@pytest.mark.slow
def test_sigterm_lets_running_requests_finish_and_refuses_new_ones(tmp_path, random_weights_path):
    import requests

    server = LiveServer(tmp_path / "server.log", server_env({"NEURASTYLE_WEIGHTS": str(random_weights_path),
                                                             "NEURASTYLE_DRAIN_S": "120"}))
    try:
        pool = concurrent.futures.ThreadPoolExecutor(2)
        slow = pool.submit(requests.post, server.url + "/stylize", json=body(size=64, steps=80), timeout=300)
        wait_for(lambda: requests.get(server.url + "/healthz", timeout=10).json()["load"]["running"] == 1,
                 what="the slow request to start")
        queued = pool.submit(requests.post, server.url + "/stylize", json=body(), timeout=300)
        wait_for(lambda: requests.get(server.url + "/healthz", timeout=10).json()["load"]["waiting"] == 1,
                 what="a request in line")
        server.process.send_signal(signal.SIGTERM)
        r = queued.result(30)  # waiting, not started: told at once
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down" and r.headers["Retry-After"]
        late = requests.post(server.url + "/stylize", json=body(), timeout=30)  # new: refused cleanly
        assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 503
        assert not slow.done()
        done = slow.result(300)
        assert done.status_code == 200, done.text
        assert done.json()["steps"] == 80
        assert server.process.wait(30) == 0
        pool.shutdown()
    finally:
        server.stop()


# --- hostile clients (issue 12) ----------------------------------------------------------

def exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it (or resets it
    after answering: what was read by then). Returns the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """What `sock` receives until the server closes (or resets) the connection."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def json_error(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


@pytest.mark.slow
def test_a_long_request_line_is_refused_as_414(live_server):
    line = b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(live_server.port, line)
    assert status_of(answer) == 414, answer[:200]
    assert json_error(answer)["code"] == "uri_too_long"
    health = exchange(live_server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(health) == 200


def slow_upload(port: int, length: int = 1_000_000) -> socket.socket:
    """A connection that sent the head of a `length`-byte POST /stylize and one byte of its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /stylize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n{" % length)
    return sock


def trickle(socks: list[socket.socket], stop: threading.Event, every_s: float = 1.0) -> None:
    """One more byte on each connection every `every_s` seconds, until `stop` or they all close."""
    while not stop.wait(every_s):
        for sock in list(socks):
            try:
                sock.sendall(b" ")
            except OSError:
                socks.remove(sock)


@pytest.mark.slow
def test_slow_bodies_hold_no_place_in_line_and_are_cut_off(tmp_path, random_weights_path):
    import requests

    server = LiveServer(tmp_path / "server.log", server_env({"NEURASTYLE_WEIGHTS": str(random_weights_path),
                                                             "NEURASTYLE_BODY_TIMEOUT_S": "6"}))
    slow = [slow_upload(server.port) for _ in range(12)]
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(list(slow), stop), daemon=True)
    sender.start()
    try:
        time.sleep(1.5)  # the slow uploads are all being read by now
        r = requests.post(server.url + "/stylize", json=body(), timeout=120)
        assert r.status_code == 200, r.text
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        for sock in slow:  # cut off at the body's time limit, with an answer
            answer = b""
            with sock:
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except ConnectionResetError:
                    pass
            assert status_of(answer) == 408, answer[:300]
            assert json_error(answer)["code"] == "request_timeout"
    finally:
        stop.set()
        server.stop()


def peak_rss_mb(pid: int, work) -> tuple[float, float]:
    """(RSS before `work()`, highest RSS sampled while it runs), MB."""
    before, peak, done = rss_mb(pid), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return before, peak[0]


@pytest.mark.slow
def test_memory_is_bounded_per_request_not_per_image(tmp_path, random_weights_path):
    """Two requests at once, each of one content and eight styles, each image a flat
    3000 x 3000 PNG (9 Mpx, a few kB): decoded as uint8 and downscaled to what size 32 can
    use, they raise the worker's resident memory by less than 500 MB (float32 images kept
    whole took it up by gigabytes)."""
    import requests

    server = LiveServer(tmp_path / "server.log", server_env({"NEURASTYLE_WEIGHTS": str(random_weights_path)}))
    try:
        requests.post(server.url + "/stylize", json=body(), timeout=120).raise_for_status()  # compile first
        flat = b64(png(size=(3000, 3000)))
        payload = {"content_image": flat, "style_images": [flat] * 8, "options": {"size": 32, "steps": 1}}
        answers = []

        def two_at_once():
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                answers.extend(pool.map(lambda _: requests.post(server.url + "/stylize", json=payload, timeout=300),
                                        range(2)))

        before, peak = peak_rss_mb(server.worker_pid(), two_at_once)
        print(f"worker RSS {before:.0f} MB before, {peak:.0f} MB at most while two requests ran")
        assert [r.status_code for r in answers] == [200, 200], answers[0].text[:300]
        assert peak - before < 500
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("head", [
    b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
])
def test_a_body_is_not_waited_for_where_it_is_not_read(live_server, head):
    """Answered at once, without the body, and the connection closed (not read to its end)."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=15) as sock:
        sock.sendall(head)
        answer = read_until_closed(sock)
    assert status_of(answer) in (405, 413), answer[:300]


@pytest.mark.slow
def test_a_plain_request_whose_client_leaves_is_stopped(live_server):
    import requests

    log_before = len(live_server.log())
    data = json.dumps(body(steps=1000)).encode()
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        sock.sendall(b"POST /stylize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        wait_for(lambda: requests.get(live_server.url + "/healthz", timeout=10).json()["load"]["running"] == 1,
                 what="the request to start")
    # closed: the server notices at the job's next progress report and stops it
    wait_for(lambda: "client went away" in live_server.log()[log_before:], timeout=60, what="the job to stop")
    assert requests.get(live_server.url + "/healthz", timeout=10).json()["load"]["running"] == 0

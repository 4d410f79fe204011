"""Soak test of the HTTP server: N clients post small stylizations for a while; prints how
many were served and refused, latencies, and the worker's resident memory over time.

    python benchmarks/soak.py --duration 240 --concurrency 8            # starts its own server
    python benchmarks/soak.py --url http://127.0.0.1:8080 --duration 60  # an existing one
    python benchmarks/soak.py --duration 120 --hostile 4                 # beside 4 hostile clients

Every request must end in 200 with a decodable PNG, or 429/503 with Retry-After and a JSON
error; anything else (a reset, a 5xx, a bad body) is counted as lost and fails the run
(exit status 1). With --hostile, that many more clients send, in turn, the requests of
HOSTILE (slow bodies, oversized and malformed ones, image bombs, clients that leave); each
must get its JSON 4xx (or, for one that leaves, nothing), else it counts as lost too; the
normal clients' figures are then to be compared with a run without them. Loopback only: it
is a test of this server, not of a network.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' liveserver.py
from liveserver import LiveServer, b64, decode_png, encode, png, rss_mb  # noqa: E402


def png_b64(seed: int, side: int = 40) -> str:
    """Base64 of a `side` x `side` PNG of noise: `seed` makes requests that differ in content."""
    return b64(png(size=(side, side), seed=seed))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = Counter()
        self.latency_ok: list[float] = []
        self.latency_refused: list[float] = []
        self.lost: list[str] = []
        self.kinds = Counter()  # hostile requests: "kind: status"

    def add(self, status: int, seconds: float, problem: str | None = None, kind: str | None = None) -> None:
        with self.lock:
            if kind is not None:
                self.kinds[f"{kind}: {'lost' if problem else status or 'left'}"] += 1
            if problem:
                self.lost.append(problem)
                self.status["lost"] += 1
                return
            self.status[status] += 1
            (self.latency_ok if status == 200 else self.latency_refused).append(seconds)


def check_answer(status: int, headers, data: bytes, stream: bool) -> str | None:
    """None if the answer is one a client can rely on, else what is wrong with it."""
    try:
        if status == 200:
            if stream:
                last = json.loads(data.decode().strip().splitlines()[-1])
                if last.get("type") != "result":
                    return f"stream ended with {last}"
                image = last["image"]
            else:
                image = json.loads(data)["image"]
            decode_png(image)
            return None
        if status in (429, 503):
            if not headers.get("Retry-After"):
                return f"{status} without Retry-After"
            json.loads(data)["error"]["code"]
            return None
        return f"status {status}: {data[:200]!r}"
    except (ValueError, KeyError, IndexError, OSError) as e:
        return f"status {status}, bad body ({type(e).__name__}: {e})"


def client(url: str, end: float, args, stats: Stats, index: int, limit: float = float("inf")) -> None:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=args.timeout)
    n = 0
    while time.monotonic() < end and n < limit:
        n += 1
        stream = args.stream_every > 0 and n % args.stream_every == 0
        body = json.dumps({
            "content_image": png_b64(index * 100_000 + n),  # differs every time, same shape
            "style_image": png_b64(10**9 + (0 if args.styles <= 1 else n % args.styles)),
            "options": {"size": args.size, "steps": args.steps},
            "stream": stream,
        })
        start = time.monotonic()
        try:
            conn.request("POST", parts.path.rstrip("/") + "/stylize", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            stats.add(0, 0, f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=args.timeout)
            continue
        seconds = time.monotonic() - start
        stats.add(r.status, seconds, check_answer(r.status, r.headers, data, stream))
        if r.status in (429, 503) and not args.hammer:
            conn.close()  # an idle kept-alive connection would be closed by the server meanwhile
            time.sleep(min(float(r.headers.get("Retry-After", 1)), max(0.0, end - time.monotonic())))
    conn.close()


# --- hostile clients --------------------------------------------------------------------------

def head(method: str, path: str, length: int | None, content_type: str = "application/json") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def stylize_body(content: str, styles: list[str]) -> bytes:
    return json.dumps({"content_image": content, "style_images": styles, "options": {"size": 32, "steps": 1}}).encode()


def trickled(data: bytes, every_s: float, stop: threading.Event):
    """`data`, then a space every `every_s` seconds until `stop`: a body that never ends."""
    yield data
    while not stop.wait(every_s):
        yield b" "


def repeated(data: bytes, times: int, stop: threading.Event):
    for _ in range(times):
        if stop.is_set():
            return
        yield data


def hostile_requests() -> dict:
    """kind -> (sender(stop) -> byte strings to send, the statuses that are a right answer,
    or None for a client that leaves without waiting for one)."""
    bomb = b64(png(size=(6000, 6000)))  # 36 Mpx in a few kB; nine of them are over a request's budget
    ok = stylize_body(png_b64(1), [png_b64(2)])
    ppm = b64(encode(Image.new("RGB", (40, 40), (10, 120, 200)), "PPM"))
    bodies = {
        "malformed json": b'{"a": [1,',
        "image bomb": stylize_body(bomb, [bomb] * 8),
        "unsupported format": stylize_body(ppm, [png_b64(3)]),
        "huge number": ok.replace(b'"steps": 1', b'"steps": 1, "lr": 1' + b"0" * 400),
    }

    def once(data: bytes):
        return lambda stop: [data]

    # read whole, then refused at the door when the line is full (429) or found bad when parsed
    requests = {kind: (once(head("POST", "/stylize", len(b)) + b), {400, 413, 429}) for kind, b in bodies.items()}
    requests.update({
        "slow body": (lambda stop: trickled(head("POST", "/stylize", 1_000_000) + b"{", 2.0, stop), {408}),
        "oversized body": (lambda stop: itertools.chain([head("POST", "/stylize", 100_000_000)],
                                                        repeated(b" " * 65536, 1600, stop)), {413}),
        "text/plain": (once(head("POST", "/stylize", len(ok), "text/plain") + ok), {415}),
        "long request line": (once(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), {414}),
        "leaves mid-request": (once(head("POST", "/stylize", len(ok)) + ok), None),
    })
    return requests


def hostile_client(url: str, end: float, stats: Stats, index: int) -> None:
    """Sends the hostile requests in turn (each client starting at another kind) until `end`;
    the sending runs in a thread of its own while the answer is read."""
    parts = urllib.parse.urlsplit(url)
    kinds = list(hostile_requests().items())
    n = index
    while time.monotonic() < end:
        kind, (sender, expected) = kinds[n % len(kinds)]
        n += 1
        start, stop = time.monotonic(), threading.Event()
        try:
            sock = socket.create_connection((parts.hostname, parts.port), timeout=120)
        except OSError as e:
            stats.add(0, 0, f"{kind}: {type(e).__name__}: {e}", kind=kind)
            continue
        with sock:
            def send():
                try:
                    for data in sender(stop):
                        sock.sendall(data)
                except OSError:
                    pass  # answered and closed before all was sent
            sending = threading.Thread(target=send, daemon=True)
            sending.start()
            if expected is None:  # sends its request, then leaves
                sending.join()
                stats.add(0, time.monotonic() - start, None, kind=kind)
                continue
            answer = read_answer(sock)
            stop.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a send still under way ends now
            except OSError:
                pass
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
        problem = None if status in expected and b'"error"' in answer else f"{kind}: {answer[:120]!r}"
        stats.add(status, time.monotonic() - start, problem, kind=kind)


def read_answer(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection or a whole answer came."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = next((int(line.split(b":")[1]) for line in answer[:head_end].split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(answer) >= head_end + 4 + length:
                    break
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an existing server (default: start one on a free loopback port)")
    p.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    p.add_argument("--concurrency", type=int, default=8, help="clients at once (default 8)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--styles", type=int, default=1, help="distinct style images to cycle (default 1)")
    p.add_argument("--stream-every", type=int, default=3, help="every n-th request streams (0: never)")
    p.add_argument("--hammer", action="store_true", help="retry at once after a refusal, ignoring Retry-After")
    p.add_argument("--timeout", type=float, default=600, help="per-request socket timeout")
    p.add_argument("--weights", help="weights for the server it starts (default: NEURASTYLE_WEIGHTS or the default)")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=4)
    p.add_argument("--sample-every", type=float, default=10, help="seconds between RSS samples")
    p.add_argument("--hostile", type=int, default=0, help="hostile clients beside the normal ones (default 0)")
    p.add_argument("--body-timeout", type=float, default=10,
                   help="NEURASTYLE_BODY_TIMEOUT_S of the server it starts, so slow bodies come and go (default 10)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    server = None
    if args.url:
        url, pid = args.url, None
    else:
        env = {"NEURASTYLE_MAX_CONCURRENT": str(args.max_concurrent), "NEURASTYLE_MAX_QUEUE": str(args.max_queue),
               "NEURASTYLE_BODY_TIMEOUT_S": str(args.body_timeout)}
        if args.weights:
            env["NEURASTYLE_WEIGHTS"] = args.weights
        log_path = Path(tempfile.mkdtemp(prefix="neurastyle-soak-")) / "server.log"
        server = LiveServer(log_path, {**os.environ, **env})
        url, pid = server.url, server.worker_pid()
        print(f"server {url} (worker pid {pid}, log {log_path})", flush=True)

    stats = Stats()
    warm = Stats()  # one request first, so that compiling is not in the figures
    client_args = argparse.Namespace(**{**vars(args), "stream_every": 0})
    client(url, math.inf, client_args, warm, 999, limit=1)
    if warm.status[200] != 1:
        raise SystemExit(f"the warm-up request failed: {warm.status} {warm.lost}")
    rss = [(0.0, rss_mb(pid))] if pid else []
    start = time.monotonic()
    end = start + args.duration
    hostile = Stats()
    threads = [threading.Thread(target=client, args=(url, end, args, stats, i), daemon=True)
               for i in range(args.concurrency)]
    threads += [threading.Thread(target=hostile_client, args=(url, end, hostile, i), daemon=True)
                for i in range(args.hostile)]
    for t in threads:
        t.start()
    while time.monotonic() < end:
        time.sleep(min(args.sample_every, max(0.1, end - time.monotonic())))
        if pid:
            rss.append((time.monotonic() - start, rss_mb(pid)))
            with stats.lock:
                done = sum(stats.status.values())
            print(f"  t={rss[-1][0]:6.0f} s  requests={done:6d}  rss={rss[-1][1]:7.1f} MB", flush=True)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if pid:
        rss.append((elapsed, rss_mb(pid)))
    with urllib.request.urlopen(url + "/healthz", timeout=30) as r:
        health = json.load(r)

    served = stats.status[200]
    refused = stats.status[429] + stats.status[503]
    figures = {
        "duration_s": round(elapsed, 1),
        "concurrency": args.concurrency,
        "max_concurrent": args.max_concurrent if server else None,
        "max_queue": args.max_queue if server else None,
        "size": args.size, "steps": args.steps,
        "requests": sum(stats.status.values()),
        "served_200": served,
        "refused_429_503": refused,
        "lost": stats.status["lost"],
        "by_status": {str(k): v for k, v in sorted(stats.status.items(), key=str)},
        "served_per_s": round(served / elapsed, 2),
        "latency_200_s": {"p50": round(percentile(stats.latency_ok, 50), 3),
                          "p95": round(percentile(stats.latency_ok, 95), 3),
                          "max": round(max(stats.latency_ok, default=float("nan")), 3)},
        "latency_refused_s": {"p50": round(percentile(stats.latency_refused, 50), 4),
                              "p95": round(percentile(stats.latency_refused, 95), 4)},
        "rss_mb": {"start": round(rss[0][1], 1), "end": round(rss[-1][1], 1),
                   "max": round(max(v for _, v in rss), 1)} if rss else None,
        "healthz_after": {"ready": health.get("ready"), "load": health.get("load")},
    }
    if args.hostile:
        figures["hostile"] = {"clients": args.hostile, "requests": sum(hostile.kinds.values()),
                              "lost": hostile.status["lost"], "by_kind": dict(sorted(hostile.kinds.items()))}
    if server:
        figures["server_exit_status"] = server.stop()
    print(json.dumps(figures, indent=2))
    if stats.lost or hostile.lost:
        print("lost:", *sorted(set(stats.lost + hostile.lost))[:10], sep="\n  ", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "rss_samples": rss}, indent=2))
    return 1 if stats.lost or hostile.lost or health.get("ready") is not True else 0


if __name__ == "__main__":
    sys.exit(main())

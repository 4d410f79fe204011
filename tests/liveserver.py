"""A real server for the tests (and the benchmarks that talk to one, cold_start.py and soak.py):
`nst-jax serve` (gunicorn + functions-framework) in a child process on a free loopback port, its
worker's resident memory, and the PNG/Base64 helpers of the requests and answers.

It needs no `nst_jax` (only numpy and Pillow): the server runs in its own process.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


def with_checkout(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH, so that a child process runs its code (not
    that of an installed copy)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` (Linux's VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class LiveServer:
    """`nst-jax serve` in a child process on a free port of 127.0.0.1, ready when constructed:
    its /healthz answered 200 (with `expect_ready=False`, any HTTP answer, e.g. 503 without
    weights). `env` is the child's whole environment (default: this process's), `with_checkout`.
    The log is appended to `log_path`, so that servers run one after another may share one file.
    A context manager: stopped on leaving."""

    def __init__(self, log_path: Path, env: Mapping[str, str] | None = None, timeout: float = 180.0,
                 expect_ready: bool = True):
        self.expect_ready = expect_ready
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        child_env = with_checkout(os.environ if env is None else env)
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nst_jax", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO_ROOT, env=child_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready(timeout)
        self.ready_s = time.monotonic() - started  # from the start of the process to ready, s

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError:
                if not self.expect_ready:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # fine enough for the cold-start benchmark's time to ready
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def worker_pid(self) -> int:
        """The gunicorn worker process (the one that holds the model and answers requests)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {children}")
        return int(children[0])

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within 60 s (past gunicorn's 30 s graceful
        timeout); returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- images in requests and answers ---------------------------------------------------------

def png(color=(200, 60, 30), size=(40, 40), mode="RGB", seed: int | None = None) -> bytes:
    """A PNG of one colour, or of noise (`seed`): requests that differ in content, not shape.
    `size` is (width, height), px."""
    if seed is None:
        image = Image.new(mode, size, color)
    else:
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    return encode(image, "PNG")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    """`image` in the file format `fmt` (Pillow's name); `params` go to Pillow's save."""
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_png(b64_png: str) -> Image.Image:
    """The image of an answer's Base64 PNG, decoded whole; ValueError (or Pillow's OSError)
    if it is not one."""
    image = Image.open(io.BytesIO(base64.b64decode(b64_png)))
    if image.format != "PNG":
        raise ValueError(f"a {image.format} image, not a PNG")
    image.load()
    return image

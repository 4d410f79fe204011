"""Cold start of the HTTP function: a fresh `nst-jax serve` process's first request against the
same request warm, by what the process starts with.

    python benchmarks/cold_start.py                          # 256 px, steps 2, 3 runs per mode
    python benchmarks/cold_start.py --size 512 --steps 300 --runs 2 --json cold.json

Modes, each a fresh server process on a free localhost port, run in turns:
  empty   an empty persistent compilation cache;
  cache   the cache after `nst-jax warmup --size SIZE [--aspect W:H ...] --style web/styles/*.jpg`
          (filled once, before the runs, for every aspect unless --aspect; the styles are the
          server's built-in paintings);
  warmup  that cache and NEURASTYLE_WARMUP=SIZE: the server loads the programs of its default
          aspects (--aspect's if given, as NEURASTYLE_WARMUP_ASPECTS) before /healthz says ready.
Per run: seconds from the process's start until /healthz answers 200 ("ready") and the CPU
seconds the server's processes spent by then ("ready CPU": on a shared machine wall times are
noisy, CPU times less so), the first request's round trip ("first"), the same request again
("warm"), and start to first result ("total"). The request: a generated photo and style
(`common.generated_images`) of --content's aspect (default 4:3), default options but `size` and
`steps`, as JSON. Prints medians with the range, the first/warm ratio and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common
from nst_jax import images, shapes

sys.path.append(str(common.REPO_ROOT / "tests"))  # the real server in a child process: the tests' liveserver.py
from liveserver import LiveServer, b64, rss_mb, with_checkout  # noqa: E402

MODES = ("empty", "cache", "warmup")


def request_body(size: int, steps: int, aspect: tuple[int, int]) -> bytes:
    """A request for `size` px and `steps`, its photo and style 1024 px wide or high, `aspect` (W, H)."""
    width, height = (1024, round(1024 * aspect[1] / aspect[0])) if aspect[0] >= aspect[1] else \
                    (round(1024 * aspect[0] / aspect[1]), 1024)
    content, style = common.generated_images(height=height, width=width)
    return json.dumps({"content_image": b64(images.encode(content)), "style_image": b64(images.encode(style)),
                       "options": {"size": size, "steps": steps}}).encode()


def post(url: str, body: bytes, timeout: float) -> float:
    """Seconds for one POST /stylize answered 200."""
    start = time.time()
    request = urllib.request.Request(url + "/stylize", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
    return time.time() - start


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) process `pid` has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_once(env: dict, body: bytes, timeout: float, log_path: Path) -> dict:
    """One fresh server: seconds to ready and the CPU seconds its processes (gunicorn's master and
    worker) used by then, the first request, the same again; the worker's RSS then."""
    load = os.getloadavg()[0]
    with LiveServer(log_path, env, timeout=timeout) as server:
        ready_cpu = cpu_s(server.process.pid) + cpu_s(server.worker_pid())
        first = post(server.url, body, timeout)
        warm = post(server.url, body, timeout)
        rss = rss_mb(server.worker_pid())
    return {"ready_s": server.ready_s, "ready_cpu_s": ready_cpu, "first_s": first, "warm_s": warm,
            "total_s": server.ready_s + first, "rss_mb": rss, "load_average": load}


def mode_env(mode: str, cache: Path, empty: Path, size: int, weights: Path | None, aspect: str | None = None) -> dict:
    """The server's environment in `mode`: its cache folder, and NEURASTYLE_WARMUP (and
    NEURASTYLE_WARMUP_ASPECTS, for `aspect` "W:H") in "warmup"."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NEURASTYLE_WARMUP", "NEURASTYLE_WARMUP_ASPECTS", "NEURASTYLE_COMPILATION_CACHE")}
    env["NEURASTYLE_COMPILATION_CACHE"] = str(empty if mode == "empty" else cache)
    if mode == "warmup":
        env["NEURASTYLE_WARMUP"] = str(size)
        if aspect:
            env["NEURASTYLE_WARMUP_ASPECTS"] = aspect
    if weights:
        env["NEURASTYLE_WEIGHTS"] = str(weights)
    return env


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="px")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="fresh servers per mode")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--cache", type=Path, help="a cache `nst-jax warmup --size SIZE` filled already "
                                              "(default: filled now, in a temporary folder)")
    p.add_argument("--aspect", help="W:H[,W:H...]: fill the cache, and warm up (NEURASTYLE_WARMUP_ASPECTS), for "
                                    "these aspects only (default: the cache for every aspect, the server's default "
                                    "warm-up)")
    p.add_argument("--content", type=shapes.parse_aspect, default=(4, 3), metavar="W:H",
                   help="the request's photo aspect (default 4:3)")
    p.add_argument("--weights", type=Path)
    p.add_argument("--timeout", type=float, default=1800, help="s per server start or request")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    body = request_body(args.size, args.steps, args.content)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, log_path = args.cache or tmp / "warmed", tmp / "server.log"
        out = {"machine": common.machine(), "args": {k: str(v) for k, v in vars(args).items()}}
        if args.cache is None and set(args.modes) - {"empty"}:
            start = time.time()
            warm = [sys.executable, "-m", "nst_jax", "warmup", "--size", str(args.size)]
            warm += ["--weights", str(args.weights)] if args.weights else []
            warm += [a for aspect in args.aspect.split(",") for a in ("--aspect", aspect)] if args.aspect else []
            # the server's built-in paintings, as the Dockerfile's warm-up does
            warm += ["--style", *map(str, sorted((common.REPO_ROOT / "web" / "styles").glob("*.jpg")))]
            subprocess.run(warm, check=True, cwd=common.REPO_ROOT,
                           env=with_checkout(mode_env("cache", cache, cache, args.size, None)))
            out["warmup_s"] = time.time() - start
            print(f"nst-jax warmup --size {args.size}: {out['warmup_s']:.1f} s", file=sys.stderr, flush=True)
        runs = {mode: [] for mode in args.modes}
        try:
            for i in range(args.runs):
                for mode in args.modes:
                    env = mode_env(mode, cache, tmp / f"empty-{i}", args.size, args.weights, args.aspect)
                    logged = log_path.stat().st_size if log_path.exists() else 0
                    runs[mode].append(serve_once(env, body, args.timeout, log_path))
                    # what the server's warm-up did (its log line: families, programs, trace/lower/load s)
                    for line in log_path.read_bytes()[logged:].decode(errors="replace").splitlines():
                        if "shape families" in line:
                            print("  " + line, file=sys.stderr)
                    print(f"{mode} run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[mode][-1].items()),
                          file=sys.stderr, flush=True)
        except Exception:
            print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        out["cache_mb"] = folder_mb(cache) if cache.exists() else 0.0
    out["runs"] = runs
    out["machine"]["load_average_end"] = os.getloadavg()
    print(f"{args.size} px, steps {args.steps}, a {args.content[0]}:{args.content[1]} photo; medians (min-max) of "
          f"{args.runs} fresh servers per mode, s")
    print("| mode | ready | ready CPU | first request | same request warm | start to first result | first / warm "
          "| worker RSS MB | load average |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, rs in runs.items():
        ratios = [r["first_s"] / r["warm_s"] for r in rs]
        print(f"| {mode} | " + " | ".join(spread([r[k] for r in rs])
                                         for k in ("ready_s", "ready_cpu_s", "first_s", "warm_s", "total_s"))
              + f" | {spread(ratios)} | {statistics.median(r['rss_mb'] for r in rs):.0f} | "
              + spread([r["load_average"] for r in rs]) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

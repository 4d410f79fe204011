"""The HTTP function's settings: one frozen object, built once from the environment when the
function is loaded and passed to what needs it (a malformed value stops the loading). It embeds
the library's configuration (`nst_jax.config.Config`: weights, compilation cache, precision)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nst_jax import Limits, config, shapes
from nst_jax.config import Config, env_choice, env_number
from nst_jax.errors import OptionsError

HERE = Path(__file__).resolve().parent
# What a public deployment allows by default, smaller than the library's own bounds (the CLI's).
# A run's time budget is at most max_seconds, and requests that name none get it: such a request
# ends with the best picture it has by then rather than a 504 at the deadline (which counts the
# wait in line too).
DEPLOYMENT_LIMITS = Limits(max_size=1024, max_steps=1000, max_seconds=240.0)
SPARE_THREADS = 4  # for /healthz, the page and refusals
# The photos' aspects whose programs a warm-up builds before /healthz says ready: those of camera
# sensors, landscape and portrait. Each is a shape family (`nst_jax.warmup.families`), about 2 s
# of one core at 256 px from the compilation cache, twice that at 512: all 29 at 256 px made a
# 2-core server ready after a minute. Other aspects load from the cache at their first request.
DEFAULT_WARMUP_ASPECTS = ((4, 3), (3, 4), (3, 2), (2, 3))
LOG_FORMATS = ("json", "text")
GUNICORN_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_web_dir() -> Path:
    """web/ beside this folder's main.py (a staged Cloud Function) or in the checkout above it."""
    candidates = (HERE / "web", HERE.parent / "web", HERE.parent.parent / "web")
    return next((d for d in candidates if d.is_dir()), HERE.parent / "web").resolve()


@dataclass(frozen=True)
class Settings:
    """Request, load and time limits of one server process, where its page lives, and the
    library's configuration it runs with.

    Environment (the names of DEPLOY.md): NEURASTYLE_MAX_SIZE, _MAX_STEPS, _MAX_SECONDS (`limits`),
    _MAX_PIXELS, _MAX_REQUEST_PIXELS, _MAX_BODY_BYTES, _MAX_CONCURRENT, _MAX_QUEUE, _MAX_BATCH, _MAX_UPLOADS,
    _READ_TIMEOUT_S, _BODY_TIMEOUT_S, _DEADLINE_S, _DRAIN_S, _CORS_ORIGINS (comma-separated,
    or "*"), _WEB_DIR, _WARMUP (sizes, comma-separated), _WARMUP_BATCH, _WARMUP_ASPECTS,
    _LOG_FORMAT; the platform's and gunicorn's, as functions-framework reads them: PORT, THREADS,
    WORKERS, CLOUD_RUN_TIMEOUT_SECONDS, GUNICORN_LOG_LEVEL, K_SERVICE (set on Cloud Run: the log
    is JSON there), GOOGLE_CLOUD_PROJECT; the library's own (`config`: _WEIGHTS, _WEIGHTS_DIR,
    _COMPILATION_CACHE, _PRECISION)."""

    config: Config = field(default_factory=Config)
    limits: Limits = DEPLOYMENT_LIMITS
    max_pixels: int = 40_000_000  # one decoded image
    max_request_pixels: int = 100_000_000  # all the images of one request
    max_body_bytes: int = 30_000_000
    max_styles: int = 8
    max_concurrent: int = 1  # batches running at once
    max_queue: int = 8  # requests waiting for a slot
    max_batch: int = 4  # requests of one size bucket run together
    max_uploads: int = 16  # requests sending their bodies at once (not yet in line)
    read_timeout_s: float = 10.0  # a body's reads each get this long
    body_timeout_s: float = 60.0  # and the whole body this long
    deadline_s: float = 300.0  # a request's time, waiting included
    drain_s: float = 8.0  # running work may go on this long after SIGTERM, within Cloud Run's 10 s
    cors_origins: tuple[str, ...] = ()
    web_dir: Path = field(default_factory=default_web_dir)
    threads: int | None = None  # gunicorn threads; None: `server_threads` decides
    warmup_sizes: tuple[int, ...] = ()  # px: compiled before /healthz says ready (nst_jax.warmup)
    warmup_batch: int = 1  # and batches of up to this many requests (at most max_batch)
    warmup_aspects: tuple[tuple[int, int], ...] | None = DEFAULT_WARMUP_ASPECTS  # (W, H) of the photos warmed; None: all
    port: int = 8080  # `nst-jax serve`'s, unless given
    workers: int = 1  # gunicorn processes; keep 1: each process loads its own model
    worker_timeout_s: int = 0  # gunicorn's worker timeout, as functions-framework sets it; 0: none
    gunicorn_log_level: str = "error"  # one of GUNICORN_LOG_LEVELS
    log_format: str = "text"  # one of LOG_FORMATS (`requestlog.configure`); "json" where K_SERVICE is set
    cloud_project: str | None = None  # the project a trace id belongs to, in the JSON log

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The defaults above, overridden by `environ` (default `os.environ`, whose library
        configuration is then the process's, `nst_jax.config.current()`)."""
        env = os.environ if environ is None else environ
        library = config.current() if environ is None else Config.from_env(environ)
        d = {f.name: f.default for f in dataclasses.fields(cls)}

        def number(name, **bounds):
            return env_number(f"NEURASTYLE_{name}", d[name.lower()], env, **bounds)

        threads = env_number("THREADS", 0, env, integer=True, low=1) or None
        origins = tuple(o.strip() for o in env.get("NEURASTYLE_CORS_ORIGINS", "").split(",") if o.strip())
        web_dir = Path(env["NEURASTYLE_WEB_DIR"]).resolve() if env.get("NEURASTYLE_WEB_DIR") else default_web_dir()
        largest = Limits()  # the engine validates every run against the library's own bounds
        limits = Limits(min_size=DEPLOYMENT_LIMITS.min_size,
                        max_size=env_number("NEURASTYLE_MAX_SIZE", DEPLOYMENT_LIMITS.max_size, env, integer=True,
                                            low=DEPLOYMENT_LIMITS.min_size, high=largest.max_size),
                        max_steps=env_number("NEURASTYLE_MAX_STEPS", DEPLOYMENT_LIMITS.max_steps, env,
                                             integer=True, low=1, high=largest.max_steps),
                        max_seconds=env_number("NEURASTYLE_MAX_SECONDS", DEPLOYMENT_LIMITS.max_seconds, env,
                                               low=1))
        max_batch = number("MAX_BATCH", integer=True, low=1)
        return cls(
            config=library,
            limits=limits,
            max_pixels=number("MAX_PIXELS", integer=True, low=1),
            max_request_pixels=number("MAX_REQUEST_PIXELS", integer=True, low=1),
            max_body_bytes=number("MAX_BODY_BYTES", integer=True, low=1),
            max_concurrent=number("MAX_CONCURRENT", integer=True, low=1),
            max_queue=number("MAX_QUEUE", integer=True),
            max_batch=max_batch,
            max_uploads=number("MAX_UPLOADS", integer=True, low=1),
            read_timeout_s=number("READ_TIMEOUT_S", low=0.001),
            body_timeout_s=number("BODY_TIMEOUT_S", low=0.001),
            deadline_s=number("DEADLINE_S", low=0.001),
            drain_s=number("DRAIN_S"),
            cors_origins=origins,
            web_dir=web_dir,
            threads=threads,
            warmup_sizes=parse_sizes(env.get("NEURASTYLE_WARMUP", ""), limits),
            warmup_batch=number("WARMUP_BATCH", integer=True, low=1, high=max_batch),
            warmup_aspects=parse_aspects(env.get("NEURASTYLE_WARMUP_ASPECTS", "")),
            port=env_number("PORT", d["port"], env, integer=True, low=1, high=65535),
            workers=env_number("WORKERS", d["workers"], env, integer=True, low=1),
            worker_timeout_s=env_number("CLOUD_RUN_TIMEOUT_SECONDS", d["worker_timeout_s"], env, integer=True),
            gunicorn_log_level=env_choice("GUNICORN_LOG_LEVEL", d["gunicorn_log_level"], GUNICORN_LOG_LEVELS, env),
            log_format=env_choice("NEURASTYLE_LOG_FORMAT", "json" if env.get("K_SERVICE") else d["log_format"],
                                  LOG_FORMATS, env),
            cloud_project=env.get("GOOGLE_CLOUD_PROJECT") or None,
        )

    def server_threads(self) -> int:
        """gunicorn threads: functions-framework's 4 per CPU, but at least one per admitted
        request and per upload, plus a few for /healthz and refusals, which must not wait
        behind queued jobs or slow uploads."""
        needed = self.max_concurrent + self.max_queue + self.max_uploads + SPARE_THREADS
        return self.threads or max(4 * (os.cpu_count() or 1), needed)


def parse_aspects(text: str, name: str = "NEURASTYLE_WARMUP_ASPECTS") -> tuple[tuple[int, int], ...] | None:
    """Aspect ratios (W, H) from a comma-separated list such as "4:3,3:4"; "" for
    DEFAULT_WARMUP_ASPECTS, "all" (None) for every one. Raises OptionsError naming `name`."""
    if text.strip() == "all":
        return None
    try:
        aspects = tuple(shapes.parse_aspect(item) for item in text.split(",") if item.strip())
    except ValueError as e:
        raise OptionsError(f"{name}={text!r}: {e}") from None
    return aspects or DEFAULT_WARMUP_ASPECTS


def parse_sizes(text: str, limits: Limits, name: str = "NEURASTYLE_WARMUP") -> tuple[int, ...]:
    """Sizes, px, from a comma-separated list such as "256,512" ("" for none), each within
    `limits`. Raises OptionsError naming `name`."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or not limits.min_size <= int(item) <= limits.max_size:
            raise OptionsError(f"{name}={text!r}: each size must be a whole number of px from "
                               f"{limits.min_size} to {limits.max_size}")
        sizes.append(int(item))
    return tuple(dict.fromkeys(sizes))

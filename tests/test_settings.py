"""The HTTP function's settings (functions/settings.py): one frozen object from the environment."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import server_env
from liveserver import with_checkout

from functions.server import gunicorn_settings
from functions.settings import Settings
from nst_jax import Limits, errors


def test_the_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings == dataclasses.replace(Settings(), web_dir=settings.web_dir)
    assert settings.limits == Limits(min_size=32, max_size=1024, max_steps=1000, max_seconds=240)
    assert (settings.web_dir / "index.html").is_file()


def test_every_setting_comes_from_its_variable(tmp_path):
    settings = Settings.from_env({
        "NEURASTYLE_MAX_SIZE": "2e3", "NEURASTYLE_MAX_STEPS": "50", "NEURASTYLE_MAX_SECONDS": "90",
        "NEURASTYLE_MAX_PIXELS": "1000",
        "NEURASTYLE_MAX_BODY_BYTES": "2000", "NEURASTYLE_MAX_CONCURRENT": "2", "NEURASTYLE_MAX_QUEUE": "0",
        "NEURASTYLE_MAX_BATCH": "1", "NEURASTYLE_MAX_UPLOADS": "3", "NEURASTYLE_READ_TIMEOUT_S": "4",
        "NEURASTYLE_BODY_TIMEOUT_S": "20", "NEURASTYLE_DEADLINE_S": "2.5", "NEURASTYLE_DRAIN_S": "5",
        "NEURASTYLE_CORS_ORIGINS": " https://a.example, ,https://b.example", "NEURASTYLE_WEB_DIR": str(tmp_path),
        "NEURASTYLE_WARMUP_BATCH": "1", "THREADS": "6"})
    assert settings == Settings(limits=Limits(max_size=2000, max_steps=50, max_seconds=90), max_pixels=1000, max_body_bytes=2000,
                                max_concurrent=2, max_queue=0, max_batch=1, max_uploads=3, read_timeout_s=4,
                                body_timeout_s=20, deadline_s=2.5, drain_s=5,
                                cors_origins=("https://a.example", "https://b.example"), web_dir=Path(tmp_path),
                                threads=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_queue = 3


def test_limits_from_env():
    environ = {"NEURASTYLE_MAX_SIZE": "2e3"}
    assert Settings.from_env(environ).limits.max_size == 2000
    environ["NEURASTYLE_MAX_STEPS"] = "lots"
    with pytest.raises(errors.OptionsError, match="NEURASTYLE_MAX_STEPS"):
        Settings.from_env(environ)


def test_the_server_has_a_thread_for_every_admitted_request():
    assert Settings(max_concurrent=2, max_queue=30, max_uploads=5).server_threads() >= 2 + 30 + 5 + 2
    assert Settings(threads=5).server_threads() == 5


@pytest.mark.parametrize("name", ["NEURASTYLE_DEADLINE_S", "NEURASTYLE_MAX_QUEUE", "NEURASTYLE_MAX_SECONDS", "THREADS",
                                  "WORKERS", "CLOUD_RUN_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e999"])
def test_bad_settings_are_refused_naming_the_variable(name, value):
    with pytest.raises(errors.NSTError, match=name):
        Settings.from_env({name: value})


def test_the_warmup_batch_is_at_most_the_largest_batch():
    assert Settings.from_env({"NEURASTYLE_MAX_BATCH": "8", "NEURASTYLE_WARMUP_BATCH": "8"}).warmup_batch == 8
    assert Settings.from_env({}).warmup_batch == 1
    with pytest.raises(errors.NSTError, match="NEURASTYLE_WARMUP_BATCH"):
        Settings.from_env({"NEURASTYLE_MAX_BATCH": "2", "NEURASTYLE_WARMUP_BATCH": "4"})


def test_the_warmup_aspects():
    assert Settings.from_env({}).warmup_aspects == Settings().warmup_aspects == ((4, 3), (3, 4), (3, 2), (2, 3))
    assert Settings.from_env({"NEURASTYLE_WARMUP_ASPECTS": "all"}).warmup_aspects is None  # every aspect
    assert Settings.from_env({"NEURASTYLE_WARMUP_ASPECTS": " 4:3, 3:4,"}).warmup_aspects == ((4, 3), (3, 4))
    for bad in ("4x3", "4:0", "4:3,wide", ":3"):
        with pytest.raises(errors.NSTError, match="NEURASTYLE_WARMUP_ASPECTS"):
            Settings.from_env({"NEURASTYLE_WARMUP_ASPECTS": bad})


def test_counts_must_be_whole_numbers():
    with pytest.raises(errors.NSTError, match="NEURASTYLE_MAX_CONCURRENT"):
        Settings.from_env({"NEURASTYLE_MAX_CONCURRENT": "1.5"})


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan"])
def test_an_infinite_limit_is_refused_naming_the_variable(value):
    with pytest.raises(errors.NSTError, match="NEURASTYLE_MAX_SIZE"):
        Settings.from_env({"NEURASTYLE_MAX_SIZE": value})


@pytest.mark.parametrize("name, value", [("NEURASTYLE_MAX_SIZE", "4097"), ("NEURASTYLE_MAX_STEPS", "5001"),
                                         ("NEURASTYLE_MAX_SIZE", "31")])
def test_limits_beyond_what_the_library_runs_are_refused(name, value):
    """The engine validates every run against the library's `Limits()`: a deployment that
    advertised more in /config would refuse it inside the run."""
    with pytest.raises(errors.NSTError, match=name):
        Settings.from_env({name: value})


def test_the_librarys_own_limits_are_a_deployments_largest(function):
    library = Limits()
    settings = Settings.from_env({"NEURASTYLE_MAX_SIZE": str(library.max_size),
                                  "NEURASTYLE_MAX_STEPS": str(library.max_steps)})
    # the library sets no time ceiling; a deployment always has one (NEURASTYLE_MAX_SECONDS)
    assert settings.limits == dataclasses.replace(library, max_seconds=240)
    client, _ = function(limits=settings.limits)
    assert client.get("/config").get_json()["limits"]["max_size"] == library.max_size


def test_gunicorns_settings_come_from_the_settings():
    settings = Settings.from_env({"WORKERS": "2", "CLOUD_RUN_TIMEOUT_SECONDS": "300", "GUNICORN_LOG_LEVEL": " Info ",
                                  "THREADS": "7", "NEURASTYLE_DRAIN_S": "3.5"})
    assert (settings.workers, settings.worker_timeout_s, settings.gunicorn_log_level) == (2, 300, "info")
    chosen = gunicorn_settings(settings)
    assert (chosen["workers"], chosen["timeout"], chosen["loglevel"], chosen["threads"]) == (2, 300, "info", 7)
    assert chosen["graceful_timeout"] >= 3.5  # the drain fits in gunicorn's grace period
    default = gunicorn_settings(Settings.from_env({}))
    assert (default["workers"], default["timeout"], default["loglevel"]) == (1, 0, "error")


@pytest.mark.parametrize("environ, expected", [
    ({}, "text"),
    ({"K_SERVICE": "neurastyle"}, "json"),
    ({"NEURASTYLE_LOG_FORMAT": "json"}, "json"),
    ({"K_SERVICE": "neurastyle", "NEURASTYLE_LOG_FORMAT": "text"}, "text"),
    ({"NEURASTYLE_LOG_FORMAT": " JSON "}, "json"),
])
def test_the_log_is_json_on_cloud_run_or_when_asked(environ, expected):
    assert Settings.from_env(environ).log_format == expected


def test_the_logs_project():
    assert Settings.from_env({}).cloud_project is None
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "proj"}).cloud_project == "proj"


@pytest.mark.parametrize("name, value", [("NEURASTYLE_LOG_FORMAT", "xml"), ("GUNICORN_LOG_LEVEL", "loud"),
                                         ("NEURASTYLE_PRECISION", "float16")])
def test_a_word_that_is_none_of_its_choices_is_refused_naming_the_variable(name, value):
    with pytest.raises(errors.NSTError, match=f"{name}='{value}' must be one of"):
        Settings.from_env({name: value})


@pytest.mark.slow
@pytest.mark.parametrize("name, value", [("GUNICORN_LOG_LEVEL", "loud"), ("WORKERS", "two")])
def test_a_bad_setting_stops_the_server_at_start_with_one_line_naming_it(name, value):
    run = subprocess.run([sys.executable, "-m", "nst_jax", "serve", "--port", "1"], capture_output=True, text=True,
                         env=with_checkout({**server_env(), name: value}), timeout=120)
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("nst-jax: error: ") and f"{name}={value!r}" in line

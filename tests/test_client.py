"""The client (nst_jax/client.py, `nst-jax stylize --server URL`) against a real server
(`nst-jax serve`, random weights) with one place (a request running, none waiting), so that a
second request is refused 429; and that server's request log lines, as JSON."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import LiveServer
from helpers import SMALL, body, png, wait_for

from nst_jax import Progress, cli, client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_place_server(tmp_path_factory, random_weights_path):
    server = LiveServer(tmp_path_factory.mktemp("client") / "server.log",
                        env={"NEURASTYLE_WEIGHTS": str(random_weights_path), "NEURASTYLE_MAX_CONCURRENT": "1",
                             "NEURASTYLE_MAX_QUEUE": "0", "NEURASTYLE_LOG_FORMAT": "json",
                             "GOOGLE_CLOUD_PROJECT": "test-project"})
    yield server
    server.stop()


def log_lines(server) -> list[dict]:
    """The server's request lines (its log holds other output too: gunicorn's, the start banner)."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "neurastyle.request"]


class SlotHolder:
    """A streamed request of many steps that holds the server's only place until `release`d
    (it closes its connection; the server stops the work at its next progress report)."""

    def __init__(self, server):
        import requests

        self.server = server
        deadline = time.monotonic() + 60
        while True:  # the place may still be held by the work an earlier holder left
            self.response = requests.post(server.url + "/stylize", json=body(steps=1000, stream=True),
                                          stream=True, timeout=120)
            if self.response.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert self.response.status_code == 200
        self.lines = self.response.iter_lines()  # kept: a dropped generator closes the connection
        assert json.loads(next(self.lines))["type"] == "progress"  # running: the place is taken

    def release(self) -> None:
        self.response.close()


def files(tmp_path):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    content.write_bytes(png(seed=1))
    style.write_bytes(png((20, 40, 220)))
    return content, style


def test_the_client_streams_progress_into_the_library_s_callback(one_place_server):
    reports: list[Progress] = []
    result = client.stylize(one_place_server.url, png(seed=1), [png((20, 40, 220))], options={**SMALL, "steps": 3},
                            on_progress=reports.append)
    assert result.image.shape == (32, 32, 3) and result.steps == 3
    assert result.options["steps"] == 3 and result.weights["source"] == "random weights (tests)"
    assert reports and all(isinstance(p, Progress) for p in reports)
    assert reports[-1].step == reports[-1].total == 3 and reports[-1].shape == (32, 32)
    assert reports[-1].scales == 1 and reports[-1].elapsed >= 0


def test_the_client_asks_for_a_preset_without_streaming(one_place_server):
    result = client.stylize(one_place_server.url, png(seed=2), style_preset="udnie", options=SMALL)
    assert result.image.shape == (32, 32, 3) and result.image.dtype.name == "float32"


def test_the_cli_stylizes_on_the_server_and_sends_only_the_options_given(one_place_server, tmp_path, capsys):
    content, style = files(tmp_path)
    out = tmp_path / "out.png"
    code = cli.main(["stylize", str(content), str(style), "-o", str(out), "--server", one_place_server.url,
                     "--size", "32", "--steps", "2", "--init", "noise"])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and "2 steps" in capsys.readouterr().out
    # the server's defaults filled the rest: a style weight it was not sent is its default
    result = client.stylize(one_place_server.url, png(seed=1), [png()], options={"size": 32, "steps": 1})
    assert result.options["style_weight"] == cli.Options().style_weight


def test_the_cli_says_the_server_s_error_and_exits_2(one_place_server, tmp_path, capsys):
    content, style = files(tmp_path)
    code = cli.main(["stylize", str(content), str(style), "-o", str(tmp_path / "out.png"),
                     "--server", one_place_server.url, "--size", "4000", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "400 invalid_option" in err and "size" in err and "Traceback" not in err
    with pytest.raises(client.ServerError) as e:
        client.stylize(one_place_server.url, png(), style_preset="no_such_painting")
    assert e.value.code == "unknown_style_preset" and e.value.status == 400 and "udnie" in e.value.message


def test_a_busy_server_is_asked_again_after_its_retry_after(one_place_server):
    holder = SlotHolder(one_place_server)
    retries = []

    def on_retry(error, wait_s, attempt):
        retries.append((error.code, error.status, error.retry_after, wait_s, attempt))
        holder.release()  # the place frees while the client waits

    result = client.stylize(one_place_server.url, png(seed=3), [png()], options=SMALL, retries=10, max_wait_s=1,
                            on_retry=on_retry)
    assert result.image.shape == (32, 32, 3)
    code, status, retry_after, wait_s, attempt = retries[0]
    assert (code, status, attempt) == ("busy", 429, 1) and retry_after >= 1 and wait_s == 1


def test_a_busy_server_is_given_up_on_after_the_retries(one_place_server):
    holder = SlotHolder(one_place_server)
    retries = []
    try:
        with pytest.raises(client.ServerError) as e:
            client.stylize(one_place_server.url, png(seed=4), [png()], options=SMALL, retries=2, max_wait_s=0.2,
                           on_retry=lambda *args: retries.append(args))
    finally:
        holder.release()
    assert e.value.code == "busy" and e.value.status == 429 and e.value.retry_after >= 1
    assert "429 busy" in str(e.value)
    assert [attempt for _, _, attempt in retries] == [1, 2]


def test_the_cli_against_a_busy_server_retries_and_says_so(one_place_server, tmp_path, capsys):
    content, style = files(tmp_path)
    holder = SlotHolder(one_place_server)
    refused_before = sum(line["httpRequest"]["status"] == 429 for line in log_lines(one_place_server))

    def release_once_refused():  # the CLI's first try is refused (its line is logged), then the place frees
        wait_for(lambda: sum(line["httpRequest"]["status"] == 429 for line in log_lines(one_place_server))
                 > refused_before, timeout=60, what="a 429 line")
        holder.release()

    releaser = threading.Thread(target=release_once_refused)
    releaser.start()
    code = cli.main(["stylize", str(content), str(style), "-o", str(tmp_path / "out.png"),
                     "--server", one_place_server.url, "--size", "32", "--steps", "1"])
    releaser.join(60)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "429 busy" in err and "trying again in" in err and "(1/3)" in err


def test_the_server_logs_one_json_line_per_request_with_its_trace_and_no_images(one_place_server):
    payload = body()
    request = urllib.request.Request(one_place_server.url + "/stylize", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json",
                                      "X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"})
    with urllib.request.urlopen(request, timeout=120) as r:
        answer = r.read()
    result = json.loads(answer)
    bad = urllib.request.Request(one_place_server.url + "/stylize", json.dumps(body(steps=-1)).encode(),
                                 {"Content-Type": "application/json", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=30)
    assert refused.value.code == 400

    def traced():
        return [line for line in log_lines(one_place_server)
                if line.get("logging.googleapis.com/trace") == f"projects/test-project/traces/{TRACE_ID}"]
    wait_for(lambda: len(traced()) == 2, timeout=10, what="the two requests' lines")
    ok, rejected = traced()
    assert ok["httpRequest"]["status"] == 200 and ok["severity"] == "INFO" and ok["work"]["steps"] == 1
    assert ok["httpRequest"]["responseSize"] == str(len(answer))
    assert rejected["httpRequest"]["status"] == 400 and rejected["error"] == "invalid_option"
    assert rejected["severity"] == "WARNING"
    log = one_place_server.log()
    for image in (payload["content_image"], payload["style_image"].partition(",")[2], result["image"]):
        assert image[:40] not in log

"""The web page in a real browser (Playwright + Debian's chromium) against a real server.

Needs `pip install playwright` and a chromium binary (`apt-get install chromium`; another
one via NEURASTYLE_CHROMIUM). `playwright install` is not needed. Screenshots go to
$NEURASTYLE_TEST_ARTIFACTS (default: a pytest temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from nst_jax import Options

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("NEURASTYLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"no chromium at {path}: install it (Debian: `apt-get install chromium`) "
                    "or set NEURASTYLE_CHROMIUM to a chromium binary", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the web tests need Playwright: `pip install playwright`", pytrace=False)
    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(live_server.url + "/")
    yield page
    context.close()
    # No CSP violations or script errors (a 4xx answer logs "Failed to load resource", allowed).
    assert not [p for p in problems if "Failed to load resource" not in p], problems


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("NEURASTYLE_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    content = Image.new("RGB", (60, 40), (235, 225, 200))
    draw = ImageDraw.Draw(content)
    draw.ellipse((15, 5, 45, 35), fill=(30, 110, 200))
    draw.rectangle((0, 30, 60, 40), fill=(60, 140, 60))
    style = Image.new("RGB", (40, 40), (250, 200, 40))
    draw = ImageDraw.Draw(style)
    for i in range(0, 40, 8):
        draw.line((i, 0, 40 - i, 40), fill=(150, 20, 90), width=3)
    paths = {"content": folder / "content.png", "style": folder / "style.jpg", "text": folder / "notes.png"}
    content.save(paths["content"])
    style.save(paths["style"])
    paths["text"].write_text("this is not an image")
    return paths


def choose(page, content: Path, style: Path, size: int = 48, steps: int = 3) -> None:
    page.get_by_label("Content image").set_input_files(content)
    page.get_by_label("Style image").set_input_files(style)
    page.get_by_label("Size").fill(str(size))
    page.get_by_label("Steps").fill(str(steps))


def serve_config(page, live_server, config: dict) -> None:
    """Reloads the page with GET config answered by `config`, as another deployment would."""
    page.route("**/config", lambda route: route.fulfill(json=config))
    page.goto(live_server.url + "/")


def answer_stylize(page, status: int, body: str, content_type: str = "application/json") -> list[dict]:
    """Answers the page's stylize requests with `body` in place of the server; returns the
    list their JSON bodies go to."""
    sent = []

    def answer(route):
        sent.append(route.request.post_data_json)
        route.fulfill(status=status, content_type=content_type, body=body)

    page.route("**/stylize", answer)
    return sent


def test_stylize_from_the_page(page, pictures, artifacts):
    choose(page, pictures["content"], pictures["style"])
    for kind in ("Content", "Style"):
        preview = page.get_by_alt_text(f"{kind} image preview")
        preview.wait_for(state="visible")
        assert preview.evaluate("img => img.complete && img.naturalWidth > 0")
    page.get_by_label("Style strength").fill("1")  # enabled once the page has the defaults
    assert page.locator("#strength-value").inner_text() == "10×"
    with page.expect_request("**/stylize") as sent:
        page.get_by_role("button", name="Stylize").click()
    request = sent.value.post_data_json
    assert request["stream"] is True and request["content_image"].startswith("data:image/png;base64,")
    assert request["options"] == {"size": 48, "steps": 3, "style_weight": 10 * Options().style_weight,
                                  "optimizer": Options().optimizer}

    result = page.get_by_alt_text("result")
    result.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#result-image').naturalWidth > 0")
    assert result.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 32]
    download = page.get_by_role("link", name="Download")
    assert download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download").endswith(".png")
    progress = page.locator("progress")
    assert progress.evaluate("p => p.value === p.max")  # the bar is of time, full when done
    assert "Done" in page.locator("#step-text").inner_text()
    assert "3 steps" in page.locator("#result-info").inner_text()
    assert page.get_by_role("alert").is_hidden()
    assert page.get_by_role("button", name="Stylize").is_enabled()
    page.screenshot(path=str(artifacts / "web-result.png"), full_page=True)


def test_the_optimizer_can_be_chosen(page, pictures):
    choose(page, pictures["content"], pictures["style"])
    optimizer = page.get_by_label("Optimizer")
    optimizer.select_option("lbfgs")  # enabled once the page has the defaults
    with page.expect_request("**/stylize") as sent:
        page.get_by_role("button", name="Stylize").click()
    assert sent.value.post_data_json["options"]["optimizer"] == "lbfgs"
    page.get_by_alt_text("result").wait_for(state="visible", timeout=120_000)
    assert page.locator("progress").evaluate("p => p.value === p.max")
    assert "3 steps" in page.locator("#result-info").inner_text()


def test_a_server_error_is_shown(page, pictures, artifacts):
    choose(page, pictures["content"], pictures["text"])
    page.get_by_role("button", name="Stylize").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=60_000)
    assert "style_image is not an image" in alert.inner_text()
    assert page.get_by_alt_text("Stylized result").is_hidden()
    assert page.get_by_role("button", name="Stylize").is_enabled()
    page.screenshot(path=str(artifacts / "web-error.png"), full_page=True)


def test_missing_images_are_explained_without_a_request(page):
    page.get_by_role("button", name="Stylize").click()
    assert "Pick a content image and a style image" in page.get_by_role("alert").inner_text()


def test_the_endpoint_can_point_elsewhere(page, live_server, pictures):
    """?api= names the function URL when the page is hosted apart from it."""
    page.goto(live_server.url + "/?api=" + live_server.url + "/nope")
    choose(page, pictures["content"], pictures["style"])
    page.get_by_role("button", name="Stylize").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=60_000)
    assert "no such path: /nope" in alert.inner_text()


def test_images_can_be_dropped_onto_the_pickers(page, pictures):
    data = list(pictures["content"].read_bytes())
    page.locator("#content-drop").evaluate(
        """(zone, bytes) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""", data)
    preview = page.get_by_alt_text("Content image preview")
    preview.wait_for(state="visible")
    assert preview.evaluate("img => img.naturalWidth") == 60


def test_a_built_in_style_can_be_chosen(page, live_server, pictures, artifacts):
    presets = page.request.get(live_server.url + "/config").json().get("style_presets")
    assert presets, "GET config lists no built-in styles"
    page.wait_for_function(  # every thumbnail is served
        "n => [...document.querySelectorAll('#presets img')].filter(i => i.naturalWidth > 0).length === n",
        arg=len(presets))
    preset = presets[-1]
    page.get_by_label("Content image").set_input_files(pictures["content"])
    page.get_by_role("radio", name=preset["title"]).check()
    preview = page.get_by_alt_text("Style image preview")
    preview.wait_for(state="visible")
    assert preview.evaluate("img => img.naturalWidth") > 0
    assert page.locator("#style-credit").inner_text() == f"{preset['title']}, {preset['painter']}, {preset['year']}"
    page.get_by_label("Size").fill("48")
    page.get_by_label("Steps").fill("3")
    with page.expect_request("**/stylize") as sent:
        page.get_by_role("button", name="Stylize").click()
    request = sent.value.post_data_json
    assert request["style_preset"] == preset["name"] and "style_image" not in request

    page.get_by_alt_text("Stylized result").wait_for(state="visible", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#result-image').naturalWidth > 0")
    assert page.get_by_alt_text("Stylized result").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 32]
    assert page.get_by_role("alert").is_hidden()
    page.screenshot(path=str(artifacts / "web-preset.png"), full_page=True)


def test_a_file_replaces_the_built_in_style(page, live_server, pictures):
    config = page.request.get(live_server.url + "/config").json()
    painting = {"name": "shipwreck", "title": "The Shipwreck", "painter": "J. M. W. Turner", "year": 1805,
                "url": "/styles/shipwreck.jpg"}
    unknown = {**painting, "name": "sketch", "title": "A sketch", "painter": "", "year": None}
    serve_config(page, live_server, {**config, "style_presets": [painting, unknown]})
    sent = answer_stylize(page, 503, json.dumps({"error": {"code": "out_of_memory", "message": "out of memory"}}))
    page.get_by_label("Content image").set_input_files(pictures["content"])
    page.get_by_role("radio", name="A sketch").check()
    assert page.locator("#style-credit").inner_text() == "A sketch"  # no painter or year to credit
    radio = page.get_by_role("radio", name="The Shipwreck")
    radio.check()
    assert page.locator("#style-credit").inner_text() == "The Shipwreck, J. M. W. Turner, 1805"
    page.get_by_label("Style image").set_input_files(pictures["style"])
    assert not radio.is_checked()
    assert page.locator("#style-credit").is_hidden()
    preview = page.get_by_alt_text("Style image preview")
    page.wait_for_function("() => document.querySelector('#style-preview').naturalWidth === 40")
    assert preview.is_visible()
    page.get_by_role("button", name="Stylize").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert "out of memory" in alert.inner_text()
    assert sent[0]["style_image"].startswith("data:image/jpeg;base64,") and "style_preset" not in sent[0]


def test_the_settings_start_at_the_config_defaults(page, live_server):
    config = page.request.get(live_server.url + "/config").json()
    defaults, limits = config["defaults"], config["limits"]
    page.wait_for_selector("#strength:enabled")  # the page has applied GET config
    size, steps = page.get_by_label("Size"), page.get_by_label("Steps")
    assert size.input_value() == str(defaults["size"])
    assert [size.get_attribute("min"), size.get_attribute("max")] == [str(limits["min_size"]), str(limits["max_size"])]
    assert steps.input_value() == str(defaults["steps"])
    assert steps.get_attribute("max") == str(limits["max_steps"])
    assert page.locator("#option-size-value").inner_text() == str(defaults["size"])
    assert page.locator("#option-steps-value").inner_text() == str(defaults["steps"])
    assert page.get_by_label("Optimizer").input_value() == defaults["optimizer"]
    assert page.get_by_label("Init").input_value() == defaults["init"]  # under "More settings"


def test_the_controls_are_built_from_the_options_schemas(page, live_server, pictures):
    """Another deployment's GET config: its defaults and bounds show as they are, a choice and an
    option the page has never heard of are offered, and only the options changed under "More
    settings" are sent (the function's defaults fill in the rest)."""
    config = page.request.get(live_server.url + "/config").json()
    schemas = config["options"]
    schemas = {**schemas, "size": {**schemas["size"], "default": 200, "minimum": 64, "maximum": 640},
               "steps": {**schemas["steps"], "default": 40, "maximum": 100},
               "optimizer": {**schemas["optimizer"], "enum": [*schemas["optimizer"]["enum"], "sgd"]},
               "sharpness": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                             "description": "how crisp the strokes are"}}
    serve_config(page, live_server, {**config, "options": schemas, "style_presets": []})
    sent = answer_stylize(page, 400, json.dumps({"error": {"code": "invalid_option", "message": "no"}}))
    page.wait_for_selector("#strength:enabled")
    size, steps = page.get_by_label("Size"), page.get_by_label("Steps")
    assert size.input_value() == "200"  # not snapped to the slider's steps of 16 from 64
    assert [size.get_attribute("min"), size.get_attribute("max")] == ["64", "640"]
    assert [steps.input_value(), steps.get_attribute("max")] == ["40", "100"]
    assert page.locator("#presets").is_hidden()
    page.get_by_label("Optimizer").select_option("sgd")
    page.get_by_text("More settings").click()
    sharpness = page.get_by_label("Sharpness")
    assert sharpness.input_value() == "0.5" and sharpness.get_attribute("title") == "how crisp the strokes are"
    sharpness.fill("0.8")
    page.get_by_label("Content image").set_input_files(pictures["content"])
    page.get_by_label("Style image").set_input_files(pictures["style"])
    page.get_by_role("button", name="Stylize").click()
    page.get_by_role("alert").wait_for(state="visible")
    assert sent[0]["options"] == {"size": 200, "steps": 40, "style_weight": schemas["style_weight"]["default"],
                                  "optimizer": "sgd", "sharpness": 0.8}


def test_without_config_the_page_offers_no_settings(page, live_server, pictures):
    """GET config unreachable: the page says so, and a request asks for the function's defaults."""
    page.route("**/config", lambda route: route.fulfill(status=404))
    with page.expect_response("**/config"):
        page.goto(live_server.url + "/")
    sent = answer_stylize(page, 400, json.dumps({"error": {"code": "invalid_options", "message": "no"}}))
    page.get_by_text("No settings").wait_for()
    assert page.get_by_label("Size").count() == 0 and page.get_by_label("Style strength").is_disabled()
    page.get_by_label("Content image").set_input_files(pictures["content"])
    page.get_by_label("Style image").set_input_files(pictures["style"])
    page.get_by_role("button", name="Stylize").click()
    page.get_by_role("alert").wait_for(state="visible")
    assert sent[0]["options"] == {}


def test_an_error_while_streaming_is_shown(page, pictures):
    lines = [{"type": "progress", "step": 1, "total": 3, "scale": 0, "scales": 1},
             {"type": "error", "error": {"code": "deadline_exceeded", "message": "past the 300 s deadline"}}]
    answer_stylize(page, 200, "".join(json.dumps(line) + "\n" for line in lines), "application/x-ndjson")
    choose(page, pictures["content"], pictures["style"])
    page.get_by_role("button", name="Stylize").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert "past the 300 s deadline" in alert.inner_text()
    assert page.get_by_alt_text("Stylized result").is_hidden()
    assert page.get_by_role("button", name="Stylize").is_enabled()


def test_the_settings_appear_when_config_answers(page, live_server):
    held = []  # GET config, answered only when the test says
    page.route("**/config", lambda route: held.append(route))
    with page.expect_request("**/config"):
        page.goto(live_server.url + "/")
    assert page.get_by_text("Loading the settings").is_visible() and page.get_by_label("Size").count() == 0
    held[0].continue_()
    page.wait_for_selector("#strength:enabled")
    steps = page.request.get(live_server.url + "/config").json()["defaults"]["steps"]
    assert page.get_by_label("Steps").input_value() == str(steps)
    assert page.get_by_text("Loading the settings").is_hidden()


# Every 100 ms: (page clock s, the bar's fraction, the seconds-left estimate shown, the step text).
RECORD_PROGRESS = """
window.samples = [];
setInterval(() => {
  const bar = document.querySelector("progress"), left = document.querySelector("#time-left");
  if (bar) window.samples.push([performance.now() / 1000, bar.value / bar.max,
                                left && left.dataset.seconds !== undefined ? Number(left.dataset.seconds) : null,
                                document.querySelector("#step-text").textContent]);
}, 100);
"""


def test_the_bar_moves_with_time_and_says_the_time_left(browser, live_server, pictures, artifacts):
    """A run of several seconds (1000 steps at 128 px within a 15 s time limit): the bar never goes back
    and ends full; "about N s left" is shown all along, counting down, and never past the time
    limit. How close the estimate is depends on the machine's speed staying put: on a quiet
    machine within 5 % of the time really left, but a 2-core machine that another process slows
    or frees mid-run sways it until the measured step costs catch up (seen once in a whole-suite
    run: 6.3 s said when 4.0 s were left), so the estimate itself is tested on a fake clock
    (tests/test_schedule.py) and here only what the page makes of it."""
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    context.add_init_script(RECORD_PROGRESS)
    page = context.new_page()
    page.goto(live_server.url + "/")
    # 128 px: steps long enough that the seconds of each progress report (a preview to encode
    # and send) do not sway the measured step cost from one report to the next
    choose(page, pictures["content"], pictures["style"], size=128, steps=3)
    page.get_by_role("button", name="Stylize").click()  # compiles the 128 px programs
    page.get_by_alt_text("result").wait_for(state="visible", timeout=120_000)
    page.get_by_label("Steps").fill("1000")
    page.get_by_label("Time limit").select_option("15")  # the plan fits 15 s, whatever this machine's speed
    page.evaluate("window.samples = []")
    clicked = page.evaluate("performance.now() / 1000")
    with page.expect_request("**/stylize") as sent:
        page.get_by_role("button", name="Stylize").click()
    assert sent.value.post_data_json["options"]["max_seconds"] == 15
    page.get_by_alt_text("result").wait_for(state="visible", timeout=120_000)
    page.screenshot(path=str(artifacts / "web-time.png"), full_page=True)
    samples = page.evaluate("window.samples")
    context.close()
    # from the new run's start (its bar at 0): samples before the click still show the last run's
    samples = samples[next(i for i, (_, fraction, _, _) in enumerate(samples) if fraction == 0):]

    fractions = [fraction for _, fraction, _, _ in samples]
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), "the bar went back"
    assert fractions[-1] == 1
    running = [(t, left) for t, _, left, text in samples if left is not None and text.startswith("Step")]
    start, end = running[0][0], next(t for t, _, _, text in samples if text == "Done.")
    assert end - start > 3, "the run was too short to judge the estimate"
    # never past the limit (the server's clock starts a little after the click: 2 s of slack)
    assert all(left <= 15 - (t - clicked) + 2 for t, left in running), running
    # counting down: the page takes the time off between reports, which may correct it upward
    steady = [b <= a for (_, a), (_, b) in zip(running, running[1:])]
    assert sum(steady) >= 0.8 * len(steady) and running[-1][1] < running[0][1] - (end - start) / 2, running

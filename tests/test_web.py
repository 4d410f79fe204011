"""The web page in a real browser (Playwright + Debian's chromium) against a real server.

Needs `pip install playwright` and a chromium binary (`apt-get install chromium`; another
one via NEURASTYLE_CHROMIUM). `playwright install` is not needed. Screenshots go to
$NEURASTYLE_TEST_ARTIFACTS (default: a pytest temporary folder).
"""

from __future__ import annotations

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
    assert progress.evaluate("p => p.value === p.max && p.max === 3")
    assert "Done" in page.locator("#step-text").inner_text()
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
    assert page.locator("progress").evaluate("p => p.value === p.max && p.max === 3")


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

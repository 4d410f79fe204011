"""Contract tests of the HTTP function (functions/main.py) through functions-framework,
in-process with its test client: what a client sends and gets back. Real servers:
test_live_server.py; parsing alone: test_parsing.py."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading

import numpy as np
import pytest
from helpers import CONTENT, SMALL, STYLE, assert_error, b64, body, decode_png, encode, ndjson, per_job, png
from PIL import Image

from nst_jax import Limits, Options, errors, stylize


# --- stylizing -----------------------------------------------------------------

def test_stylize_returns_a_png_and_what_was_done(client):
    r = client.post("/stylize", json=body(steps=2))
    assert r.status_code == 200, r.data
    out = r.get_json()
    image = decode_png(out["image"])
    assert image.size == (out["width"], out["height"]) == (32, 32)
    assert out["steps"] == 2 and out["elapsed_s"] > 0
    assert out["weights"] == {"arch": "vgg16", "source": "random weights (tests)"}
    assert out["options"] == {**Options().to_dict(), **SMALL, "steps": 2, "max_seconds": 240}  # the ceiling
    assert "type" not in out


def test_post_to_the_root_stylizes_too(client):
    r = client.post("/", json=body(init="noise", seed=3))
    assert r.status_code == 200
    assert r.get_json()["options"]["init"] == "noise"


def test_several_styles_with_a_blend(client):
    r = client.post("/stylize", json={"content_image": CONTENT, "style_images": [STYLE, CONTENT],
                                      "style_blend": [1, 3], "options": SMALL})
    assert r.status_code == 200, r.data
    assert r.get_json()["options"]["style_blend"] == [1, 3]


def test_blend_of_the_wrong_length_is_an_option_error(client):
    r = client.post("/stylize", json={"content_image": CONTENT, "style_images": [STYLE, CONTENT],
                                      "style_blend": [1], "options": SMALL})
    assert "style_blend" in assert_error(r, 400, "invalid_option")["message"]


def odd_images() -> dict[str, bytes]:
    """Valid images that are not plain 8-bit RGB, each saved as its format stores it."""
    save = encode
    gradient = Image.linear_gradient("L").resize((40, 40))
    rgba = Image.merge("RGBA", [gradient, gradient.rotate(90), gradient.rotate(180), gradient])
    palette = Image.new("RGB", (40, 40), (10, 200, 90)).quantize(4)
    animated = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return {
        "grayscale": save(gradient, "PNG"),
        "palette_with_transparency": save(palette, "PNG", transparency=0),
        "alpha": save(rgba, "PNG"),
        "gray_alpha": save(rgba.convert("LA"), "PNG"),
        "cmyk_jpeg": save(Image.new("CMYK", (40, 40), (0, 120, 255, 30)), "JPEG"),
        "16_bit": save(Image.fromarray((np.arange(1600).reshape(40, 40) * 40).astype(np.uint16)), "PNG"),
        "animated_gif": save(animated[0], "GIF", save_all=True, append_images=animated[1:], duration=100),
        "webp": save(Image.new("RGB", (40, 40), (90, 20, 160)), "WEBP"),
        "tiff": save(gradient.convert("RGB"), "TIFF"),
        "tiny_1x1": save(Image.new("RGB", (1, 1), (255, 255, 0)), "PNG"),
        "exif_rotated": save(Image.new("RGB", (48, 32), (0, 160, 160)), "JPEG", exif=exif),
        "very_wide": save(Image.new("RGB", (2000, 20), (140, 80, 20)), "PNG"),
    }


ODD = odd_images()


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_but_valid_images_are_stylized(client, name):
    data = b64(ODD[name])
    r = client.post("/stylize", json=body(content=data, style=data))
    assert r.status_code == 200, r.data
    out = r.get_json()
    image = decode_png(out["image"])
    assert image.mode == "RGB" and image.size == (out["width"], out["height"])
    if name == "exif_rotated":  # 48 wide, 32 high as stored; 32 wide, 48 high as displayed
        assert (out["width"], out["height"]) == (21, 32)
    elif name == "very_wide":
        assert out["width"] == 32 and out["height"] <= 2
    else:
        assert (out["width"], out["height"]) == (32, 32)


# --- streaming -------------------------------------------------------------------

def test_stream_with_lbfgs_reaches_the_total(client):
    r = client.post("/stylize", json={**body(steps=3, optimizer="lbfgs"), "stream": True})
    assert r.status_code == 200, r.data
    lines = ndjson(r)
    progress, last = lines[:-1], lines[-1]
    assert progress and progress[-1]["step"] == progress[-1]["total"] == 3 and "preview" in progress[-1]
    assert last["type"] == "result" and last["options"]["optimizer"] == "lbfgs"


def test_stream_reports_progress_then_the_result(client):
    r = client.post("/stylize", json={**body(steps=3), "stream": True})
    assert r.status_code == 200
    assert r.mimetype == "application/x-ndjson"
    lines = ndjson(r)
    progress, last = lines[:-1], lines[-1]
    assert [p["step"] for p in progress] == [1, 2, 3]
    assert all(p["type"] == "progress" and p["total"] == 3 and p["scales"] == 1 and p["scale"] == 0
               for p in progress)
    previews = [decode_png(p["preview"]) for p in progress if "preview" in p]
    assert previews and previews[-1].size == (32, 32)
    assert last["type"] == "result" and last["steps"] == 3
    assert decode_png(last["image"]).size == (last["width"], last["height"])


def test_stream_reports_an_error_in_band(function):
    def failing(*args, **kwargs):
        raise errors.ImageError("style is a blank canvas")
    client, _ = function(run_jobs=per_job(failing))
    lines = ndjson(client.post("/stylize", json={**body(), "stream": True}))
    assert lines == [{"type": "error", "error": {"code": "invalid_image", "message": "style is a blank canvas"}}]


def test_stream_hides_internal_errors(function, caplog):
    def failing(*args, **kwargs):
        raise RuntimeError("secret detail")
    client, _ = function(run_jobs=per_job(failing))
    r = client.post("/stylize", json={**body(), "stream": True})
    assert ndjson(r) == [{"type": "error", "error": {"code": "internal", "message": "internal error"}}]
    assert "secret detail" in caplog.text  # logged on the server only


def spy_on_stylize():
    """A batch runner that runs each job with the real `stylize` and records the last step
    reported and how the run ended: (runner, record)."""
    record = {"step": 0, "error": None, "done": threading.Event()}
    real = stylize

    def spy(*args, on_progress, **kwargs):
        def counting(p):
            record["step"] = p.step
            on_progress(p)
        try:
            return real(*args, on_progress=counting, **kwargs)
        except BaseException as e:
            record["error"] = e
            raise
        finally:
            record["done"].set()

    return per_job(spy), record


def test_the_work_stops_when_the_client_goes_away(function):
    run_jobs, record = spy_on_stylize()
    client, _ = function(run_jobs=run_jobs, limits=Limits(max_size=1024, max_steps=1000))  # no time ceiling
    r = client.post("/stylize", json={**body(steps=1000), "stream": True}, buffered=False)
    chunks = iter(r.response)
    first = json.loads(next(chunks))
    assert first["type"] == "progress" and first["total"] == 1000
    r.close()  # what the server does when the connection drops
    assert record["done"].wait(60), "the stylization did not stop"
    assert isinstance(record["error"], errors.Cancelled)
    # It stops at the next report: at most 1/20 of the run (or ~3 s of steps) after the first.
    assert record["step"] <= 1 + 2 * 1000 // 20


# --- request mistakes ------------------------------------------------------------

def post_raw(client, data, content_type="application/json"):
    return client.post("/stylize", data=data, content_type=content_type)


@pytest.mark.parametrize("data, code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe\x00", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'"a string"', "invalid_request"),
    (b"null", "invalid_request"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # nesting too deep to parse
])
def test_malformed_or_non_object_json(client, data, code):
    assert_error(post_raw(client, data), 400, code)


@pytest.mark.parametrize("payload, code, field", [
    ({"style_image": STYLE, "options": SMALL}, "invalid_request", "content_image"),
    ({"content_image": CONTENT, "options": SMALL}, "invalid_request", "style_image"),
    ({"content_image": CONTENT, "style_image": STYLE, "style_images": [STYLE]}, "invalid_request", "style_image"),
    ({"content_image": 123, "style_image": STYLE}, "invalid_request", "content_image"),
    ({"content_image": None, "style_image": STYLE}, "invalid_request", "content_image"),
    ({"content_image": CONTENT, "style_image": ["x"]}, "invalid_request", "style_image"),
    ({"content_image": CONTENT, "style_images": []}, "invalid_request", "style_images"),
    ({"content_image": CONTENT, "style_images": STYLE}, "invalid_request", "style_images"),
    ({"content_image": CONTENT, "style_images": [STYLE] * 9}, "invalid_request", "style_images"),
    ({"content_image": CONTENT, "style_images": [STYLE, 5]}, "invalid_request", "style_images[1]"),
    ({**body(), "stream": "yes"}, "invalid_request", "stream"),
    ({**body(), "colour": "blue"}, "invalid_request", "colour"),
    ({**body(), "content_image": "!!!not base64!!!"}, "invalid_base64", "content_image"),
    ({**body(), "content_image": "abc"}, "invalid_base64", "content_image"),
    ({**body(), "style_image": "data:image/png,%89PNG"}, "invalid_base64", "style_image"),
    ({**body(), "style_image": "data:image/png;base64"}, "invalid_base64", "style_image"),
    ({**body(), "content_image": ""}, "invalid_image", "content_image"),
    ({**body(), "content_image": b64(b"hello, I am text")}, "invalid_image", "content_image"),
    ({**body(), "style_image": b64(png()[:60])}, "invalid_image", "style_image"),
    ({**body(), "style_image": b64(ODD["cmyk_jpeg"][:-200])}, "invalid_image", "style_image"),
])
def test_bad_fields_are_400_naming_the_field(client, payload, code, field):
    assert field in assert_error(client.post("/stylize", json=payload), 400, code)["message"]


@pytest.mark.parametrize("options, field", [
    ({"size": "big"}, "size"),
    ({"size": 32.5}, "size"),
    ({"size": 5000}, "size"),
    ({"size": 16}, "size"),
    ({"steps": 0}, "steps"),
    ({"steps": 1001}, "steps"),
    ({"style_weight": -1}, "style_weight"),
    ({"lr": 0}, "lr"),
    ({"init": "random"}, "init"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"preserve_color": "yes"}, "preserve_color"),
    ({"colour": 1}, "colour"),
])
def test_bad_options_are_400_invalid_option(client, options, field):
    r = client.post("/stylize", json=body(**options))
    assert field in assert_error(r, 400, "invalid_option")["message"]


@pytest.mark.parametrize("options", [[1, 2], "size=32", 7])
def test_options_must_be_an_object(client, options):
    assert_error(client.post("/stylize", json={**body(), "options": options}), 400, "invalid_option")


def test_deployment_limits_default_to_1024_px_and_1000_steps(client):
    assert "1024" in assert_error(client.post("/stylize", json=body(size=1025)), 400, "invalid_option")["message"]
    assert "1000" in assert_error(client.post("/stylize", json=body(steps=1001)), 400, "invalid_option")["message"]


def test_limits_come_from_the_settings(function):
    c, _ = function(limits=Limits(max_size=48, max_steps=5))
    assert c.get("/config").get_json()["limits"] == {"min_size": 32, "max_size": 48, "max_steps": 5,
                                                     "max_seconds": None}
    assert_error(c.post("/stylize", json=body(size=64)), 400, "invalid_option")
    assert_error(c.post("/stylize", json=body(steps=6)), 400, "invalid_option")
    assert c.post("/stylize", json=body(steps=5)).status_code == 200


def test_a_decompression_bomb_is_413(client):
    buf = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(buf, "PNG")  # 50 Mpx in a few kB
    r = client.post("/stylize", json=body(style=b64(buf.getvalue())))
    assert "style_image" in assert_error(r, 413, "image_too_large")["message"]


def test_the_pixel_limit_comes_from_the_settings(function):
    c, _ = function(max_pixels=1000)
    assert_error(c.post("/stylize", json=body()), 413, "image_too_large")  # 40x40 = 1600 px


class CountingStream(io.BytesIO):
    """A request body that counts how many of its bytes were read."""

    read_bytes = 0

    def _count(self, data):
        self.read_bytes += len(data)
        return data

    def read(self, size=-1):
        return self._count(super().read(size))

    def read1(self, size=-1):
        return self._count(super().read1(size))

    def readline(self, size=-1):
        return self._count(super().readline(size))

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.read_bytes += n
        return n


def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    body_stream = CountingStream(b" " * 30_000_001)
    r = client.post("/stylize", input_stream=body_stream, content_type="application/json")
    assert "30000000" in assert_error(r, 413, "body_too_large")["message"]
    assert body_stream.read_bytes == 0  # neither the function nor functions-framework buffered it


def test_the_body_limit_comes_from_the_settings(function):
    c, _ = function(max_body_bytes=100)
    assert len(json.dumps(body())) > 100
    assert_error(c.post("/stylize", json=body()), 413, "body_too_large")


def test_a_body_without_length_is_capped_while_read(function):
    c, _ = function(max_body_bytes=1000)
    r = c.post("/stylize", input_stream=io.BytesIO(b" " * 5000), content_type="application/json",
               environ_overrides={"wsgi.input_terminated": True})  # a chunked body
    assert_error(r, 413, "body_too_large")


@pytest.mark.parametrize("method, path", [
    ("GET", "/stylize"), ("PUT", "/stylize"), ("DELETE", "/"), ("PATCH", "/"),
    ("POST", "/healthz"), ("POST", "/app.js"), ("PUT", "/index.html"),
])
def test_wrong_method_is_405(client, method, path):
    r = client.open(path, method=method, json=body())
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/nope"), ("POST", "/nope"), ("POST", "/stylize/extra"), ("GET", "/api/stylize"),
])
def test_unknown_path_is_404(client, method, path):
    assert_error(client.open(path, method=method, json=body()), 404, "not_found")


def test_missing_weights_are_503_in_the_projects_words(function, library_config, tmp_path, caplog):
    client, _ = function(config=dataclasses.replace(library_config, weights=tmp_path / "absent.npz"))
    r = client.post("/stylize", json=body())
    error = assert_error(r, 503, "weights_unavailable")
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"ready": False, "error": error}
    for text in (r.get_data(as_text=True), health.get_data(as_text=True)):
        assert "absent.npz" not in text and str(tmp_path) not in text
        assert "/" not in json.loads(text)["error"]["message"]
    assert "absent.npz" in caplog.text  # the operator finds the reason in the log
    assert client.get("/").status_code == 200  # the page still loads


def test_corrupt_weights_are_503(function, library_config, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    client, _ = function(config=dataclasses.replace(library_config, weights=bad))
    assert_error(client.post("/stylize", json=body()), 503, "weights_unavailable")


def test_unexpected_errors_are_500_without_details(function, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")
    client, _ = function(run_jobs=per_job(broken))
    r = client.post("/stylize", json=body())
    assert r.status_code == 500
    assert r.get_json() == {"error": {"code": "internal", "message": "internal error"}}
    assert b"secret" not in r.data
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


# --- web page, static files, headers ---------------------------------------------

@pytest.mark.parametrize("path, mimetype, text", [
    ("/", "text/html", "<title>NeuraStyle</title>"),
    ("/index.html", "text/html", "Stylize"),
    ("/app.js", "text/javascript", "getReader"),
    ("/style.css", "text/css", ":root"),
])
def test_the_web_page_and_its_files(client, path, mimetype, text):
    r = client.get(path)
    assert r.status_code == 200
    assert r.mimetype == mimetype
    assert text in r.get_data(as_text=True)


@pytest.mark.parametrize("path", [
    "/../pyproject.toml",
    "/%2e%2e/pyproject.toml",
    "/%2E%2E%2Fpyproject.toml",
    "/..%2f..%2f..%2fetc/passwd",
    "/web/../functions/main.py",
    "/%2e%2e/functions/main.py",
    "//etc/passwd",
    "/.gitignore",
    "/%00",
    "/index.html%00.js",
])
def test_no_files_outside_web(client, path):
    r = client.get(path)
    assert_error(r, 404, "not_found")
    assert b"[build-system]" not in r.data and b"root:" not in r.data


def test_no_static_file_outside_web_through_a_symlink(function, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<title>x</title>")
    (tmp_path / "secret.txt").write_text("secret")
    (web / "link.txt").symlink_to(tmp_path / "secret.txt")
    c, _ = function(web_dir=web)
    assert c.get("/").status_code == 200
    assert_error(c.get("/link.txt"), 404, "not_found")


@pytest.mark.parametrize("path", ["/", "/app.js", "/healthz", "/nope"])
def test_security_headers(client, path):
    r = client.get(path)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp
    assert "connect-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_the_page_has_no_inline_scripts_or_styles(client):
    html = client.get("/").get_data(as_text=True)
    assert "<style" not in html and " style=" not in html
    assert "<script src=" in html and "<script>" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


def test_same_origin_only_without_cors_settings(client):
    r = client.post("/stylize", json=body(), headers={"Origin": "https://elsewhere.example"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers
    pre = client.options("/stylize", headers={"Origin": "https://elsewhere.example",
                                              "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and "Access-Control-Allow-Origin" not in pre.headers


def test_cors_for_configured_origins(function):
    c, _ = function(cors_origins=("https://a.example", "https://b.example"))
    pre = c.options("/stylize", headers={"Origin": "https://b.example", "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "content-type" in pre.headers["Access-Control-Allow-Headers"].lower()
    assert "Origin" in pre.headers.get_all("Vary")
    r = c.post("/stylize", json=body(), headers={"Origin": "https://a.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://a.example"
    other = c.post("/stylize", json=body(), headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    err = c.post("/stylize", data=b"{", content_type="application/json", headers={"Origin": "https://a.example"})
    assert err.status_code == 400 and err.headers["Access-Control-Allow-Origin"] == "https://a.example"
    csp = c.get("/").headers["Content-Security-Policy"]
    assert "connect-src 'self' https://a.example https://b.example" in csp


def test_cors_wildcard(function):
    c, _ = function(cors_origins=("*",))
    r = c.get("/healthz", headers={"Origin": "https://anyone.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_config_tells_the_page_the_defaults_limits_and_presets(client):
    r = client.get("/config")
    assert r.status_code == 200
    config = r.get_json()
    assert config["defaults"] == Options().to_dict()
    assert config["limits"] == {"min_size": 32, "max_size": 1024, "max_steps": 1000, "max_seconds": 240}
    assert {p["name"] for p in config["style_presets"]} == {"starry_night", "shipwreck", "great_wave", "udnie",
                                                            "water_lilies", "sakai_hoitsu_cherry"}
    assert_error(client.post("/config"), 405, "method_not_allowed")


# --- built-in styles ------------------------------------------------------------------

def test_presets_are_described_and_their_images_served(client):
    presets = {p["name"]: p for p in client.get("/config").get_json()["style_presets"]}
    assert presets["starry_night"] == {"name": "starry_night", "title": "The Starry Night",
                                       "painter": "Vincent van Gogh", "year": 1889,
                                       "url": "/styles/starry_night.jpg"}
    assert presets["shipwreck"]["painter"] == "J. M. W. Turner" and presets["shipwreck"]["year"] == 1805
    assert presets["great_wave"]["painter"] == "Katsushika Hokusai" and presets["great_wave"]["year"] == 1831
    assert presets["sakai_hoitsu_cherry"]["painter"] == "Sakai Hōitsu" and presets["sakai_hoitsu_cherry"]["year"] is None
    for preset in presets.values():
        r = client.get(preset["url"])
        assert r.status_code == 200 and r.mimetype == "image/jpeg"


def test_a_preset_is_a_style(client):
    r = client.post("/stylize", json={"content_image": CONTENT, "style_preset": "starry_night", "options": SMALL})
    assert r.status_code == 200, r.data
    assert decode_png(r.get_json()["image"]).size == (32, 32)


@pytest.mark.parametrize("name", ["mona_lisa", "", 3, None, "../main"])
def test_an_unknown_preset_is_400_listing_the_names(client, name):
    r = client.post("/stylize", json={"content_image": CONTENT, "style_preset": name, "options": SMALL})
    message = assert_error(r, 400, "unknown_style_preset")["message"]
    assert "starry_night" in message and "shipwreck" in message


def test_a_preset_and_a_style_image_are_one_too_many(client):
    r = client.post("/stylize", json={**body(), "style_preset": "starry_night"})
    assert "style_preset" in assert_error(r, 400, "invalid_request")["message"]


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    out = r.get_json()
    assert out["ready"] is True and out["device"].startswith(("cpu", "gpu", "cuda", "tpu"))
    assert out["weights"] == {"arch": "vgg16", "source": "random weights (tests)"}


# --- hostile clients (issue 12) ------------------------------------------------------------

@pytest.mark.parametrize("option, text", [
    ("style_weight", "1" + "0" * 400),
    ("lr", "-" + "9" * 320),
    ("style_blend", "[1, 1" + "0" * 400 + "]"),
])
def test_a_number_too_big_for_a_float_is_400_naming_the_option(client, option, text):
    options = json.dumps(SMALL)[:-1] + f', "{option}": {text}}}'
    data = f'{{"content_image": "{CONTENT}", "style_image": "{STYLE}", "options": {options}}}'
    r = client.post("/stylize", data=data, content_type="application/json")
    assert option in assert_error(r, 400, "invalid_option")["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "", "application/jsonp", "text/json"])
def test_only_json_is_served_so_no_page_elsewhere_can_spend_the_server_without_a_preflight(client, content_type):
    r = client.post("/stylize", data=json.dumps(body()), content_type=content_type)
    assert "application/json" in assert_error(r, 415, "unsupported_media_type")["message"]


def test_json_with_a_charset_is_json(client):
    r = client.post("/stylize", data=json.dumps(body()), content_type="Application/JSON; charset=utf-8")
    assert r.status_code == 200, r.data


def other_formats() -> dict[str, bytes]:
    """Images in formats Pillow reads but the function does not take."""
    rgb = Image.new("RGB", (40, 40), (10, 120, 200))
    return {fmt: encode(rgb, fmt) for fmt in ("PPM", "ICO", "TGA", "PCX", "EPS", "SGI", "DDS")}


@pytest.mark.parametrize("fmt, data", sorted(other_formats().items()))
def test_formats_outside_the_allow_list_are_400_unsupported_format(client, fmt, data):
    r = client.post("/stylize", json=body(content=b64(data)))
    message = assert_error(r, 400, "unsupported_format")["message"]
    assert "content_image" in message and "PNG" in message


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/healthz", 200), ("GET", "/config", 200), ("GET", "/", 200), ("GET", "/app.js", 200),
    ("POST", "/nope", 404), ("PUT", "/stylize", 405), ("POST", "/healthz", 405), ("OPTIONS", "/stylize", 204),
])
def test_bodies_sent_to_other_routes_are_not_read(client, method, path, status):
    sent = CountingStream(b"x" * 100_000)
    r = client.open(path, method=method, input_stream=sent, content_type="application/octet-stream",
                    environ_overrides={"CONTENT_LENGTH": "100000"})
    assert r.status_code == status
    r.close()
    assert sent.read_bytes == 0


@pytest.mark.parametrize("method, path", [("GET", "/healthz"), ("POST", "/nope"), ("GET", "/")])
def test_a_body_over_the_limit_is_413_on_every_route(client, method, path):
    sent = CountingStream(b"")
    r = client.open(path, method=method, input_stream=sent, environ_overrides={"CONTENT_LENGTH": "30000001"})
    assert_error(r, 413, "body_too_large")
    assert sent.read_bytes == 0


def test_refusals_do_not_read_the_body(function):
    client, service = function(max_uploads=1)
    assert service.uploads.acquire(blocking=False)
    sent = CountingStream(json.dumps(body()).encode())
    r = client.post("/stylize", input_stream=sent, content_type="application/json",
                    environ_overrides={"CONTENT_LENGTH": str(len(sent.getvalue()))})
    assert_error(r, 429, "busy")
    assert sent.read_bytes == 0


@pytest.mark.parametrize("data, field, message", [
    (b64(png()[:60]), "style_image", "style_image could not be decoded (truncated or corrupt)"),
    (b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "style_image", None),
])
def test_image_errors_are_in_the_projects_words(client, data, field, message):
    error = assert_error(client.post("/stylize", json=body(style=data)), 400, "invalid_image")
    assert error["message"].startswith(field)
    if message:
        assert error["message"] == message
    for pillow_text in ("broken", "truncated PNG", "Errno", "chunk", "image file", "cannot identify"):
        assert pillow_text not in error["message"]


@pytest.mark.parametrize("data, message", [
    (b"{not json", "request body is not valid JSON (at character 1)"),
    (b"\xff\xfe", "request body is not valid JSON (at character 0)"),
    (b'{"a": "\xff"}', "request body is not valid JSON (not UTF-8)"),
    (b"[" * 100_000 + b"]" * 100_000, "request body is not valid JSON (nested too deep)"),
])
def test_json_errors_are_in_the_projects_words(client, data, message):
    assert assert_error(client.post("/stylize", data=data, content_type="application/json"), 400,
                        "invalid_json")["message"] == message



def test_built_in_styles_are_small_and_never_larger_than_a_deployment_analyses(presets):
    from functions.settings import DEPLOYMENT_LIMITS, default_web_dir

    for preset in presets.by_name.values():
        assert max(preset.image.shape[:2]) <= DEPLOYMENT_LIMITS.max_size, preset.name
        assert (default_web_dir() / "styles" / preset.file).stat().st_size < 400_000, preset.name

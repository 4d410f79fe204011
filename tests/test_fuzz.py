"""Hostile input, generated with Hypothesis, for a bounded number of examples and time:
request bodies and paths through the HTTP function in-process, and image bytes straight
into `nst_jax.images.decode`. Whatever arrives, the answer is never a 5xx or a traceback:
a 4xx is JSON with an error code, a 200 is a result.

The request fuzz stands a fast fake in for `stylize_batch` (it is about parsing, not painting);
a handful of decodable odd images also go through the real thing at 32 px, 1 step."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import b64, encode, per_job

from functions.presets import Presets
from nst_jax import errors, images
from nst_jax.options import SPECS
from nst_jax.transfer import stylize_batch

BUDGET_S = 45.0  # per fuzz test: examples after this pass without running (bounded CI time)
FUZZ = settings(max_examples=1000, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MAX_PIXELS = 1_000_000  # for the fuzzed function: mutated headers may claim large images


class Budget:
    """Counts examples and stops running them once `BUDGET_S` has passed."""

    def __init__(self, name: str):
        self.name, self.start, self.ran, self.outcomes = name, None, 0, {}

    def __call__(self) -> bool:
        if self.start is None:
            self.start = time.monotonic()
        if time.monotonic() - self.start > BUDGET_S:
            return False
        self.ran += 1
        return True

    def note(self, outcome) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def report(self) -> str:
        return f"{self.name}: {self.ran} examples in {time.monotonic() - self.start:.0f} s, outcomes {self.outcomes}"


# --- seeds ---------------------------------------------------------------------------------

def seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    return [
        encode(rgb, "PNG"),
        encode(rgb, "JPEG", quality=80),
        encode(rgb, "JPEG", progressive=True),
        encode(rgb.convert("L"), "PNG"),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(rgb.quantize(8), "PNG", transparency=0),
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        encode(rgb, "WEBP"),
        encode(rgb, "BMP"),
        encode(rgb, "TIFF"),
        encode(Image.new("CMYK", (16, 16), (0, 120, 255, 30)), "JPEG"),
        encode(Image.fromarray((np.arange(256).reshape(16, 16) * 200).astype(np.uint16)), "PNG"),
    ]


SEEDS = seed_images()


@st.composite
def mutated_images(draw) -> bytes:
    """A real image with a few bytes truncated, flipped, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["truncate", "flip", "flip", "insert", "delete"]))
        if op == "truncate":
            del data[i:]
        elif op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i:i + draw(st.integers(1, 32))]
    return bytes(data)


@st.composite
def odd_valid_images(draw) -> bytes:
    """Valid images of odd sizes, modes and formats (1x1, 1 px tall, 300 px wide, ...)."""
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode, fmt = draw(st.sampled_from([("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"),
                                      ("RGB", "JPEG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("1", "BMP"),
                                      ("RGB", "WEBP"), ("LA", "PNG"), ("F", "TIFF")]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    return encode(image, fmt)


image_bytes = st.one_of(mutated_images(), st.sampled_from(SEEDS), st.binary(max_size=300))


image_values = st.one_of(
    image_bytes.map(b64),
    image_bytes.map(lambda d: "data:image/png;base64," + b64(d)),
    st.sampled_from(["", "data:", "data:image/png,abc", "data:;base64,", "====", "QQ", "\u00e9\u00e9\u00e9\u00e9"]),
    st.text(max_size=40),
    st.none(), st.integers(), st.lists(st.text(max_size=4), max_size=3),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**40),
                         st.integers(min_value=10**300, max_value=10**400),  # beyond a float's range
                         st.integers(min_value=-(10**400), max_value=-(10**300)),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=10)

OPTION_NAMES = ["recipe", *(spec.name for spec in SPECS)]
option_values = st.one_of(json_scalars, st.integers(-10, 2000), st.sampled_from([32, 33, 64, 1024, 1025]),
                          st.lists(st.floats(allow_nan=True), max_size=9),
                          st.sampled_from(["noise", "content", "adam", "lbfgs", "thorough", "seed", "block4_conv2"]),
                          st.dictionaries(st.sampled_from(["block1_conv1", "block3_conv1", "conv9"]),
                                          st.one_of(st.floats(allow_nan=True), st.integers(-1, 3)), max_size=3))
options = st.one_of(
    st.dictionaries(st.sampled_from(OPTION_NAMES), option_values, max_size=6),
    st.dictionaries(st.one_of(st.sampled_from(OPTION_NAMES), st.text(max_size=8)), json_values, max_size=4),
    json_values,
)

REQUEST_KEYS = ["content_image", "style_image", "style_images", "style_blend", "options", "stream"]
structured_bodies = st.fixed_dictionaries(
    {"content_image": image_values, "style_image": image_values},
    optional={"options": options, "stream": st.one_of(st.booleans(), json_scalars),
              "style_blend": json_values, "style_images": st.lists(image_values, max_size=9)},
)
near_valid_bodies = st.fixed_dictionaries(  # mostly valid: one odd value at a time gets through
    {"content_image": st.one_of(st.sampled_from(SEEDS), mutated_images()).map(b64),
     "style_image": st.sampled_from(SEEDS).map(b64)},
    optional={"options": st.dictionaries(st.sampled_from(OPTION_NAMES), option_values, max_size=2),
              "stream": st.booleans()},
)
bodies = st.one_of(
    near_valid_bodies.map(lambda b: json.dumps(b).encode()),
    structured_bodies.map(lambda b: json.dumps(b).encode()),  # NaN and Infinity as Python writes them
    st.dictionaries(st.sampled_from(REQUEST_KEYS), json_values, max_size=6).map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"[" * 5000, b'{"content_image": "' + b"A" * 9 + b'"}', b"\x00" * 10,
                     b'{"options": {"size": 1e999}}', b'{"content_image": 1, "content_image": 2}',
                     b'{"options": {"size": -Infinity}}', b"1" * 5000]),
)


# --- the function in-process -------------------------------------------------------------

def fake_stylize(content, styles, options, model=None, on_progress=None):
    h, w = images.fit_shape(*content.shape[:2], options.size)
    return np.full((h, w, 3), 0.5, np.float32)


@pytest.fixture
def fuzz_function(function):
    """(client, service, runner): the function with a fast fake batch runner, unless
    `runner["jobs"]` is set to another."""
    runner = {"jobs": per_job(fake_stylize)}
    client, service = function(max_pixels=MAX_PIXELS, run_jobs=lambda jobs, model=None: runner["jobs"](jobs, model))
    return client, service, runner


def check_answer(response) -> str:
    """The contract for any answer; returns a short outcome name."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text[:500]
    assert "Traceback" not in text and 'File "' not in text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if response.status_code >= 400:
        assert response.mimetype == "application/json"
        error = json.loads(text)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
        return f"{response.status_code} {error['code']}"
    if response.mimetype == "application/x-ndjson":
        last = json.loads(text.splitlines()[-1])
        assert last["type"] == "result", last
        return "200 stream"
    assert response.status_code == 200 and "image" in response.get_json()
    return "200"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_request_bodies(fuzz_function):
    client, service, _ = fuzz_function
    budget = Budget("request bodies")

    @settings(FUZZ, max_examples=2000)
    @given(data=bodies, content_type=st.sampled_from(["application/json", "text/plain", "",
                                                       "application/x-www-form-urlencoded"]))
    def post(data, content_type):
        if budget():
            budget.note(check_answer(client.post("/stylize", data=data, content_type=content_type)))
            assert service.admission.stats()["running"] == 0  # finished, and gave its place back

    post()
    print(budget.report())
    assert budget.ran >= 50
    assert any(o.startswith("200") for o in budget.outcomes)  # some got as far as stylize


@pytest.fixture
def hostile_web(function, tmp_path):
    """A web/ folder with a symlinked file and a symlinked folder leading out of it."""
    root = tmp_path
    web, outside = root / "web", root / "outside"
    web.mkdir()
    outside.mkdir()
    (web / "index.html").write_text("<title>ok</title>")
    (web / "app.js").write_text("// ok")
    (outside / "secret.txt").write_text("SECRET")
    (root / "secret.txt").write_text("SECRET")
    (web / "leak.txt").symlink_to(root / "secret.txt")
    (web / "dir").symlink_to(outside, target_is_directory=True)
    (web / ".env").write_text("SECRET")
    return function(web_dir=web, presets=Presets({}))[0]


path_parts = st.one_of(st.sampled_from(["..", ".", "", "%2e%2e", "%2E%2e%2f", "%00", "dir", "leak.txt", ".env",
                                        "secret.txt", "index.html", "app.js", "web", "%2f", "\\..", "..;", "~"]),
                       st.text(max_size=6))


def test_fuzz_paths_never_leave_web(hostile_web):
    from urllib.parse import quote, unquote_to_bytes, urlsplit

    budget = Budget("paths")

    @FUZZ
    @given(parts=st.lists(path_parts, max_size=5), method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS"]))
    def request(parts, method):
        if not budget():
            return
        raw = "/" + "/".join(quote(p, safe="%.\\;~") for p in parts)
        path = unquote_to_bytes(raw).decode("latin-1")  # as a WSGI server decodes it
        r = hostile_web.open("/", method=method, environ_overrides={"PATH_INFO": path, "RAW_URI": raw})
        assert b"SECRET" not in r.data
        assert r.status_code in (200, 204, 308, 400, 404, 405, 415), (path, r.status_code)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        if r.status_code == 308:  # Flask merging slashes: //x -> /x, never to another host
            assert urlsplit(r.headers["Location"]).netloc == "localhost", r.headers["Location"]
        budget.note(r.status_code)
        if r.status_code >= 400 and method != "HEAD":
            check_answer(r)

    request()
    print(budget.report())
    assert budget.ran >= 50 and 404 in budget.outcomes


# --- image decoding, directly ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt TIFF tags and EXIF
def test_fuzz_image_decoding():
    budget = Budget("image decoding")

    @settings(FUZZ, max_examples=3000)
    @given(data=st.one_of(image_bytes, odd_valid_images()))
    def decode(data):
        if not budget():
            return
        try:
            image = images.decode(data, max_pixels=MAX_PIXELS, name="fuzzed")
        except errors.ImageError as e:
            assert "fuzzed" in str(e)
            budget.note(e.code)
            return
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] * image.shape[1] <= MAX_PIXELS
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        budget.note("decoded")

    decode()
    print(budget.report())
    assert budget.ran >= 100
    assert {"decoded", "invalid_image"} <= set(budget.outcomes)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_decodable_odd_images_through_the_real_stylize(fuzz_function):
    """Mutated images that still decode (odd sizes, partial frames) through the real engine."""
    client, _, runner = fuzz_function
    budget = Budget("real stylize of odd images")

    @settings(FUZZ, max_examples=40)
    @given(data=st.one_of(odd_valid_images(), mutated_images()))
    def post(data):
        try:
            images.decode(data, max_pixels=MAX_PIXELS)
        except errors.ImageError:
            return
        if budget():
            r = client.post("/stylize", json={"content_image": b64(data), "style_image": b64(data),
                                              "options": {"size": 32, "steps": 1}})
            budget.note(check_answer(r))

    runner["jobs"] = stylize_batch
    post()
    print(budget.report())
    assert budget.ran >= 5

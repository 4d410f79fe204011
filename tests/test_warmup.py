"""`nst-jax warmup`: the shape families it runs, and that a request of a warmed size compiles nothing."""

from __future__ import annotations

import dataclasses
import threading
import time

import jax
import numpy as np
import pytest
from conftest import gradient_image, random_weights

from functions.settings import parse_sizes
import nst_jax
from nst_jax import batching, shapes, transfer, warmup
from nst_jax import model as model_lib
from nst_jax.cli import build_parser
from nst_jax.errors import OptionsError
from nst_jax.options import Limits, Options


def test_every_aspect_falls_in_one_of_the_families():
    options = Options(size=512)
    families = {shapes.scale_shapes(shape, options) for shape in warmup.families(512)}
    assert len(families) == len(warmup.families(512))
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 5000, size=(200, 2)):
        assert shapes.scale_shapes((height, width), options) in families


def test_families_at_the_default_buckets():
    # 256 px is one scale: short sides 32..256 in steps of 16, portrait and landscape, one square.
    assert len(warmup.families(256)) == 2 * (256 // 16 - 1) - 1
    # 512 px: 256, 384 and 512 px (scales √2 apart)
    assert all(len(shapes.scale_shapes(s, Options(size=512))) == 3 for s in warmup.families(512))


def test_the_command_takes_several_sizes():
    assert build_parser().parse_args(["warmup", "--size", "256", "--size", "512"]).size == [256, 512]
    assert build_parser().parse_args(["warmup", "--size", "256"]).max_batch == 1
    assert build_parser().parse_args(["warmup", "--size", "256", "--max-batch", "8"]).max_batch == 8
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["warmup", "--size", "256", "--max-batch", bad])


def test_the_command_warms_style_images_too(monkeypatch, tmp_path):
    """`--style FILE...`: the images a server's warm-up analyses at every scale (its built-in
    paintings), read before the model loads, so a bad file is a clear error at once."""
    from nst_jax import images
    from nst_jax.cli import run_warmup
    from nst_jax.errors import NSTError

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, (h, w) in zip(paths, ((40, 60), (50, 30))):
        images.write(gradient_image(h, w), path)
    calls = []
    monkeypatch.setattr(nst_jax, "load_model", lambda weights=None: "model")
    monkeypatch.setattr(warmup, "warmup", lambda sizes, **kw: calls.append((sizes, kw)))
    run_warmup(build_parser().parse_args(["warmup", "--size", "64", "--style", *map(str, paths)]))
    (sizes, kw), = calls
    assert sizes == [64] and kw["model"] == "model" and [s.shape for s in kw["styles"]] == [(40, 60, 3), (50, 30, 3)]
    with pytest.raises(NSTError, match="missing.png"):
        run_warmup(build_parser().parse_args(["warmup", "--size", "64", "--style", str(tmp_path / "missing.png")]))


@pytest.mark.slow
def test_a_request_or_a_batch_at_a_warmed_size_compiles_nothing(monkeypatch):
    # One aspect bucket keeps the families to one (square) and the test short; two scales
    # exercise resize_carry; the style has another aspect and size than the content.
    monkeypatch.setattr(shapes, "ASPECT_BUCKETS", 1)
    jax.clear_caches()  # what earlier tests compiled in this process would not be counted
    model = model_lib.from_weights(random_weights("vgg16", seed=3))
    options = Options(size=128, min_scale=64, scale_ratio=2.0, steps=3)
    reports = warmup.warmup([128], options, model=model, max_batch=4)
    # two scales, each at the batch sizes 1, 2 and 4
    assert reports[0].families == 1 and reports[0].by_function["run_steps"][0] == 2 * 3
    style = gradient_image(300, 200, seed=2)
    with warmup.counting_programs() as count:
        result = transfer.stylize(gradient_image(50, 70, seed=1), [style],
                                  dataclasses.replace(options, steps=4), model=model, on_progress=lambda _: None)
        jobs = [transfer.Job(gradient_image(50, 70, seed=seed), [style], dataclasses.replace(options, steps=4),
                             lambda _: None) for seed in (4, 5, 6)]
        batch = transfer.stylize_batch(jobs, model, batching.batch_size_for(len(jobs), 4))  # as a server pads it
    assert result.shape == (91, 128, 3) and [r.shape for r in batch] == [(91, 128, 3)] * 3
    assert count.total() == 0, f"built after warmup: {count.by_function}"


@pytest.mark.slow
def test_the_styles_warmed_serve_a_request_of_that_size(model, monkeypatch):
    """`warm_styles` analyses a style at every scale a request computes, so the request analyses
    nothing more; with one scale (multiscale off), that scale only."""
    from nst_jax import gram_cache
    warmed = gram_cache.GramCache()
    monkeypatch.setattr(gram_cache, "style_grams", warmed)
    style = gradient_image(300, 200, seed=2)  # larger than the scales: analysed at each one's size
    options = Options(size=128, min_scale=64, scale_ratio=2.0, steps=1)
    warmup.warm_styles(model, [style], 128, options)
    analysed = len(warmed)
    transfer.stylize(gradient_image(50, 70, seed=1), [style], options, model=model, on_progress=lambda _: None)
    assert analysed == 2 and len(warmed) == analysed
    single = gram_cache.GramCache()
    monkeypatch.setattr(gram_cache, "style_grams", single)
    warmup.warm_styles(model, [style], 128, dataclasses.replace(options, multiscale=False))
    assert len(single) == 1


def test_sizes_from_the_environment():
    limits = Limits(max_size=1024)
    assert parse_sizes("256, 512,256", limits) == (256, 512) and parse_sizes("", limits) == ()
    for bad in ("256,2048", "16", "abc", "256;512", "-1"):
        with pytest.raises(OptionsError, match="NEURASTYLE_WARMUP"):
            parse_sizes(bad, limits)


def test_healthz_is_not_ready_until_the_warmup_is_done(function, monkeypatch):
    release, calls = threading.Event(), []

    def fake_warmup(sizes, styles=(), log=None, model=None, max_batch=1, aspects=None):
        calls.append((tuple(sizes), len(styles), max_batch, aspects))
        release.wait(30)

    monkeypatch.setattr(warmup, "warmup", fake_warmup)
    client, service = function(warmup_sizes=(256, 512), warmup_batch=2, warmup_aspects=((4, 3),))
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "warming_up"
    release.set()
    deadline = time.monotonic() + 30
    while service.warmup.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/healthz").status_code == 200
    # started once, with the built-in styles, the batches and the aspects of the settings
    assert calls == [((256, 512), len(service.presets.names()), 2, ((4, 3),))]


def test_aspects_pick_their_families():
    picked = warmup.families(512, aspects=[(4, 3), (3, 4), (400, 300)])
    assert [shapes.scale_shapes(s, Options(size=512))[-1] for s in picked] == [(384, 512), (512, 384)]
    assert build_parser().parse_args(["warmup", "--size", "512", "--aspect", "4:3"]).aspect == [(4, 3)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["warmup", "--size", "512", "--aspect", "4x3"])

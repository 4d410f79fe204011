"""Shared fixtures: a small random-weights file and a model of such weights, the HTTP function
in-process, and a real server.

Random VGG16 weights make bad art but run every real code path, need no download and
keep the tests hermetic. The HTTP function's tests run with a library configuration whose
weights are those (`library_config`); live servers get NEURASTYLE_WEIGHTS.
The HTTP function is loaded once per session; a test serves it with its own `Settings`
(`function(max_queue=1, ...)`), not by reloading it. Helpers of the serving tests: helpers.py;
the real server (`LiveServer`) and the PNG/Base64 helpers: liveserver.py, which the
benchmarks that start servers share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from liveserver import REPO_ROOT, LiveServer

FUNCTION_SOURCE = REPO_ROOT / "functions" / "main.py"


LIBRARY_ENV = ("NEURASTYLE_WEIGHTS", "NEURASTYLE_WEIGHTS_DIR", "NEURASTYLE_COMPILATION_CACHE", "NEURASTYLE_PRECISION")


def server_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's `LiveServer`: this process's without the HTTP function's
    settings (so the server has the defaults), then `overrides`."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("NEURASTYLE_") and k not in LIBRARY_ENV) and k != "THREADS"}
    return {**env, **(overrides or {})}


def random_weights(arch: str = "vgg16", seed: int = 0):
    """`nst_jax.weights.Weights` with He-initialised random kernels and zero biases,
    Caffe-style input (BGR, 0-255, mean subtracted)."""
    from nst_jax.vgg import layer_shapes
    from nst_jax.weights import Weights

    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in layer_shapes(arch).items():
        fan_in = shape[0] * shape[1] * shape[2]
        kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params[name] = {"kernel": kernel, "bias": np.zeros(shape[-1], np.float32)}
    return Weights(arch=arch, params=params, channel_order="BGR", input_scale=255.0,
                   mean=(104.0, 117.0, 123.0), source="random weights (tests)")


def make_random_weights(path: Path, arch: str = "vgg16", seed: int = 0) -> Path:
    """Write `random_weights` to `path` (a valid weights file); returns the path."""
    from nst_jax import weights

    return weights.save(random_weights(arch, seed), path)


def gradient_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful (H, W, 3) float32 image in [0, 1] with a little noise; `seed`
    picks the colours and directions, so different seeds give different images."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width), indexing="ij")
    freq = rng.uniform(0.5, 2.0, size=(2, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=3)
    waves = np.sin(2 * np.pi * (x[..., None] * freq[0] + y[..., None] * freq[1]) + phase)
    image = 0.5 + 0.4 * waves + rng.normal(0.0, 0.03, size=(height, width, 3))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="session")
def random_weights_path(tmp_path_factory) -> Path:
    return make_random_weights(tmp_path_factory.mktemp("weights") / "random-vgg16.npz")


@pytest.fixture
def library_config(random_weights_path):
    """The process's library configuration (`nst_jax.config.current()`) with the random weights."""
    from nst_jax import config

    return dataclasses.replace(config.current(), weights=random_weights_path)


@pytest.fixture(scope="session")
def model():
    """The feature extractor of random VGG16 weights (seed 1), built once for the session."""
    from nst_jax import model as model_lib

    return model_lib.from_weights(random_weights("vgg16", seed=1))


@pytest.fixture(scope="session")
def function_module():
    """functions/main.py as functions-framework loads it, once: the module (its `SERVICE` is
    what a request is served with) and the Flask app."""
    import functions_framework

    app = functions_framework.create_app(target="neurastyle", source=str(FUNCTION_SOURCE))
    module = sys.modules["main"]
    module.app = app
    return module


@pytest.fixture(scope="session")
def presets():
    """The built-in styles of web/, read once for the session."""
    from functions.presets import Presets
    from functions.settings import default_web_dir

    return Presets.load(default_web_dir())


@contextlib.contextmanager
def serving(module, run_jobs=None, presets=None, **settings):
    """Within: `module` (functions/main.py) serves with a fresh `Service` of the default
    `Settings` but `settings`, the batch runner `run_jobs` (default the real one) and its own
    drain state. Yields (test client, service)."""
    from functions.admission import Drain
    from functions.serving import Service
    from functions.settings import Settings

    service = Service(dataclasses.replace(Settings(), **settings), drain=Drain(),
                                  presets=presets, **({"run_jobs": run_jobs} if run_jobs else {}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "SERVICE", service)
        yield module.app.test_client(), service


@pytest.fixture
def function(function_module, library_config, presets):
    """function(max_queue=1, run_jobs=fake, ...) -> (test client, service): the HTTP function
    served with those settings (by default the random weights' `library_config`), for this test."""
    with contextlib.ExitStack() as stack:
        def serve(**settings):
            settings.setdefault("presets", presets)
            settings.setdefault("config", library_config)
            return stack.enter_context(serving(function_module, **settings))
        yield serve


@pytest.fixture
def client(function):
    """Test client of the function with default settings and the random weights."""
    return function()[0]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, random_weights_path):
    """A real server on a free localhost port with the random weights, shared by the session."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with LiveServer(log_path, server_env({"NEURASTYLE_WEIGHTS": str(random_weights_path)})) as server:
        yield server


def reference_preprocess(weights, rgb):
    """What a weights file says its network takes, computed the plain way (numpy or jax arrays,
    (..., 3) RGB in [0, 1]): the reference the model's folded preprocessing is checked against."""
    x = rgb[..., ::-1] if weights.channel_order == "BGR" else rgb
    return (x * np.float32(weights.input_scale) - np.asarray(weights.mean, np.float32)) / np.asarray(weights.std,
                                                                                                    np.float32)

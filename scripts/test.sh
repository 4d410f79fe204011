#!/usr/bin/env bash
# Sets everything up (venv, weights, Chromium for the browser test), then runs the tests.
# Arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test torch

# The browser test drives Debian's Chromium (Playwright's own browser download is not possible offline).
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium
fi

.venv/bin/python -m pytest "$@"
.venv/bin/python benchmarks/bench.py --smoke

#!/usr/bin/env bash
# Sets up what is not yet (scripts/setup.sh: nothing and no network once done), then serves the
# HTTP function and the web page on http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/nst-jax serve "$@"

#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels benchmarks/gpu.sh installs on a GPU machine that has
# no network: functions-framework and what it needs beyond what such a machine has (JAX, flax,
# optax, torch, scipy, h5py, pillow, tqdm), at the versions of constraints.txt. Run here, with
# network, before carrying .whl/ (and weights/vgg16-hed.npz) to the device.
#
#   benchmarks/gpu_wheels.sh [PYTHON_VERSION ...]     # default: 3.11 3.12 3.13 (the pins need 3.11+)
#
# Pure-Python wheels serve every version; the few compiled ones (MarkupSafe, watchdog) are
# fetched for each PYTHON_VERSION. scikit-learn and scikit-image, which ship the quality
# benchmark's photos, are about 27 MB of wheels, past what the carry allows besides the weights:
# the photos go as PNGs to .whl/photos/ instead (quality.py --photos).
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("${@:-3.11 3.12 3.13}")
# shellcheck disable=SC2206
versions=(${versions[*]})
out=.whl
rm -rf "$out" && mkdir -p "$out"
pin() { grep -i "^$1==" constraints.txt; }
# functions-framework's own requirements, and theirs, that a GPU machine lacks.
packages=(functions-framework flask werkzeug gunicorn click blinker itsdangerous cloudevents deprecation
          starlette anyio sniffio idna uvicorn uvicorn-worker h11 watchdog jinja2 markupsafe packaging
          typing_extensions)
pins=()
for name in "${packages[@]}"; do
  if line=$(pin "$name"); then pins+=("$line"); else pins+=("$name"); fi
done
for v in "${versions[@]}"; do
  pip download --quiet --no-deps --only-binary=:all: --python-version "$v" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$out" "${pins[@]}"
done
.venv/bin/python benchmarks/quality.py --export-photos "$out/photos"
du -sh "$out"
ls "$out"

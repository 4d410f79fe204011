#!/usr/bin/env bash
# Fill .whl/ (git-ignored), the one folder copied to a GPU machine beside the repository for benchmarks/gpu.sh on a GPU
# machine that has no network: functions-framework and what it needs beyond what such a machine
# has (JAX, flax, optax, torch, scipy, h5py, pillow, tqdm), at the versions of constraints.txt; the
# weights, compressed (a call carries at most 64 MiB, the repository's files included, and the
# uncompressed weights with the repository are past it); the quality benchmark's photos as PNGs,
# for a machine without scikit-learn and scikit-image. Ends by checking what travels against 64 MiB.
#
#   benchmarks/gpu_wheels.sh [PYTHON_VERSION ...]     # default: 3.12, the GPU machine's Python
#
# Pure-Python wheels serve every version; the few compiled ones (MarkupSafe, watchdog) are
# fetched for each PYTHON_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("${@:-3.12}")
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
.venv/bin/python - "$out/vgg16-hed.npz" <<'EOF'
import sys
import numpy as np
from nst_jax.weights import default_path
# the same arrays and metadata, so the file's own checksum (nst_jax.weights) still holds
with np.load(default_path(), allow_pickle=False) as npz:
    np.savez_compressed(sys.argv[1], **{name: npz[name] for name in npz.files})
EOF
ls "$out"
# What is copied to the GPU machine: the repository's tracked files and .whl/
tracked=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
carried=$(du -sb "$out" | cut -f1)
total=$((tracked + carried))
echo "travels: $((tracked / 1024)) KiB of tracked files + $((carried / 1024)) KiB of $out = $((total / 1048576)) MiB of 64"
[ "$total" -le $((64 * 1048576)) ] || { echo "past the 64 MiB that may be copied to the GPU machine" >&2; exit 1; }

#!/usr/bin/env bash
# Every GPU figure of issue 15 in one run, within about 8 minutes, written under OUT:
#
#   benchmarks/gpu.sh OUT                 # on the GPU machine, from the repository root
#   GPU_SMOKE=1 benchmarks/gpu.sh OUT     # anywhere (CPU too): tiny sizes and steps, to check it end to end
#
# Needs .whl/ from benchmarks/gpu_wheels.sh: functions-framework for the HTTP function (the machine
# has no network) and a compressed copy of the weights (the uncompressed file and the repository
# together are past what may be copied to a GPU machine); or weights/vgg16-hed.npz, or NEURASTYLE_WEIGHTS.
#
# Steps, most important first, each time-boxed; a step starts only while GPU_BUDGET_S (default
# 470) seconds are not spent, and gets at most what is left:
#   env          GPU, driver, versions
#   wheels       functions-framework from .whl/
#   bench        JAX vs PyTorch eager fp32 (NCHW) at 512 and 2048 px, bf16 vs fp32 at 512, top kernels
#   quality      benchmarks/quality.py, default options, fp32: astronaut x Starry Night at 512, 1024,
#                2048 and 4096 px (4096: the largest size the library takes; its time and device peak)
#   throughput   8 default 512 px jobs batched against one at a time (benchmarks/throughput.py), after
#                a warm-up of batches up to 8: what the first batch still compiles
#   cold_start   a fresh server's first default 512 px request (100, 55, 30 steps at 256, 384, 512 px)
#                against the same request warm: empty cache; cache after `nst-jax warmup --aspect 4:3`;
#                that cache and NEURASTYLE_WARMUP=512 NEURASTYLE_WARMUP_ASPECTS=4:3 (its ready time)
#   bench_cl     JAX vs PyTorch channels-last at 2048 and 512 px, bf16 vs fp32 at 2048
#   largest      one scale of 4096 px, 2 steps, batches of 1, 2, 4, 8 until one fails: peak memory,
#                and whether the failure is the out-of-memory error the server answers with a 503
#   quality_more the quality benchmark's second pair (china x Shipwreck) at 512 and 2048 px, fp32;
#                then bf16 (NEURASTYLE_PRECISION=bfloat16), both pairs, 512 and 2048 px
#
#   GPU_STEPS="cold_start largest" benchmarks/gpu.sh OUT   # only these steps (a rerun of what was
#                                                          # skipped; env always runs)
#   GPU_BUNDLE=DIR benchmarks/gpu.sh OUT   # also, after every step, DIR/summary.txt and DIR/results.tar.gz
#                                          # (text, JSON, contact sheets, pictures as JPEG): two files,
#                                          # for a GPU machine that sends back few files
#
# OUT/summary.txt gathers each step's status and tables, and ends with the GPU_STEPS of a rerun
# of the steps that did not run; OUT/NAME.out and NAME.err hold the rest.
set -uo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
part=""
if [ "${1:-}" = "--part" ]; then  # one step's shell part, run by `step` under `timeout`
  part=$2
  shift 2
fi
out=${1:?usage: benchmarks/gpu.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$self")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${NEURASTYLE_WEIGHTS:-}" ]; then
  NEURASTYLE_WEIGHTS=$PWD/weights/vgg16-hed.npz
  [ -f .whl/vgg16-hed.npz ] && NEURASTYLE_WEIGHTS=$PWD/.whl/vgg16-hed.npz
  export NEURASTYLE_WEIGHTS
fi
if ! command -v python > /dev/null; then  # a machine with python3 alone
  mkdir -p "$out.bin" && ln -sf "$(command -v python3)" "$out.bin/python" && export PATH=$out.bin:$PATH
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the device; peaks are real use
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
budget=${GPU_BUDGET_S:-470}
chosen=${GPU_STEPS:-}
bundle=${GPU_BUNDLE:-}
summary=$out/summary.txt
[ -z "$part" ] && : > "$summary"

slow=1
if [ -n "${GPU_SMOKE:-}" ]; then
  slow=5
  bench_a=(--sizes 64 96 --steps 2 --repeats 1 --profile 1)
  bench_b=(--sizes 96 64 --steps 2 --repeats 1)
  cold=(--size 64 --steps 1)
  throughput=(--size 64 --steps 2 --batch 2 --repeats 1 --warmup)
  largest=64
  quality_sizes=(64 96)
  quality_more_sizes=(64)
else
  bench_a=(--sizes 512 2048 --steps 40 --repeats 3 --profile 10)
  bench_b=(--sizes 2048 512 --steps 40 --repeats 3)
  cold=(--size 512 --steps 100)  # the default request
  throughput=(--size 512 --batch 8 --repeats 1 --warmup)  # default requests
  largest=4096
  # 2048 is held to 512's layout (issue 15); 4096 is the library's largest size (Limits.max_size)
  quality_sizes=(512 1024 2048 4096)
  quality_more_sizes=(512 2048)
fi
quality_args=(--recipes default --checkpoint-every 50 --budgets 2 5 10)

not_run=()
# step NAME LIMIT_S COMMAND...: run COMMAND with stdout in OUT/NAME.out and stderr in OUT/NAME.err,
# at most LIMIT_S seconds (GPU_SMOKE: 5x, a CPU compiles slowly) and what is left of the budget.
step() {
  local name=$1 limit=$(($2 * slow))
  shift 2
  if [ -n "$chosen" ] && [ "$name" != env ] && [[ " $chosen " != *" $name "* ]]; then
    return
  fi
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped, budget spent" | tee -a "$summary"
    not_run+=("$name")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local began=$SECONDS
  timeout -k 10 "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local rc=$?
  local status="ok"
  [ $rc -eq 124 ] && status="TIMED OUT after $limit s" && not_run+=("$name")
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED (exit $rc; see $name.err)"
  { echo "== $name: $status in $((SECONDS - began)) s"; tail -n 40 "$out/$name.out"; } >> "$summary"
  echo "== $name: $status in $((SECONDS - began)) s (at $SECONDS s)"
  [ -n "$bundle" ] && make_bundle
}

env_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "no nvidia-smi"
  python - <<'EOF'
import os, jax, importlib.metadata as md
print("devices", jax.devices(), "weights", os.environ["NEURASTYLE_WEIGHTS"])
print({p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")})
EOF
}

# The quality benchmark's photos: from scikit-learn and scikit-image, else .whl/photos/
photos=()
python -c "import sklearn, skimage" 2>/dev/null || photos=(--photos .whl/photos)

# quality OUT_NAME QUALITY.PY ARGS...: the quality benchmark at the default options, into OUT/OUT_NAME
quality() {
  local name=$1
  shift
  if [ ${#photos[@]} -gt 0 ] && [ ! -f .whl/photos/astronaut.png ]; then
    echo "skipped: neither scikit-learn and scikit-image nor .whl/photos/ (benchmarks/gpu_wheels.sh)"
    return 0
  fi
  python benchmarks/quality.py "${quality_args[@]}" "${photos[@]}" --out "$out/$name" "$@"
}

quality_astronaut() {
  quality quality-fp32 --sizes "${quality_sizes[@]}" --pairs astronaut/starry
}

quality_more() {
  quality quality-fp32 --sizes "${quality_more_sizes[@]}" --pairs china/ship \
    && NEURASTYLE_PRECISION=bfloat16 quality quality-bf16 --sizes "${quality_more_sizes[@]}" \
      --pairs astronaut/starry china/ship
}

largest_size() {
  python - "$largest" <<'EOF'
import sys, time
import jax, numpy as np
import nst_jax
from nst_jax.options import Options
from nst_jax.transfer import Job, stylize_batch
from nst_jax.errors import is_out_of_memory

size = int(sys.argv[1])
model = nst_jax.load_model()
rng = np.random.default_rng(0)
# One scale at the largest size: the finest scale of a default run, whose memory is the run's peak
options = Options(size=size, steps=2, multiscale=False)
for batch in (1, 2, 4, 8):
    jobs = [Job(rng.random((size * 3 // 4, size, 3), np.float32), [rng.random((size, size, 3), np.float32)],
                options) for _ in range(batch)]
    start = time.perf_counter()
    try:
        outcomes = stylize_batch(jobs, model)
    except Exception as e:  # noqa: BLE001  (out of memory: the answer)
        print(f"{size} px x {batch}: failed after {time.perf_counter() - start:.1f} s, "
              f"out_of_memory (a 503 from the server): {is_out_of_memory(e)}: {type(e).__name__}: {str(e)[:300]}")
        break
    stats = jax.devices()[0].memory_stats() or {}
    print(f"{size} px x {batch}, one scale, 2 steps: {time.perf_counter() - start:.1f} s (compiling included), "
          f"device peak {stats.get('peak_bytes_in_use', 0) / 2**30:.1f} GiB of "
          f"{stats.get('bytes_limit', 0) / 2**30:.0f} GiB")
EOF
}

# OUT's text, JSON and contact sheets, and its pictures as JPEG (whole, at most 1024 px, and a
# 1:1 centre crop of 512 px), as BUNDLE/results.tar.gz beside a copy of summary.txt. Runs after
# every step, so it redoes only what changed (a 4096 px picture takes seconds to read).
make_bundle() {
  for q in "$out"/quality-*/; do
    [ "$q/results.jsonl" -nt "$q/report.txt" ] && python benchmarks/quality.py --report-only \
      "${quality_args[@]}" "${photos[@]}" --out "$q" > "$q/report.txt" 2>&1
  done
  mkdir -p "$out.bundle"
  python - "$out" "$out.bundle" <<'EOF'
import shutil, sys
from pathlib import Path
from PIL import Image
out, staging = Path(sys.argv[1]), Path(sys.argv[2])
for f in out.rglob("*"):
    if not f.is_file() or "checkpoints" in f.parts:
        continue
    target = staging / f.relative_to(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if f.suffix != ".png" or f.name.startswith(("sheet_", "curves_")):
        shutil.copy(f, target)
        continue
    if target.with_suffix(".jpg").exists() and target.with_suffix(".jpg").stat().st_mtime >= f.stat().st_mtime:
        continue
    with Image.open(f) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(512, w, h)
        im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)).save(
            target.with_name(target.stem + "_crop.jpg"), quality=90)
        im.thumbnail((1024, 1024))
        im.save(target.with_suffix(".jpg"), quality=85)
EOF
  mkdir -p "$bundle"
  tar czf "$bundle/results.tar.gz" -C "$out.bundle" .
  cp "$summary" "$bundle/summary.txt"
}

if [ -n "$part" ]; then
  "$part"
  exit
fi

step env 30 "$self" --part env_info "$out"
step wheels 60 python -m pip install --quiet --no-index --find-links .whl functions-framework==3.10.2
step bench 150 python benchmarks/bench.py "${bench_a[@]}" --precision bfloat16 --skip cold-start memory \
  --json "$out/bench.json"
step quality 200 "$self" --part quality_astronaut "$out"
step throughput 200 python benchmarks/throughput.py "${throughput[@]}"
step cold_start 240 python benchmarks/cold_start.py "${cold[@]}" --runs 1 --modes empty cache warmup --aspect 4:3 \
  --json "$out/cold_start.json"
step bench_cl 120 python benchmarks/bench.py "${bench_b[@]}" --precision bfloat16 --torch-channels-last \
  --skip cold-start memory --json "$out/bench_channels_last.json"
step largest 120 "$self" --part largest_size "$out"
step quality_more 240 "$self" --part quality_more "$out"

{
  echo "== XLA rematerialization warnings (issue 11 item 4), per step:"
  grep -c "rematerialization" "$out"/*.err
  echo "== total $SECONDS s of a $budget s budget"
  if [ ${#not_run[@]} -gt 0 ]; then
    echo "== to run what did not run or timed out: GPU_STEPS=\"${not_run[*]}\""
  else
    echo "== every step chosen ran"
  fi
} >> "$summary"
[ -n "$bundle" ] && make_bundle
cat "$summary"

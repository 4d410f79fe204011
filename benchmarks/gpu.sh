#!/usr/bin/env bash
# Every GPU figure of issue 11 in one run, within about 8 minutes, written under OUT:
#
#   benchmarks/gpu.sh OUT                 # on the GPU machine, from the repository root
#   GPU_SMOKE=1 benchmarks/gpu.sh OUT     # anywhere (CPU too): tiny sizes and steps, to check it end to end
#
# Needs weights/vgg16-hed.npz (or NEURASTYLE_WEIGHTS) and .whl/ from benchmarks/gpu_wheels.sh
# (functions-framework for the HTTP function; the machine has no network). Steps, most important
# first, each time-boxed; a step starts only while GPU_BUDGET_S (default 470) seconds are not
# spent, and gets at most what is left:
#   env          GPU, driver, versions
#   wheels       functions-framework from .whl/
#   bench        JAX vs PyTorch eager fp32 (NCHW) at 512 and 2048 px, bf16 vs fp32 at 512, top kernels
#   cold_start   a fresh server's first default 512 px request (100 + 40 steps, 2 scales) against the
#                same request warm: empty cache; cache after `nst-jax warmup --aspect 4:3` (its time)
#   throughput   8 jobs of 512 px batched against one at a time (benchmarks/throughput.py)
#   bench_cl     JAX vs PyTorch channels-last at 2048 and 512 px, bf16 vs fp32 at 2048
#   largest      4096 px at the default options (20 steps a scale), else 3072, 2048: time, peak memory
#   quality      benchmarks/quality.py at 512, 1024 and 2048 px, fp32 and bf16, the recipes "thorough"
#                and "default" with their curves of quality against seconds (its photos from
#                scikit-learn and scikit-image, else .whl/photos/ from gpu_wheels.sh)
# OUT/summary.txt gathers each step's status and tables; OUT/NAME.out and NAME.err hold the rest.
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
export NEURASTYLE_WEIGHTS=${NEURASTYLE_WEIGHTS:-$PWD/weights/vgg16-hed.npz}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the device; peaks are real use
export PIP_DISABLE_PIP_VERSION_CHECK=1
budget=${GPU_BUDGET_S:-470}
summary=$out/summary.txt
[ -z "$part" ] && : > "$summary"

slow=1
if [ -n "${GPU_SMOKE:-}" ]; then
  slow=5
  bench_a=(--sizes 64 96 --steps 2 --repeats 1 --profile 1)
  bench_b=(--sizes 96 64 --steps 2 --repeats 1)
  cold=(--size 64 --steps 1)
  throughput=(--size 64 --steps 2 --batch 2 --repeats 1)
  largest=(96 64)
  largest_steps=1
  quality=(--sizes 64 --steps 2 --pairs astronaut/starry --recipes thorough default)
else
  bench_a=(--sizes 512 2048 --steps 40 --repeats 3 --profile 10)
  bench_b=(--sizes 2048 512 --steps 40 --repeats 3)
  cold=(--size 512 --steps 100)  # the default request: 100 steps at 256 px, 40 at 512
  throughput=(--size 512 --steps 300 --batch 8 --repeats 1)
  largest=(4096 3072 2048)
  largest_steps=20
  # 2048 is held to 512's layout; "thorough" (the default before the time work) against the default:
  # quality against seconds on a GPU (issue 18)
  quality=(--sizes 512 1024 2048 --pairs astronaut/starry china/ship --recipes thorough default)
fi

# step NAME LIMIT_S COMMAND...: run COMMAND with stdout in OUT/NAME.out and stderr in OUT/NAME.err,
# at most LIMIT_S seconds (GPU_SMOKE: 5x, a CPU compiles slowly) and what is left of the budget.
step() {
  local name=$1 limit=$(($2 * slow))
  shift 2
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped, budget spent" | tee -a "$summary"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local began=$SECONDS
  timeout -k 10 "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local rc=$?
  local status="ok"
  [ $rc -eq 124 ] && status="TIMED OUT after $limit s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED (exit $rc; see $name.err)"
  { echo "== $name: $status in $((SECONDS - began)) s"; tail -n 40 "$out/$name.out"; } >> "$summary"
  echo "== $name: $status in $((SECONDS - began)) s (at $SECONDS s)"
}

env_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "no nvidia-smi"
  python - <<'EOF'
import jax, importlib.metadata as md
print("devices", jax.devices())
print({p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")})
EOF
}

largest_size() {
  python - "$largest_steps" "${largest[@]}" <<'EOF'
import sys, time
import jax, numpy as np
import nst_jax
from nst_jax.options import Options

steps, sizes = int(sys.argv[1]), [int(s) for s in sys.argv[2:]]
model = nst_jax.load_model()
rng = np.random.default_rng(0)
for size in sizes:  # largest first: the first that runs is the answer
    content = rng.random((size * 3 // 4, size, 3), np.float32)
    style = rng.random((size, size, 3), np.float32)
    start = time.perf_counter()
    try:
        nst_jax.stylize(content, [style], Options(size=size, steps=steps), model=model)
    except Exception as e:  # noqa: BLE001  (out of memory: try the next size)
        print(f"{size} px: failed after {time.perf_counter() - start:.1f} s: {type(e).__name__}: {str(e)[:300]}")
        continue
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", 0) / 2**30
    print(f"{size} px, default options, {steps} steps a scale: {time.perf_counter() - start:.1f} s "
          f"(compiling included), device peak {peak:.1f} GiB of {stats.get('bytes_limit', 0) / 2**30:.0f} GiB")
    break
EOF
}

quality() {
  local photos=()
  if ! python -c "import sklearn, skimage" 2>/dev/null; then
    if [ ! -f .whl/photos/astronaut.png ]; then
      echo "skipped: neither scikit-learn and scikit-image nor .whl/photos/ (benchmarks/gpu_wheels.sh)"
      return 0
    fi
    photos=(--photos .whl/photos)
  fi
  python benchmarks/quality.py "${quality[@]}" "${photos[@]}" --out "$out/quality-fp32" \
    && NEURASTYLE_PRECISION=bfloat16 python benchmarks/quality.py "${quality[@]}" "${photos[@]}" \
      --out "$out/quality-bf16"
}

if [ -n "$part" ]; then
  "$part"
  exit
fi

step env 30 "$self" --part env_info "$out"
step wheels 60 pip install --quiet --no-index --find-links .whl functions-framework==3.10.2
step bench 150 python benchmarks/bench.py "${bench_a[@]}" --precision bfloat16 --skip cold-start memory \
  --json "$out/bench.json"
step cold_start 150 python benchmarks/cold_start.py "${cold[@]}" --runs 1 --modes empty cache --aspect 4:3 \
  --json "$out/cold_start.json"
step throughput 100 python benchmarks/throughput.py "${throughput[@]}"
step bench_cl 120 python benchmarks/bench.py "${bench_b[@]}" --precision bfloat16 --torch-channels-last \
  --skip cold-start memory --json "$out/bench_channels_last.json"
step largest 120 "$self" --part largest_size "$out"
step quality 300 "$self" --part quality "$out"

{
  echo "== XLA rematerialization warnings (issue 11 item 4), per step:"
  grep -c "rematerialization" "$out"/*.err
  echo "== total $SECONDS s of a $budget s budget"
} >> "$summary"
cat "$summary"

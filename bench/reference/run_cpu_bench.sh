#!/usr/bin/env bash
# Issue 15's CPU measurements on the device machine, in one command from the repository root:
# builds strata, cpu_gemv_bench and ops_tests (scripts/gpu-machine-build.sh), runs the CPU kernel
# tests, cpu_gemv_bench (bf16 linear at Llama-2-7B's shapes and batch 1/4/16, decode attention,
# against the host read bandwidth of the same run), then the CPU-only decode of the 7B-shaped
# random checkpoint with strata run next to transformers on the CPU (compare_cpu_decode.py).
# Writes its outputs under $OUT (default /tmp/cpu_bench).
#
# Usage: [STEPS="build tests gemv decode"] bash bench/reference/run_cpu_bench.sh
#          [DEBS_DIR (.dev/debs)] [MODEL_DIR (/tmp/llama7b)]
# STEPS picks what runs (the build is incremental, so a second call on the same machine can run
# STEPS="build decode" cheaply); the model is written only when the decode step runs.
set -uo pipefail
debs=${1:-.dev/debs}
model=${2:-/tmp/llama7b}
out=${OUT:-/tmp/cpu_bench}
mkdir -p "$out"
start=$(date +%s)
el() { echo "[$(($(date +%s) - start)) s] $*"; }
steps=" ${STEPS:-build tests gemv decode} "
step() { [[ "$steps" == *" $1 "* ]]; }

if step decode && [ ! -f "$model/config.json" ]; then
  python3 bench/reference/make_random_llama.py "$model" > "$out/make_model.log" 2>&1 &
  maker=$!
fi
if step build; then
  bash scripts/gpu-machine-build.sh "$debs" build/gpu strata_cli cpu_gemv_bench ops_tests core_tests \
    > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  el built
fi
# gpu-machine-build.sh prints the library path last; a call without the build step uses the
# prefix an earlier call on this machine unpacked.
lib=/tmp/strata-debs/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$( (tail -1 "$out/build.log" 2>/dev/null || true) |
  sed -n 's/^export LD_LIBRARY_PATH=//p')
[ -n "$LD_LIBRARY_PATH" ] || export LD_LIBRARY_PATH="$lib:$lib/openblas-pthread"
nproc
lscpu | grep -E "Model name|^CPU\(s\)|NUMA node\(s\)|L3" || true
build/gpu/tools/strata/strata --version | grep -i cpu || true

if step tests; then
  build/gpu/tests/ops_tests --gtest_filter='CpuMatvec*:*Linear*:*Attention*:FloatIo*:BuildInfo*' \
    > "$out/ops_tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED)|SKIPPED \] Cpu" "$out/ops_tests.log"
  build/gpu/tests/core_tests --gtest_filter='ParallelFor*' 2>&1 | grep -E "^\[  (PASSED|FAILED)"
  el tests
fi

if step gemv; then
  timeout 300 build/gpu/bench/cpu_gemv_bench --seconds 0.5 --cold-mib 4096 2>&1 |
    tee "$out/cpu_gemv.txt"
  # The same small batches without AMX (the AVX-512 BF16 or AVX-512F kernel), for comparison.
  STRATA_NO_AMX=1 timeout 120 build/gpu/bench/cpu_gemv_bench --seconds 0.5 --cold-mib 4096 \
    --batches 4,8,16 --shapes 4096x4096,11008x4096 --no-attention 2>&1 |
    tee "$out/cpu_gemv_no_amx.txt"
  el gemv
fi

step decode || exit 0
[ -n "${maker:-}" ] && { wait "$maker" || { tail -20 "$out/make_model.log"; exit 1; }; }
timeout 420 python3 bench/reference/compare_cpu_decode.py build/gpu/tools/strata/strata \
  build/gpu/bench/cpu_gemv_bench "$model" --strata-tokens 16 --reference-tokens 4 \
  --json-out "$out/cpu_decode.json" 2>&1 | tee "$out/cpu_decode.txt"
el done

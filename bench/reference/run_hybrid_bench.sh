#!/usr/bin/env bash
# Issue 15's hybrid-execution measurements on the device machine, in one command from the
# repository root: builds strata and the test binaries (scripts/gpu-machine-build.sh), runs the
# offload-policy, cost-model and calibration tests and the float32 parity of every architecture
# under the cpu and auto policies on cuda + cpu + disk, then bench/reference/hybrid_decode.sh on
# the 7B-shaped random checkpoint (3 GiB on the GPU, the rest on cpu then disk, auto vs stream,
# next to strata plan's predictions; then the cpu alone). Writes its outputs under $OUT
# (default /tmp/hybrid_bench).
#
# Usage: bash bench/reference/run_hybrid_bench.sh [DEBS_DIR (.dev/debs)] [MODEL_DIR (/tmp/llama7b)]
set -uo pipefail
debs=${1:-.dev/debs}
model=${2:-/tmp/llama7b}
out=${OUT:-/tmp/hybrid_bench}
mkdir -p "$out"
start=$(date +%s)
el() { echo "[$(($(date +%s) - start)) s] $*"; }

if [ ! -f "$model/config.json" ]; then
  python3 bench/reference/make_random_llama.py "$model" >"$out/make_model.log" 2>&1 &
  maker=$!
fi
bash scripts/gpu-machine-build.sh "$debs" build/gpu strata_cli placement_tests models_tests \
  engine_tests >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
export LD_LIBRARY_PATH=$(tail -1 "$out/build.log" | sed -n 's/^export LD_LIBRARY_PATH=//p')
el built

build/gpu/tests/placement_tests --gtest_filter='OffloadPolicy*:Prefetch*' >"$out/placement.log" 2>&1
grep -E "^\[  (PASSED|FAILED)" "$out/placement.log"
build/gpu/tests/engine_tests --gtest_filter='CostModel*:MachineConstants*' >"$out/engine.log" 2>&1
grep -E "^\[  (PASSED|FAILED)" "$out/engine.log"
timeout 400 build/gpu/tests/models_tests --gtest_filter='*DispatchedParity*policy*' \
  >"$out/parity.log" 2>&1
grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]" "$out/parity.log" | head -30
el tests

if [ -n "${maker:-}" ]; then wait "$maker" || { tail -20 "$out/make_model.log"; exit 1; }; fi
el model
bash bench/reference/hybrid_decode.sh build/gpu/tools/strata/strata "$model" "$out"
el done

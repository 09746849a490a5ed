#!/usr/bin/env bash
# Issue 17's MoE benchmark on the device machine, from the repository root: a Qwen3-30B-A3B-shaped
# random bf16 checkpoint (make_random_qwen3_moe.py, 61 GB with 48 layers: LAYERS=24 halves it
# where the disk is small), 24 GiB GPU budget, experts planned after the rest (--experts auto) and
# kept off the GPU (--experts cpu): strata plan, then strata bench (prefill and decode tokens/s),
# then transformers + Accelerate with device_map="auto" and the same budgets.
# Steps (STEPS, default "build model plan bench hf") can run in separate calls (10-minute limit).
#
# Usage: bash bench/reference/run_moe_bench.sh [DEBS_DIR (.dev/debs)] [MODEL_DIR (/tmp/qwen3moe)]
#   GPU_GIB (24), CPU_GIB (100), PROMPT_TOKENS (512), DECODE_TOKENS (16), LAYERS (48), OUT
set -uo pipefail
debs=${1:-.dev/debs}
model=${2:-/tmp/qwen3moe}
out=${OUT:-/tmp/moe_bench}
steps=${STEPS:-build model plan bench hf}
gpu=${GPU_GIB:-24} cpu=${CPU_GIB:-100} prompt=${PROMPT_TOKENS:-512} decode=${DECODE_TOKENS:-16}
mkdir -p "$out"
budget="cuda:0=${gpu}GiB,cpu=${cpu}GiB"
has() { [[ " $steps " == *" $1 "* ]]; }
strata=build/gpu/tools/strata/strata

if has build; then
  bash scripts/gpu-machine-build.sh "$debs" build/gpu strata_cli models_tests placement_tests \
    >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  build/gpu/tests/models_tests --gtest_filter='*moe*:*Moe*:*Expert*' >"$out/tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED)|FAILED  \]" "$out/tests.log" | head -20
fi
export LD_LIBRARY_PATH=$(tail -1 "$out/build.log" 2>/dev/null | sed -n 's/^export LD_LIBRARY_PATH=//p')
if has model && [ ! -f "$model/config.json" ]; then
  python3 bench/reference/make_random_qwen3_moe.py "$model" --layers "${LAYERS:-48}" \
    >"$out/make_model.log" 2>&1 || { tail -20 "$out/make_model.log"; exit 1; }
  tail -1 "$out/make_model.log"
fi
for mode in auto cpu; do
  if has plan; then
    echo "== strata plan --experts $mode --max-memory $budget"
    "$strata" plan "$model" --max-memory "$budget" --experts "$mode" --dtype bf16 \
      --prefill-tokens "$prompt" >"$out/plan_$mode.txt" 2>&1
    grep -E "^(device|cuda|cpu|disk|total)|predict|decode|prefill" "$out/plan_$mode.txt" | head -20
  fi
  if has bench; then
    echo "== strata bench --experts $mode --max-memory $budget"
    timeout 500 "$strata" bench "$model" --max-memory "$budget" --experts "$mode" --dtype bf16 \
      -p "$prompt" -n "$decode" -b 1 -r 2 --json >"$out/bench_$mode.json" 2>"$out/bench_$mode.err"
    echo "rc $?"; cat "$out/bench_$mode.json"; tail -5 "$out/bench_$mode.err"
  fi
done
if has hf; then
  echo "== transformers + Accelerate, device_map=auto, max_memory {0: ${gpu}GiB, cpu: ${cpu}GiB}"
  timeout 580 python3 bench/reference/hf_moe_decode.py "$model" --gpu-gib "$gpu" --cpu-gib "$cpu" \
    --prompt "$prompt" --decode 4 2>"$out/hf.err" | tee "$out/hf.json"
  tail -3 "$out/hf.err"
fi

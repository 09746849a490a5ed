#!/usr/bin/env bash
# Device call 2 of session 7 (helper moe, issue 17), about 140 s (limit in ./limit):
#  1. the MoE GPU tests (Qwen/Mixtral/DeepSeek-V2/V3/V3-fp8 through MoeBlock, dense on the GPU,
#     experts on cpu/disk; the cpu experts' queue of blocks bit for bit; the beside thread);
#  2. issue 17's benchmark, 16 of 48 layers, the whole script (bench/reference/run_moe_bench.sh:
#     strata calibrate + plan, strata bench --experts cpu under policies auto and cpu,
#     --experts auto, transformers + Accelerate device_map="auto" at the same budgets, the
#     summary with plan vs measured, per-step phases and the 48-layer bound);
#  3. if time is left: --experts cpu --offload-policy cpu with STRATA_MOE_OVERLAP=0 (the device
#     experts launched before the cpu experts' queue instead of inside it: call 1's 84.8
#     tokens/s path) and with STRATA_SPIN_US=2000 (the pool polls longer between layers).
# Writes $OUT/moe.tgz (logs/moe/...).
set -uo pipefail
R=/tmp/moelogs; L=$R/logs/moe; mkdir -p "$L"
start=$(date +%s)
B=build/gpu
finish() {
  echo "total $(( $(date +%s) - start )) s" >> "$L/summary.txt"
  cp /root/.cache/strata/machine-*.json "$L/" 2>/dev/null
  tar czf "$OUT/moe.tgz" -C "$R" logs; rm -rf /tmp/qwen3moe
}
trap finish EXIT
left() { local l=$(( $1 - ($(date +%s) - start) )); echo $(( l < 1 ? 1 : l )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$L/gpu.txt" 2>&1
timeout 25 $B/tests/models_tests --gtest_filter='Moe/*:CpuExperts*:MoeBeside*:*deepseek*:*Deepseek*:-DeepseekPublished*' > "$L/models_moe_deepseek.txt" 2>&1
echo "models moe+deepseek rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
grep -E "FAILED|PASSED|Failure" "$L/models_moe_deepseek.txt" | head -20 | tee -a "$L/summary.txt"
LAYERS=16 TOTAL_S=$(left 128) OUT=$L/bench bash bench/reference/run_moe_bench.sh /tmp/qwen3moe \
  > "$L/moebench.txt" 2>&1
echo "moe bench rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
cat "$L/moebench.txt" >> "$L/summary.txt"
BUD=$(grep -o "budget cuda:0=[^ ]*" "$L/moebench.txt" | head -1 | cut -d' ' -f2)
variant() {  # name, env assignments...
  local name=$1; shift
  local t=$(left 143); [ "$t" -lt 14 ] && { echo "no time for $name" >> "$L/summary.txt"; return; }
  env "$@" timeout "$t" $B/tools/strata/strata bench /tmp/qwen3moe --max-memory "$BUD" \
    --experts cpu --dtype bf16 --offload-policy cpu -p 512 -n 32 -b 1 -r 1 --no-limits --json \
    > "$L/bench_$name.json" 2> "$L/bench_$name.err"
  echo "bench $name ($*) rc $? after $(( $(date +%s) - start )) s" >> "$L/summary.txt"
  grep -E "experts:|tokens/s" "$L/bench_$name.err" >> "$L/summary.txt"
}
[ -n "$BUD" ] && [ -f /tmp/qwen3moe/config.json ] && {
  variant overlap0 STRATA_MOE_OVERLAP=0
  variant spin2000 STRATA_SPIN_US=2000
}

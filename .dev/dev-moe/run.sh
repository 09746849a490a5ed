#!/usr/bin/env bash
# Device call 1 of session 7 (helper moe, issue 17), about 130 s (limit in ./limit):
#  1. the MoE GPU tests (Qwen/Mixtral/DeepSeek-V2/V3/V3-fp8 through MoeBlock, dense on the GPU,
#     experts on cpu/disk; the cpu experts' queue of blocks against one product, bit for bit);
#  2. moe_experts_bench: the cpu experts of a decode step alone, from DRAM (the queue, its block
#     sizes, one expert per task, one linear of the same bytes), as shares of the host read rate;
#  3. issue 17's benchmark, 16 of 48 layers (bench/reference/run_moe_bench.sh: strata plan,
#     strata bench --experts cpu under policies auto and cpu, --experts auto; transformers +
#     Accelerate not in call 1: its 0.59 tokens/s is known), the summary with the 48-layer
#     extrapolation and the per-phase block times;
#  4. if time is left: strata bench --experts cpu --offload-policy cpu again with
#     STRATA_MOE_BESIDE=0 (cpu experts after the device experts' launches) and STRATA_MOE_SPLIT=0
#     (one cpu expert per task instead of the queue of blocks), STRATA_SPIN_US=2000 (pool and
#     beside thread poll longer between layers), for the comparison.
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
lscpu > "$L/lscpu.txt" 2>&1
timeout 25 $B/tests/models_tests --gtest_filter='Moe/*:CpuExperts*:MoeBeside*:*deepseek*:*Deepseek*:-DeepseekPublished*' > "$L/models_moe_deepseek.txt" 2>&1
echo "models moe+deepseek rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
grep -E "FAILED|PASSED|Failure" "$L/models_moe_deepseek.txt" | head -20 | tee -a "$L/summary.txt"
timeout 25 $B/bench/moe_experts_bench 0.2 > "$L/moe_experts_bench.txt" 2>&1
echo "moe_experts_bench rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
cat "$L/moe_experts_bench.txt" >> "$L/summary.txt"
STEPS="model plan bench" LAYERS=16 TOTAL_S=$(left 118) OUT=$L/bench bash bench/reference/run_moe_bench.sh /tmp/qwen3moe \
  > "$L/moebench.txt" 2>&1
echo "moe bench rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
cat "$L/moebench.txt" >> "$L/summary.txt"
BUD=$(grep -o "budget cuda:0=[^ ]*" "$L/moebench.txt" | head -1 | cut -d' ' -f2)
variant() {  # name, env assignment
  local t=$(left 143); [ "$t" -lt 14 ] && { echo "no time for $1" >> "$L/summary.txt"; return; }
  env "$2" timeout "$t" $B/tools/strata/strata bench /tmp/qwen3moe --max-memory "$BUD" \
    --experts cpu --dtype bf16 --offload-policy cpu -p 512 -n 32 -b 1 -r 1 --no-limits --json \
    > "$L/bench_$1.json" 2> "$L/bench_$1.err"
  echo "bench $1 ($2) rc $? after $(( $(date +%s) - start )) s" >> "$L/summary.txt"
  grep -E "experts:|tokens/s" "$L/bench_$1.err" >> "$L/summary.txt"
}
[ -n "$BUD" ] && [ -f /tmp/qwen3moe/config.json ] && {
  variant nobeside STRATA_MOE_BESIDE=0
  variant spin2000 STRATA_SPIN_US=2000
  variant nosplit STRATA_MOE_SPLIT=0
}

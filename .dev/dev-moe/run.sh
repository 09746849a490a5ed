#!/usr/bin/env bash
# Device call 1 of session 7 (helper moe, issue 17), about 130 s (limit in ./limit):
#  1. the MoE GPU tests (Qwen/Mixtral/DeepSeek-V2/V3/V3-fp8 through MoeBlock, dense on the GPU,
#     experts on cpu/disk; the cpu experts' queue of blocks against one product, bit for bit);
#  2. moe_experts_bench: the cpu experts of a decode step alone, from DRAM (the queue, its block
#     sizes, one expert per task, one linear of the same bytes), as shares of the host read rate;
#  3. issue 17's benchmark, 16 of 48 layers (bench/reference/run_moe_bench.sh: strata plan,
#     strata bench --experts cpu under policies auto and cpu, --experts auto, transformers +
#     Accelerate, the summary with the 48-layer extrapolation), with the per-phase block times.
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
timeout 25 $B/tests/models_tests --gtest_filter='Moe/*:CpuExperts*:*deepseek*:*Deepseek*:-DeepseekPublished*' > "$L/models_moe_deepseek.txt" 2>&1
echo "models moe+deepseek rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
grep -E "FAILED|PASSED|Failure" "$L/models_moe_deepseek.txt" | head -20 | tee -a "$L/summary.txt"
timeout 30 $B/bench/moe_experts_bench 0.3 > "$L/moe_experts_bench.txt" 2>&1
echo "moe_experts_bench rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
cat "$L/moe_experts_bench.txt" >> "$L/summary.txt"
LAYERS=16 TOTAL_S=$(left 140) OUT=$L/bench bash bench/reference/run_moe_bench.sh /tmp/qwen3moe \
  > "$L/moebench.txt" 2>&1
echo "moe bench rc $? after $(( $(date +%s) - start )) s" | tee -a "$L/summary.txt"
cat "$L/moebench.txt" >> "$L/summary.txt"

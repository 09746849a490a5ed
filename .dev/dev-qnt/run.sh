#!/usr/bin/env bash
# Device call 2 of session 7 (helper qnt, issue 16): confirms the decode GEMV defaults chosen from
# call 1 (tensor-core streaming kernels for GPTQ 4-bit and AWQ at 1-8 rows of bf16 x, compressed-
# tensors int4 from 3 rows, FP8 under 8192 outputs from one row): the GEMV tests under the
# defaults, quant_linear_bench in a CUDA graph (defaults against call 1's defaults "tc=0,tf=0" and
# bf16, 7B shapes, batch 1 and 8), and 7B-shaped 4-layer models decoded GPU-resident through the
# decode graph. Writes $OUT/qnt.tgz (logs/qnt/*). < 45 s.
set -uo pipefail
L=/tmp/qntlogs/logs/qnt; mkdir -p "$L"
trap 'tar czf "$OUT/qnt.tgz" -C /tmp/qntlogs logs' EXIT
start=$(date +%s)
B=build/gpu
el() { echo $(( $(date +%s) - start )); }
left() { local l=$(( $1 - $(el) )); [ $l -gt $2 ] && l=$2; [ $l -lt 1 ] && l=1; echo $l; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$L/gpu.txt" 2>&1
( python3 bench/reference/make_random_quantized.py /tmp/q4 --formats awq,gptq,ct,fp8 --layers 4 \
    > "$L/make_q.txt" 2>&1; echo "rc $?" >> "$L/make_q.txt"
  python3 bench/reference/make_random_llama.py /tmp/q4/bf16 --layers 4 > "$L/make_bf16.txt" 2>&1
  echo "rc $?" >> "$L/make_bf16.txt" ) &
maker=$!
timeout 6 $B/tests/cuda_tests \
  --gtest_filter='Formats/QuantGemvCudaTest.*:Formats/QuantLinearCudaTest.*:QuantFp8*' \
  > "$L/tests_default.txt" 2>&1
echo "cuda_tests quantized rc $? at $(el) s: ok $(grep -c '^\[       OK' "$L/tests_default.txt")" \
  "failed $(grep -c '^\[  FAILED  \].*(' "$L/tests_default.txt")" | tee -a "$L/summary.txt"
grep -E "^\[  FAILED  \].*\(" "$L/tests_default.txt" | head -4 | tee -a "$L/summary.txt"
SH=4096x4096,11008x4096,4096x11008
run() {  # name, env value, formats, batches, deadline
  STRATA_QUANT_GEMV="$2" timeout $(left $5 10) $B/bench/quant_linear_bench --device cuda \
    --batches $4 --formats "$3" --shapes $SH --cold-mib 128 --seconds 0.01 --graph \
    > "$L/bench_$1.txt" 2>&1
  echo "== $1 ($2) rc $? at $(el) s" | tee -a "$L/summary.txt"
  grep -E "^==|7B token" "$L/bench_$1.txt" | tee -a "$L/summary.txt"
}
run default "" bf16,fp8,awq,gptq4,ct4 1,8 19
run call1 "tc=0,tf=0" fp8,awq,gptq4,ct4 1,8 27
wait $maker
echo "checkpoints at $(el) s: $(tail -1 "$L/make_q.txt") $(tail -1 "$L/make_bf16.txt")" | tee -a "$L/summary.txt"
S=$B/tools/strata/strata
for f in bf16 awq gptq ct fp8; do
  timeout $(left 42 3) $S bench /tmp/q4/$f -p 0 -n 32 -b 1 -r 2 --dtype bf16 --json \
    --max-memory cuda:0=70GiB,cpu=0GiB > "$L/decode_$f.json" 2> "$L/decode_$f.err"
  echo "decode $f rc $? at $(el) s: $(grep -E '"(weight_bytes|ms_per_step|weight_read_gb_per_s|share_of_memory_limit|hbm_gb_s)"' "$L/decode_$f.json" | tr -d ' \n')" \
    | tee -a "$L/summary.txt"
done
echo "total $(el) s" | tee -a "$L/summary.txt"

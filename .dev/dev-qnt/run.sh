#!/usr/bin/env bash
# Device call 1 of session 7 (helper qnt, issue 16): the tensor-core streaming int4 GEMV
# and FP8 (quant_gemv_tc.cu, STRATA_QUANT_GEMV=tc=1 / tf=1, steps per stage tu=1/2/4, blocks per SM tb) against
# session 5/6's kernels and bf16 in the same run, timed both as host-queued calls and inside a
# CUDA graph with PDL (quant_linear_bench --graph: what the decode graph sees); the GEMV tests
# under the tc variants; compute-sanitizer memcheck of the new kernels; 7B-shaped 4-layer
# bf16 / AWQ / GPTQ / compressed-tensors / FP8 models decoded GPU-resident through the decode graph
# with the defaults and with tc=1 / tf=1. Writes $OUT/qnt.tgz (logs/qnt/*). < 60 s.
set -uo pipefail
L=/tmp/qntlogs/logs/qnt; mkdir -p "$L"
start=$(date +%s)
B=build/gpu
el() { echo $(( $(date +%s) - start )); }
left() { local l=$(( $1 - $(el) )); [ $l -gt $2 ] && l=$2; [ $l -lt 1 ] && l=1; echo $l; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$L/gpu.txt" 2>&1
# Checkpoints in the background (CPU work while the GPU benches run).
( python3 bench/reference/make_random_quantized.py /tmp/q4 --formats awq,gptq,ct,fp8 --layers 4 \
    > "$L/make_q.txt" 2>&1; echo "rc $?" >> "$L/make_q.txt"
  python3 bench/reference/make_random_llama.py /tmp/q4/bf16 --layers 4 > "$L/make_bf16.txt" 2>&1
  echo "rc $?" >> "$L/make_bf16.txt" ) &
maker=$!
summ() {  # log, label: ok / failed counts and the first failures
  echo "$2 at $(el) s: ok $(grep -c '^\[       OK' "$1") failed $(grep -c '^\[  FAILED  \].*(' "$1")" \
    | tee -a "$L/summary.txt"
  grep -E "^\[  FAILED  \].*\(" "$1" | head -4 | tee -a "$L/summary.txt"
}
i=0
for v in "tc=1,tf=1" "tc=1,tf=1,tu=4" "tc=1,tf=1,tu=1,tb=4"; do
  i=$((i + 1))
  f='Formats/QuantGemvCudaTest.*'
  [ $i = 1 ] && f="$f:Formats/QuantLinearCudaTest.Decode*"  # 7B-width layers against the cpu
  STRATA_QUANT_GEMV="$v" timeout 6 $B/tests/cuda_tests --gtest_filter="$f" \
    > "$L/tests_tc$i.txt" 2>&1
  summ "$L/tests_tc$i.txt" "cuda_tests GEMV, variant $v, rc $?"
done
SH=4096x4096,11008x4096,4096x11008
run() {  # name, env value, formats, batches, seconds cap
  local t; t=$(left $5 8)
  STRATA_QUANT_GEMV="$2" timeout $t $B/bench/quant_linear_bench --device cuda --batches $4 \
    --formats "$3" --shapes $SH --cold-mib 128 --seconds 0.01 --graph > "$L/bench_$1.txt" 2>&1
  echo "== $1 ($2) rc $? at $(el) s" | tee -a "$L/summary.txt"
  grep -E "^==|7B token" "$L/bench_$1.txt" | tee -a "$L/summary.txt"
}
run default "" bf16,fp8,fp8_tensor,awq,gptq4,ct4,ct8,gptq8 1 18
run default8 "" awq,gptq4,ct4 8 21
run tc2 "tc=1,tf=1" fp8,fp8_tensor,awq,gptq4,ct4 1,8 27
run tc4 "tc=1,tf=1,tu=4" fp8,awq,gptq4,ct4 1 30
run tc1 "tc=1,tf=1,tu=1" fp8,awq,gptq4,ct4 1 33
run tc4b1 "tc=1,tf=1,tu=4,tb=1" fp8,awq,gptq4,ct4 1 36
run v1 "v1" awq,gptq4,ct4 1 38
run rows "ct=1,ro=4,ru=4" fp8,ct8 1 40
run rows28 "ct=1,ro=2,ru=8" fp8,ct8 1 42
# GPU-resident decode of the 4-layer models through the decode graph: defaults and tc=1.
wait $maker
echo "checkpoints at $(el) s: $(tail -1 "$L/make_q.txt") $(tail -1 "$L/make_bf16.txt")" | tee -a "$L/summary.txt"
S=$B/tools/strata/strata
for fv in bf16: awq: awq:tc=1 gptq:tc=1 ct:tc=1 fp8: fp8:tf=1; do
  f=${fv%%:*}; v=${fv#*:}
  STRATA_QUANT_GEMV="$v" timeout $(left 52 3) $S bench /tmp/q4/$f -p 0 -n 32 -b 1 -r 2 \
    --dtype bf16 --json --max-memory cuda:0=70GiB,cpu=0GiB > "$L/decode_${f}_$v.json" \
    2> "$L/decode_${f}_$v.err"
  echo "decode $f ($v) rc $? at $(el) s: $(grep -E '"(weight_bytes|ms_per_step|weight_read_gb_per_s|share_of_memory_limit|hbm_gb_s)"' "$L/decode_${f}_$v.json" | tr -d ' \n')" \
    | tee -a "$L/summary.txt"
done
# Memcheck of the new kernels (bf16 cases shaped for them), whatever time is left.
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
STRATA_QUANT_GEMV=tc=1,tf=1 timeout $(left 57 5) "$CS" --tool memcheck --print-limit 5 \
  $B/tests/cuda_tests --gtest_filter='Formats/QuantGemvCudaTest.HalfPrecisionActivations/tc_*' \
  > "$L/memcheck_tc.txt" 2>&1
echo "memcheck tc rc $? at $(el) s: $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$L/memcheck_tc.txt" | tail -3 | tr '\n' ' ')" \
  | tee -a "$L/summary.txt"
echo "total $(el) s" | tee -a "$L/summary.txt"
tar czf "$OUT/qnt.tgz" -C /tmp/qntlogs logs

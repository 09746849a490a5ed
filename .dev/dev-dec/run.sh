#!/usr/bin/env bash
# Device call 2 (helper dec, issue 14: 7B decode at >= 85% of the copy rate), session 7: the
# default L2 prefetch plan chosen from call 1 (o@qkv:32,gu@o:8,qkv@down:8), `strata bench` with it
# and without it (STRATA_DECODE_L2=), the decode sweep of its neighbours, the 7B GEMV shapes, the
# tests and compute-sanitizer. Writes $OUT/dec.tgz (logs/dec/*.txt). Under 60 s; every step has
# its own timeout and the benches print as they go, so a cut-off step still leaves its first lines.
set -uo pipefail
L=/tmp/declogs/logs/dec; mkdir -p "$L"
start=$(date +%s)
el() { echo "rc $1 after $(( $(date +%s) - start )) s"; }
left() { local l=$(( $1 - ($(date +%s) - start) )); [ $l -gt $2 ] && l=$2; [ $l -lt 2 ] && l=2; echo $l; }
B=build/gpu
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory --format=csv,noheader > "$L/gpu.txt" 2>&1
git log --oneline -1 >> "$L/gpu.txt" 2>&1
if [ ! -x $B/bench/cuda_gemv_bench ] || [ ! -x $B/bench/cuda_decode_graph_bench ]; then
  timeout 25 cmake --build $B --target cuda_gemv_bench cuda_decode_graph_bench > "$L/bench_build.txt" 2>&1
  el $? >> "$L/bench_build.txt"
fi
F='*GemvTest*:*GemvVariantTest*:*DecodeGraph*:*RopeKvTest*:L2Prefetch*:GemvSplitK*'
timeout $(left 10 8) $B/tests/cuda_tests --gtest_filter="$F" > "$L/cuda_tests.txt" 2>&1
el $? >> "$L/cuda_tests.txt"
tail -3 "$L/cuda_tests.txt"; grep -E "FAILED|Failure" "$L/cuda_tests.txt" | head -20
if [ -d /tmp/llama7b ]; then
  for plan in default none; do
    echo "== L2 plan: $plan" >> "$L/strata_bench.txt"
    if [ $plan = none ]; then export STRATA_DECODE_L2=; else unset STRATA_DECODE_L2; fi
    timeout $(left 24 8) $B/tools/strata/strata bench /tmp/llama7b -p 0 -n 128 >> "$L/strata_bench.txt" 2>&1
    el $? >> "$L/strata_bench.txt"
  done
  unset STRATA_DECODE_L2
  cat "$L/strata_bench.txt"
fi
timeout $(left 44 20) $B/bench/cuda_decode_graph_bench 32 12 --sweep > "$L/decode_sweep.txt" 2>&1
el $? >> "$L/decode_sweep.txt"
cat "$L/decode_sweep.txt"
timeout $(left 47 6) $B/bench/cuda_gemv_bench --7b > "$L/gemv_7b.txt" 2>&1
el $? >> "$L/gemv_7b.txt"
CS=/usr/local/cuda/bin/compute-sanitizer
timeout $(left 53 5) $CS --tool memcheck $B/tests/cuda_tests \
  --gtest_filter='L2PrefetchKernelTest*:*TailNorm*bfloat16:GemvSplitKTest*:*DecodeGraphTest.Steps*llama_bfloat16_b1' \
  > "$L/memcheck.txt" 2>&1
el $? >> "$L/memcheck.txt"
tail -3 "$L/memcheck.txt"
timeout $(left 59 4) $CS --tool racecheck $B/tests/cuda_tests \
  --gtest_filter='*TailNorm*/float16:L2PrefetchKernelTest*' > "$L/racecheck.txt" 2>&1
el $? >> "$L/racecheck.txt"
tail -3 "$L/racecheck.txt"
tar czf "$OUT/dec.tgz" -C /tmp/declogs logs

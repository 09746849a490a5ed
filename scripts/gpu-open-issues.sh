#!/usr/bin/env bash
# The device-machine measurements the open GPU issues wait for, as stages of one command, so that
# a device call runs them from the repository (a session's scratch scripts did not survive a new
# checkout). Run from the repository root on the GPU machine:
#
#   bash scripts/gpu-open-issues.sh DEBS_DIR STAGE...
#
# Stages, in the order given (each appends to its own log under LOGS, default /tmp/open-issues):
#   build     the CLI, the CUDA benchmarks and cuda_tests (scripts/gpu-machine-build.sh, sm_90;
#             BUILD_TARGETS picks fewer)
#   tests     TEST_BINARIES (ops_tests models_tests) of the build, each with TEST_FILTER (gtest
#             filter, default every test), capped at TESTS_S seconds each (build them first:
#             BUILD_TARGETS)
#   moe       issue 17: the Qwen3-30B-A3B-shaped 48-layer benchmark with transformers + Accelerate
#             in the same command (bench/reference/run_moe_bench.sh; RUNS, HF_DECODE, TOTAL_S)
#   decode    issue 14: the 7B-shaped checkpoint (written once to /tmp/llama7b), the decode graph's
#             switch sweep (cuda_decode_graph_bench --sweep), strata bench on it, and the
#             flash-decoding variants with the 8k diagnosis (cuda_attention_bench --decode)
#   sanitize  compute-sanitizer memcheck over the tests of the decode kernels (flash decoding,
#             rotary/KV GEMVs, split-K, quantized GEMVs, the decode graph; SANITIZE_FILTER narrows
#             the gtest filter) and racecheck over RACECHECK_FILTER (flash decoding's launcher and
#             graph-replay tests, split-K: racecheck ran 9 tests in 200 s in session 14, the
#             every-head-dim sweep alone outlasting that)
#   quant     issue 16: every format's 7B-shaped decode, GPU-resident and offloaded
#             (run_quant_bench.sh formats, LAYERS default 16 here)
#   gptqwide  issue 16: the wide int4 tiles (GPTQ's 128 outputs, STRATA_QUANT_GEMV=tw=1, since
#             session 14; AWQ's 256, aw=1, since session 15) against the defaults: cuda_tests
#             *QuantGemv* under each and their stage sizes (tv=4|8|16), quant_linear_bench per
#             variant, the standalone probe (bench/reference/int4_gemv_probe.cu, GPTQ and AWQ
#             layouts), and 16-layer GPTQ and AWQ decodes (WIDE_FORMATS) with tw=1,aw=1 as a
#             variant row (build cuda_tests quant_linear_bench strata_cli first)
#   cpuquant  issue 16 / 15: the host's quantized decode kernels (session 15's CPU work, measured
#             on a 2-core VM only): quant_linear_bench --device cpu at one thread and all, batch
#             1, 4 and 8, every format, and GPTQ under STRATA_QUANT_CPU_GPTQ=strips and panels
#             (whether panels become the default); build quant_linear_bench first
# The moe stage takes what is left of TOTAL_S (default 570) for the whole command; the other
# stages have caps (DECODE_S, SANITIZE_S, QUANT_S). The logs end in one tarball
# $OUT/open-issues.tgz when OUT is set (the device tool brings back at most 8 files).
set -uo pipefail
debs=${1:?usage: gpu-open-issues.sh DEBS_DIR STAGE...}
shift
cd "$(dirname "$0")/.."
logs=${LOGS:-/tmp/open-issues}
mkdir -p "$logs"
start=$(date +%s)
say() { echo "[$(($(date +%s) - start)) s] $*"; }
# Seconds left of TOTAL_S, less a margin for the tarball.
left() { echo $((${TOTAL_S:-570} - ($(date +%s) - start) - 10)); }
build=build/gpu
strata=$build/tools/strata/strata
export LD_LIBRARY_PATH=/tmp/strata-debs/usr/lib/x86_64-linux-gnu:/tmp/strata-debs/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$logs/gpu.txt"

llama7b() {
  [ -f /tmp/llama7b/config.json ] && return 0
  python3 bench/reference/make_random_llama.py /tmp/llama7b >"$logs/make_llama.log" 2>&1
}

for stage in "$@"; do
  case "$stage" in
    build)
      # BUILD_TARGETS: fewer targets where the call is short (the moe stage needs strata_cli).
      # shellcheck disable=SC2086
      STRATA_KEEP_GOING=1 bash scripts/gpu-machine-build.sh "$debs" "$build" \
        ${BUILD_TARGETS:-strata_cli cuda_tests cuda_attention_bench cuda_decode_graph_bench \
        quant_linear_bench} >"$logs/build.log" 2>&1
      say "build rc $?"
      grep -E "error|FAILED" "$logs/build.log" | head -10
      ;;
    tests)
      for binary in ${TEST_BINARIES:-ops_tests models_tests}; do
        timeout "${TESTS_S:-120}" "$build/tests/$binary" --gtest_filter="${TEST_FILTER:-*}" \
          >"$logs/$binary.txt" 2>&1
        say "$binary rc $? (124: cut by its time cap)"
        grep -E "^\[  (PASSED|FAILED) |tests ran|Failure" "$logs/$binary.txt" | head -12
      done
      ;;
    moe)
      OUT="$logs/moe" STRATA="$strata" RUNS="${RUNS:-cpu:auto auto:auto}" \
        HF_DECODE="${HF_DECODE:-4}" TOTAL_S="$(left)" \
        bash bench/reference/run_moe_bench.sh /tmp/qwen3moe 2>&1 | tee "$logs/moe_summary.txt"
      say "moe done"
      ;;
    decode)
      llama7b &
      writer=$!
      timeout "${DECODE_S:-120}" "$build/bench/cuda_decode_graph_bench" 32 32 --sweep 2>&1 |
        tee "$logs/decode_sweep.txt"
      wait "$writer"
      say "sweep done, 7B checkpoint: $(du -sh /tmp/llama7b | cut -f1)"
      timeout 120 "$strata" bench /tmp/llama7b -p 512 -n 128 -r 3 --json \
        >"$logs/bench7b.json" 2>"$logs/bench7b.err"
      tail -4 "$logs/bench7b.err"
      STRATA_BENCH_VARIANTS="${VARIANTS:-4,7,10,11,12,13,14}" timeout 120 \
        "$build/bench/cuda_attention_bench" --decode 2>&1 | tee "$logs/attention.txt"
      say "decode done"
      ;;
    sanitize)
      # SANITIZE_FILTER narrows memcheck; racecheck is slow and takes RACECHECK_FILTER.
      filter=${SANITIZE_FILTER:-'*FlashDecode*:*GemvRope*:*GemvSplitK*:*QuantGemv*:*DecodeGraph*:*L2Prefetch*:*RopeKv*'}
      race=${RACECHECK_FILTER:-'*FlashDecodeVariants.DeviceLengths*:*FlashDecodeAttentionLauncher*:*GemvSplitK*'}
      for tool in memcheck racecheck; do
        tool_filter=$filter
        [ "$tool" = racecheck ] && tool_filter=$race
        timeout "${SANITIZE_S:-150}" /usr/local/cuda/bin/compute-sanitizer --tool "$tool" \
          --error-exitcode 9 "$build/tests/cuda_tests" --gtest_filter="$tool_filter" \
          >"$logs/sanitize_$tool.txt" 2>&1
        say "$tool rc $? (124: cut by its time cap)"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$logs/sanitize_$tool.txt" | tail -4
      done
      ;;
    quant)
      OUT=/tmp/quant7b BUILD="$build" LAYERS="${LAYERS:-16}" timeout "${QUANT_S:-300}" \
        bash bench/reference/run_quant_bench.sh formats 2>&1 | tee "$logs/quant.txt"
      say "quant done"
      ;;
    gptqwide)
      for v in "tw=1" "tw=1,tv=4" "tw=1,tv=8" "tw=1,tv=16" "aw=1" "aw=1,tv=8" "aw=1,tv=16"; do
        STRATA_QUANT_GEMV=$v timeout 60 "$build/tests/cuda_tests" \
          --gtest_filter='*QuantGemv*:*QuantLinearCuda*' >"$logs/gptqwide_tests_$v.txt" 2>&1
        say "cuda_tests [$v] rc $?: $(grep -E '^\[  (PASSED|FAILED) ' "$logs/gptqwide_tests_$v.txt" |
          tr '\n' ' ')"
      done
      for v in "" "tw=1,aw=1" "tw=1,aw=1,tv=8" "tw=1,aw=1,tv=16"; do
        echo "== STRATA_QUANT_GEMV=$v"
        STRATA_QUANT_GEMV=$v timeout 60 "$build/bench/quant_linear_bench" --device cuda \
          --formats gptq4,awq --batches 1,2 --graph \
          --shapes 11008x4096,4096x4096,4096x11008,12288x4096
      done >"$logs/gptqwide_bench.txt" 2>&1
      grep -E "^==|7B token graph" "$logs/gptqwide_bench.txt"
      /usr/local/cuda/bin/nvcc -O3 -std=c++20 -arch=sm_90 -Isrc -o /tmp/int4_probe \
        bench/reference/int4_gemv_probe.cu && for shape in "11008 4096" "4096 4096" \
        "11008 4096 awq" "4096 4096 awq" "4096 11008 awq"; do
        # shellcheck disable=SC2086
        timeout 30 /tmp/int4_probe $shape
      done >"$logs/gptqwide_probe.txt" 2>&1
      OUT=/tmp/quant7b BUILD="$build" LAYERS="${LAYERS:-16}" FORMATS="${WIDE_FORMATS:-gptq awq}" \
        OFFLOAD_POLICIES="" GPU_VARIANTS="STRATA_QUANT_GEMV=tw=1,aw=1" timeout "${QUANT_S:-200}" \
        bash bench/reference/run_quant_bench.sh formats 2>&1 | tee "$logs/gptqwide_decode.txt" |
        tail -4
      say "gptqwide done"
      ;;
    cpuquant)
      for threads in 1 ""; do
        echo "== STRATA_NUM_THREADS=${threads:-all}"
        STRATA_NUM_THREADS=$threads timeout 120 "$build/bench/quant_linear_bench" --device cpu \
          --formats bf16,fp8,awq,gptq4,gptq8,ct4,ct8 --batches 1,4,8 \
          --shapes 11008x4096,4096x11008,4096x4096
      done >"$logs/cpuquant.txt" 2>&1
      for layout in strips panels; do
        echo "== STRATA_QUANT_CPU_GPTQ=$layout"
        STRATA_QUANT_CPU_GPTQ=$layout timeout 60 "$build/bench/quant_linear_bench" --device cpu \
          --formats gptq4 --batches 1,4 --shapes 11008x4096,4096x11008
      done >>"$logs/cpuquant.txt" 2>&1
      grep -E "^==|host read|11008x4096 +1 " "$logs/cpuquant.txt"
      say "cpuquant done"
      ;;
    *)
      echo "unknown stage $stage (build, tests, moe, decode, sanitize, quant, gptqwide, cpuquant)" >&2
      ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/open-issues.tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
fi
say "all done"

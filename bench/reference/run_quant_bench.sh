#!/usr/bin/env bash
# Quantized decode on the device machine (issue 16), each stage one command of under 10 minutes:
#
#   bash bench/reference/run_quant_bench.sh micro   # quant_linear_bench: every format's layers
#                                                   # on cuda:0 and the cpu vs HBM / host read
#   bash bench/reference/run_quant_bench.sh ckpt    # 7B-shaped random checkpoints: bf16 + fp8,
#                                                   # awq, gptq, ct (about 33 GB under $OUT)
#   bash bench/reference/run_quant_bench.sh decode  # strata bench on each: GPU-resident, then
#                                                   # 1 GiB on the GPU and the rest on the cpu
#   bash bench/reference/run_quant_bench.sh formats # all of it in one device call (< 5 min):
#       per format (bf16 first), make the 7B-shaped checkpoint, bench it GPU-resident and with
#       1 GiB on the GPU (streamed over PCIe, and computed by the cpu), delete it; then a table
#       of ms/token, GB/s of the packed bytes against the HBM copy rate, and the offloaded runs
#       against the PCIe bound on the bytes streamed (pinned host-to-GPU rate measured here).
#       Needs BUILD=build/gpu (the device build) and ~15 GB free under OUT.
#
#       A variant that fits ~150 s (one helper slot): fewer formats and decoder layers, e.g.
#         OUT=/tmp/q7 BUILD=build/gpu FORMATS="bf16 awq fp8" LAYERS=16 OFFLOAD_TOKENS=3 \
#           bash bench/reference/run_quant_bench.sh formats
#       (the table's GB/s and its PCIe bound are per byte, so they stay comparable with 32 layers;
#       ms/token scale with the layers).
#
# OUT (default /tmp/quant7b) holds the checkpoints; BUILD (default build/cuda) the CUDA build;
# FORMATS, LAYERS (32), GPU_TOKENS (32), OFFLOAD_TOKENS (4) shape the `formats` stage.
# OFFLOAD_POLICIES (default "stream cpu"; empty: GPU-resident only) picks the offloaded runs;
# GPU_VARIANTS (environment assignments, e.g. "STRATA_QUANT_GEMV=tg=0 STRATA_DECODE_L2=") adds
# GPU-resident runs under each, written
# as <format>.gpu.<variant>.json and printed as rows of their own.
set -euo pipefail
stage=${1:?usage: run_quant_bench.sh micro|ckpt|decode}
OUT=${OUT:-/tmp/quant7b}
BUILD=${BUILD:-build/cuda}
LAYERS=${LAYERS:-32}
GPU_TOKENS=${GPU_TOKENS:-32}
OFFLOAD_TOKENS=${OFFLOAD_TOKENS:-4}
build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DSTRATA_BUILD_BENCH=ON > /dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target "$@" > /dev/null
}
case "$stage" in
  micro)
    build quant_linear_bench
    "$BUILD/bench/quant_linear_bench" --device all --batches 1,4
    ;;
  ckpt)
    [ -f "$OUT/bf16/config.json" ] || python3 bench/reference/make_random_llama.py "$OUT/bf16"
    python3 bench/reference/make_random_quantized.py "$OUT"
    du -sh "$OUT"/*
    ;;
  decode)
    build strata_cli
    for f in bf16 fp8 awq gptq ct; do
      echo "== $f: GPU-resident"
      "$BUILD/tools/strata/strata" bench "$OUT/$f" -p 0 -n 32 -b 1 -r 3 --dtype bf16 \
        --max-memory cuda:0=70GiB,cpu=0GiB
      echo "== $f: 1 GiB on cuda:0, the rest on the cpu"
      "$BUILD/tools/strata/strata" bench "$OUT/$f" -p 0 -n 8 -b 1 -r 2 --dtype bf16 \
        --max-memory cuda:0=1GiB,cpu=200GiB
    done
    ;;
  formats)
    S="$BUILD/tools/strata/strata"
    [ -x "$S" ] || build strata_cli
    mkdir -p "$OUT/json"
    python3 - "$OUT/json/pcie.json" <<'PY'
import json, sys, time, torch
host = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
dev = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
dev.copy_(host, non_blocking=True); torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(5): dev.copy_(host, non_blocking=True)
torch.cuda.synchronize()
json.dump({"pinned_h2d_gb_s": 5 * (1 << 30) / (time.perf_counter() - t) / 1e9}, open(sys.argv[1], "w"))
PY
    for f in ${FORMATS:-bf16 fp8 awq gptq ct}; do
      t0=$(date +%s)
      if [ "$f" = bf16 ]; then
        python3 bench/reference/make_random_llama.py "$OUT/bf16" --layers "$LAYERS" > /dev/null
      else
        python3 bench/reference/make_random_quantized.py "$OUT" --formats "$f" --layers "$LAYERS" \
          > /dev/null
      fi
      t1=$(date +%s)
      "$S" bench "$OUT/$f" -p 0 -n "$GPU_TOKENS" -b 1 -r 2 --dtype bf16 --json \
        --max-memory cuda:0=70GiB,cpu=0GiB > "$OUT/json/$f.gpu.json" || true
      for v in ${GPU_VARIANTS:-}; do
        env "$v" "$S" bench "$OUT/$f" -p 0 -n "$GPU_TOKENS" -b 1 -r 2 --dtype bf16 \
          --json --max-memory cuda:0=70GiB,cpu=0GiB > "$OUT/json/$f.gpu.$v.json" || true
      done
      for policy in ${OFFLOAD_POLICIES-stream cpu}; do
        "$S" bench "$OUT/$f" -p 0 -n "$OFFLOAD_TOKENS" -b 1 -r 2 --dtype bf16 --json --no-limits \
          --offload-policy "$policy" --max-memory cuda:0=1GiB,cpu=200GiB \
          > "$OUT/json/$f.offload_$policy.json" || true
      done
      rm -rf "${OUT:?}/$f"
      echo "== $f: checkpoint $((t1 - t0)) s, benches $(( $(date +%s) - t1 )) s"
    done
    python3 bench/reference/quant_bench_table.py "$OUT/json"
    ;;
  *)
    echo "unknown stage $stage (micro, ckpt, decode, formats)" >&2
    exit 2
    ;;
esac

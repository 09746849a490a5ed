#!/usr/bin/env bash
# Quantized decode on the device machine (issue 16), each stage one command of under 10 minutes:
#
#   bash bench/reference/run_quant_bench.sh micro   # quant_linear_bench: every format's layers
#                                                   # on cuda:0 and the cpu vs HBM / host read
#   bash bench/reference/run_quant_bench.sh ckpt    # 7B-shaped random checkpoints: bf16 + fp8,
#                                                   # awq, gptq, ct (about 33 GB under $OUT)
#   bash bench/reference/run_quant_bench.sh decode  # strata bench on each: GPU-resident, then
#                                                   # 1 GiB on the GPU and the rest on the cpu
#
# OUT (default /tmp/quant7b) holds the checkpoints; BUILD (default build/cuda) the CUDA build.
set -euo pipefail
stage=${1:?usage: run_quant_bench.sh micro|ckpt|decode}
OUT=${OUT:-/tmp/quant7b}
BUILD=${BUILD:-build/cuda}
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
  *)
    echo "unknown stage $stage (micro, ckpt, decode)" >&2
    exit 2
    ;;
esac

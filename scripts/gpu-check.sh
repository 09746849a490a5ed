#!/usr/bin/env bash
# Everything that needs a GPU, in one command for the lent GPU machine: build (CUDA for sm_90)
# against .deb files unpacked into a prefix, the whole CTest suite (the node client tests of the
# server need npm packages that machine cannot fetch: left out), the main job's generate over
# GPU + cpu + disk checked against the reference story, and the tokenizer and sampler benchmarks
# beside the Python tokenizers package. Logs go to $OUT (or ./gpu-check-logs).
# Usage (device run, carry [".dev/debs"]): bash scripts/gpu-check.sh .dev/debs
set -uo pipefail
debs=${1:?usage: gpu-check.sh DEBS_DIR}
logs=${OUT:-gpu-check-logs}
mkdir -p "$logs"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s] $*"; }
bash scripts/gpu-machine-build.sh "$debs" build/gpu >"$logs/build.log" 2>&1 || {
  tail -40 "$logs/build.log"; exit 1; }
elapsed "built"
export LD_LIBRARY_PATH=/tmp/strata-debs/usr/lib/x86_64-linux-gnu:/tmp/strata-debs/usr/lib/x86_64-linux-gnu/openblas-pthread
strata=build/gpu/tools/strata/strata
$strata --version
story=$(mktemp)
$strata generate models/stories260K --prompt "Once upon a time" --echo --show-plan \
  --max-new-tokens 252 --max-memory cuda:0=420KiB,cpu=420KiB --offload-folder "$(mktemp -d)" \
  >"$story" 2>"$logs/story_err.txt"
if cmp -s <(cat "$story"; echo) models/stories260K/reference_greedy_runc.txt; then
  echo "story over gpu+cpu+disk: matches the reference"
else
  echo "story over gpu+cpu+disk: MISMATCH"; cat "$story"
fi
tail -3 "$logs/story_err.txt"
(cd build/gpu && ctest -j8 --timeout 300 -E serve_node >"$logs/ctest.log" 2>&1; tail -15 "$logs/ctest.log")
elapsed "tested"
build/gpu/bench/sampler_bench 2>&1 | tee "$logs/sampler_bench.txt" | tail -15
build/gpu/bench/tokenizer_bench --benchmark_filter='^(encode|decode)/' 2>&1 |
  tee "$logs/tokenizer_bench.txt" | tail -15
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 bench/reference/tokenizer_reference.py 2>&1 |
  tee "$logs/tokenizer_reference.txt" | tail -15
elapsed "done"

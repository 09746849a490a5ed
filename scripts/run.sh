#!/usr/bin/env bash
# The main job on the built-in model (stories260K, a real trained Llama shipped in models/):
# build Strata (release; CUDA if the toolkit is present), then `strata generate` with the prompt
# "Once upon a time" under budgets that split the model over the GPU, the cpu and the disk (the
# cpu and the disk without a GPU): it shows the plan, streams the story, prints the timings, and
# checks the greedy text against the text llama2.c's own run.c printed for this model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target strata_cli -j "$(nproc)"
strata=./build/release/tools/strata/strata
model=models/stories260K
$strata --version

# 1.04 MB of float32 weights: the embedding (128 KiB, tied to the head) and five 177 KiB layers.
if nvidia-smi -L >/dev/null 2>&1 && $strata --version | grep -q "^CUDA: built"; then
  budgets="cuda:0=420KiB,cpu=420KiB"
else
  budgets="cpu=420KiB"
fi
offload=$(mktemp -d)
out=$(mktemp)
trap 'rm -rf "$offload" "$out"' EXIT

# llama2.c printed 256 tokens after BOS: the 4 prompt tokens and 252 new ones.
$strata generate "$model" --prompt "Once upon a time" --echo --show-plan --max-new-tokens 252 \
  --max-memory "$budgets" --offload-folder "$offload" | tee "$out"
echo
if cmp -s <(cat "$out"; echo) "$model/reference_greedy_runc.txt"; then
  echo "run.sh: the greedy story matches llama2.c's reference text ($model/reference_greedy_runc.txt)"
else
  echo "run.sh: MISMATCH with $model/reference_greedy_runc.txt:" >&2
  diff <(cat "$out"; echo) "$model/reference_greedy_runc.txt" >&2 || true
  exit 1
fi

#!/usr/bin/env bash
# Runs each fuzz target for a fixed time on a scratch copy of its committed corpus (the corpus
# in the tree is not modified). Usage: fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_PER_TARGET]
# Exits non-zero when a target finds a crash; the reproducer is left in BUILD_DIR/fuzz-artifacts.
set -euo pipefail
build=${1:?usage: run_fuzzers.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
for target in safetensors_header_fuzz index_fuzz tokenizer_json_fuzz tokenizer_encode_fuzz \
    serve_request_fuzz chat_template_fuzz; do
  corpus_name=${target%_fuzz}
  scratch=$(mktemp -d)
  cp -r "$here/corpus/$corpus_name/." "$scratch/"
  exe=$(find "$build" -type f -name "$target" -perm -u+x | head -1)
  echo "== $target for ${seconds}s ($(ls "$scratch" | wc -l) seeds)"
  "$exe" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$target-" "$scratch" 2>&1 | tail -5
  rm -rf "$scratch"
done

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
  log="$artifacts/$target.log"
  status=0
  "$exe" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$target-" "$scratch" >"$log" 2>&1 || status=$?
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    # What went wrong (the sanitizer's report or libFuzzer's reason: crash, leak, out of memory,
    # timeout) and where, before the reproducer's lines at the end.
    grep -E -A12 "^==[0-9]+== ?(ERROR|WARNING)|runtime error|out-of-memory|deadly signal|timeout after" \
      "$log" | head -40
    tail -5 "$log"
    echo "$target failed (exit $status); full log: $log"
    exit "$status"
  fi
  tail -5 "$log"
done

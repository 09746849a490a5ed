#!/usr/bin/env bash
# The whole test suite: release build (CUDA code compiled when the toolkit is present; CUDA tests
# skip themselves without a GPU), then the same tests built with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer (CPU only). Any failure or sanitizer report fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs="$(nproc)"

echo "== release build and tests"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"

echo "== install, examples against the installed package, Debian package (docs/packaging.md)"
bash scripts/package-check.sh build/release

echo "== sanitizer build and tests (address, undefined)"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs"

echo "== fuzzing every parser of untrusted input: checkpoints, tokenizers, chat templates, server requests (libFuzzer under ASan + UBSan, 60 s per target)"
bash fuzz/run_fuzzers.sh build/asan 60

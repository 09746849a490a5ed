#!/usr/bin/env bash
# The main job on its built-in default: build Strata (release; CUDA if the toolkit is present),
# print its version and run the self-check forward through the CPU ops.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target strata_cli -j "$(nproc)"
./build/release/tools/strata/strata --version
./build/release/tools/strata/strata selfcheck --dtype bf16

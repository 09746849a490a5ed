#!/usr/bin/env bash
# Checks Strata as its users get it, from an existing build tree (no second build of the library):
#   1. `cmake --install` into a scratch prefix; the layout is checked and the installed command run;
#   2. examples/ (a separate CMake project, find_package(strata)) is configured against that
#      prefix, built and every example run, its output checked (shared library; one example also
#      with STRATA_LINK_STATIC=ON and one through pkg-config);
#   3. the Debian package is built with CPack, unpacked with `dpkg -x` into a scratch root (no
#      system install), and the command in it runs `--version` and text generation on the
#      built-in model; the CMake package inside it is configured against too.
# Usage: scripts/package-check.sh BUILD_DIR   (e.g. build/release, after its build)
set -euo pipefail
build=$(cd "${1:?usage: package-check.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-package-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
model_rel=share/strata/models/stories260K
generate_tokens=24

fail() {
  echo "package-check: FAILED: $*" >&2
  exit 1
}
# expect_same WHAT EXPECTED_FILE ACTUAL_FILE
expect_same() {
  diff -u "$2" "$3" >&2 || fail "$1: output differs from $2"
}

echo "-- install into a scratch prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
for path in bin/strata lib/libstrata.a lib/libstrata.so include/strata/strata.h \
  include/strata/version.h include/strata/build_info.h lib/cmake/strata/strataConfig.cmake \
  lib/cmake/strata/strataConfigVersion.cmake lib/cmake/strata/strataTargets.cmake \
  lib/pkgconfig/strata.pc share/man/man1/strata.1 $model_rel/config.json $model_rel/model.safetensors \
  $model_rel/tokenizer.json $model_rel/LICENSE $model_rel/PROVENANCE.md; do
  [ -e "$prefix/$path" ] || fail "the install has no $path"
done
"$prefix/bin/strata" --version | tee "$work/version.txt"
version=$(sed -n 's/^project(strata VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
grep -q "^strata $version (git " "$work/version.txt" || fail "--version does not name $version"
grep -q "^CUDA: " "$work/version.txt" || fail "--version does not say whether CUDA is built"
grep -q "^CPU kernels: \(avx512\(+bf16\(+amx\)\?\)\?\|avx2\|generic\)$" "$work/version.txt" ||
  fail "--version does not name the CPU kernels"

# The installed command, all weights in memory: the ids the offload example must reproduce.
"$prefix/bin/strata" run "$prefix/$model_rel" --token-ids 1 --max-new-tokens $generate_tokens \
  2>/dev/null >"$work/run_ids.txt"
"$prefix/bin/strata" run "$prefix/$model_rel" --token-ids 1 --max-new-tokens $generate_tokens \
  --dtype bf16 2>/dev/null >"$work/run_ids_bf16.txt"

echo "-- examples against the installed package (libstrata.so)"
cmake -S "$src/examples" -B "$work/examples" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  >"$work/examples-configure.log" || { cat "$work/examples-configure.log"; fail "configure"; }
cmake --build "$work/examples" -j "$jobs" >"$work/examples-build.log" ||
  { cat "$work/examples-build.log"; fail "building the examples"; }
# (outputs go to a variable before grep -q: with pipefail, grep closing the pipe early would fail)
libs=$(ldd "$work/examples/plan_device_map")
grep -q "libstrata.so" <<<"$libs" ||
  fail "the examples are not linked with libstrata.so"

# hooks: the order hooks run in follows from the module tree (examples/expected/hooks.txt).
"$work/examples/hooks" >"$work/hooks.txt"
expect_same hooks "$src/examples/expected/hooks.txt" "$work/hooks.txt"
echo "hooks: ok"

# plan_device_map: the same plan as the installed `strata plan` with the same budgets.
"$work/examples/plan_device_map" >"$work/plan.txt"
"$prefix/bin/strata" plan "$prefix/$model_rel" --strategy sequential --dtype f32 \
  --max-memory cuda:0=500KiB,cuda:1=400KiB,cpu=300KiB,disk=1GiB >"$work/plan_cli.txt" 2>/dev/null
grep -q "^device map: {" "$work/plan.txt" || fail "plan_device_map printed no device map"
# Worked by hand from Accelerate's algorithm: GPU 0 and the cpu (the main devices) each keep room
# for the largest layer (177.5 KiB) once weights are offloaded, so the embeddings and layer 0 go to
# GPU 0, layers 1-2 to GPU 1, nothing fits in the 300 KiB of RAM beside that room, the rest is disk.
for entry in "'model.embed_tokens': 0" "'model.layers.0': 0" "'model.layers.2': 1" \
  "'model.layers.3': 'disk'" "'model.norm': 'disk'"; do
  grep -q "$entry" "$work/plan.txt" || fail "plan_device_map: no $entry in the device map"
done
sed -n '/^module /,/^$/p' "$work/plan.txt" | sed '/^$/d' >"$work/plan_table.txt"
sed -n '/^module /,/^$/p' "$work/plan_cli.txt" | sed '/^$/d' >"$work/plan_cli_table.txt"
[ -s "$work/plan_table.txt" ] || fail "plan_device_map printed no table"
expect_same "plan_device_map vs strata plan" "$work/plan_cli_table.txt" "$work/plan_table.txt"
echo "plan_device_map: ok"

# offload_folder: two layers on disk (bfloat16, so their weights are written to the folder: 2 x 9
# tensors), the same ids as the installed command's in-memory run in bfloat16.
"$work/examples/offload_folder" "$prefix/$model_rel" "$work/offload" >"$work/offload.txt"
grep -q "'model.layers.4': 'disk'" "$work/offload.txt" || fail "offload_folder: no layer on disk"
grep -q " disk=[1-9]" "$work/offload.txt" || fail "offload_folder: no bytes were written to disk"
grep -q "offload folder: index.json yes, 18 .dat files" "$work/offload.txt" ||
  fail "offload_folder: the folder does not hold the two layers' 18 tensors"
sed -n 's/^tokens: //p' "$work/offload.txt" >"$work/offload_ids.txt"
expect_same "offload_folder vs strata run" "$work/run_ids_bf16.txt" "$work/offload_ids.txt"
echo "offload_folder: ok"

# generate_text: greedy text from the built-in model equals llama2.c's run.c output.
if [ -x "$work/examples/generate_text" ]; then
  "$work/examples/generate_text" >"$work/generate.txt"
  bash "$src/examples/expected/check_story.sh" "$work/generate.txt" \
    "$prefix/$model_rel/reference_greedy_runc.txt" || fail "generate_text: story differs"
  echo "generate_text: ok"
fi

echo "-- one example against libstrata.a (STRATA_LINK_STATIC=ON)"
cmake -S "$src/examples" -B "$work/examples-static" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DSTRATA_LINK_STATIC=ON >"$work/static-configure.log" ||
  { cat "$work/static-configure.log"; fail "configure (static)"; }
cmake --build "$work/examples-static" -j "$jobs" --target plan_device_map >"$work/static.log" ||
  { cat "$work/static.log"; fail "building against libstrata.a"; }
libs=$(ldd "$work/examples-static/plan_device_map")
! grep -q "libstrata.so" <<<"$libs" ||
  fail "the static example is linked with libstrata.so"
"$work/examples-static/plan_device_map" >"$work/plan_static.txt"
cmp -s "$work/plan_static.txt" "$work/plan.txt" ||
  fail "plan_device_map (static) differs from the shared build"
echo "static: ok"

echo "-- one example through pkg-config"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion strata)" = "$version" ] || fail "strata.pc has the wrong version"
# shellcheck disable=SC2046
c++ -std=c++20 -O1 "$src/examples/plan_device_map.cc" -o "$work/plan_pc" \
  -DSTRATA_EXAMPLE_MODEL_DIR="\"$prefix/$model_rel\"" $(pkg-config --cflags --libs strata) \
  -Wl,-rpath,"$prefix/lib" || fail "building with pkg-config"
"$work/plan_pc" >"$work/plan_pc.txt"
cmp -s "$work/plan_pc.txt" "$work/plan.txt" || fail "plan_device_map (pkg-config) differs"
echo "pkg-config: ok"

echo "-- Debian package"
(cd "$build" && cpack -G DEB -B "$work/deb" >"$work/cpack.log") ||
  { cat "$work/cpack.log"; fail "cpack"; }
deb="$work/deb/strata_${version}_amd64.deb"
[ -f "$deb" ] || fail "cpack made no $(basename "$deb") ($(ls "$work/deb"))"
dpkg-deb --info "$deb" >"$work/deb-info.txt"
grep -q "Package: strata" "$work/deb-info.txt" || fail "the .deb has no control file"
dpkg-deb --contents "$deb" >"$work/deb-contents.txt"
for path in ./usr/bin/strata ./usr/lib/libstrata.so ./usr/include/strata/strata.h \
  ./usr/lib/cmake/strata/strataConfig.cmake ./usr/share/man/man1/strata.1 \
  ./usr/$model_rel/model.safetensors; do
  grep -q " $path" "$work/deb-contents.txt" || fail "the .deb has no $path"
done
dpkg -x "$deb" "$work/root"
"$work/root/usr/bin/strata" --version >"$work/deb-version.txt"
grep -q "^strata $version " "$work/deb-version.txt" || fail "--version from the .deb"
"$work/root/usr/bin/strata" --help >"$work/deb-help.txt"
if grep -q "^ *generate " "$work/deb-help.txt"; then
  # No model folder: the built-in one, found beside the unpacked command. An empty prompt is the
  # beginning-of-text token alone, whose greedy story run.c printed.
  "$work/root/usr/bin/strata" generate --prompt "" --max-new-tokens 48 --temperature 0 \
    >"$work/deb_generate.txt" 2>"$work/deb_generate.err" ||
    { cat "$work/deb_generate.err"; fail "strata generate from the .deb"; }
  bash "$src/examples/expected/check_story.sh" "$work/deb_generate.txt" \
    "$work/root/usr/$model_rel/reference_greedy_runc.txt" || fail "strata generate from the .deb"
else
  "$work/root/usr/bin/strata" run "$work/root/usr/$model_rel" --token-ids 1 \
    --max-new-tokens $generate_tokens 2>/dev/null >"$work/deb_run.txt"
  expect_same "strata run from the .deb" "$work/run_ids.txt" "$work/deb_run.txt"
fi
# The CMake package inside the .deb is relocatable: it configures from the unpacked root.
cmake -S "$src/examples" -B "$work/examples-deb" -G Ninja -DCMAKE_PREFIX_PATH="$work/root/usr" \
  >"$work/deb-configure.log" || { cat "$work/deb-configure.log"; fail "configure against the .deb"; }
echo "deb: ok ($(basename "$deb"), $(du -h "$deb" | cut -f1))"
echo "package-check: all passed"

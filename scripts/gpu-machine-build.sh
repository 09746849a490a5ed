#!/usr/bin/env bash
# Builds Strata on a machine that lacks the Debian -dev packages (the GPU machine lent to the
# project): the .deb files in DEBS_DIR (downloaded on a Debian 12 machine with `apt-get download`,
# see docs/build.md) are unpacked into a prefix with `dpkg -x` and CMake is pointed at it.
# Usage: scripts/gpu-machine-build.sh DEBS_DIR BUILD_DIR [TARGET...]
# STRATA_CMAKE_ARGS adds CMake arguments (e.g. -DCMAKE_CUDA_FLAGS=-lineinfo for a profiler's
# source view).
set -euo pipefail
debs=${1:?usage: gpu-machine-build.sh DEBS_DIR BUILD_DIR [TARGET...]}
build=${2:?usage: gpu-machine-build.sh DEBS_DIR BUILD_DIR [TARGET...]}
shift 2
prefix=/tmp/strata-debs
mkdir -p "$prefix"
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$prefix"; done
lib="$prefix/usr/lib/x86_64-linux-gnu"
# dpkg -x does not run the alternatives that make libopenblas.so visible: point at it directly.
openblas=$(find "$lib" -name 'libopenblas*.so' -path '*pthread*' | head -1)
export LD_LIBRARY_PATH="$lib:$(dirname "$openblas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Open MPI among the .debs (for --tensor-parallel and NCCL): it finds its unpacked self through
# OPAL_PREFIX, and CMake finds it through its compiler wrapper (no alternatives ran).
mpi_args=()
if [ -x "$prefix/usr/bin/mpicxx.openmpi" ]; then
  export OPAL_PREFIX="$prefix/usr"
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$lib/openmpi/lib"
  mpi_args=(-DMPI_CXX_COMPILER="$prefix/usr/bin/mpicxx.openmpi"
            -DMPIEXEC_EXECUTABLE="$prefix/usr/bin/mpirun.openmpi")
fi
cmake -S "$(dirname "$0")/.." -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${mpi_args[@]}" \
  -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${STRATA_CUDA_ARCHS:-90}" \
  -DCMAKE_PREFIX_PATH="$prefix/usr" -DBLAS_LIBRARIES="$openblas" \
  -DSTRATA_CBLAS_INCLUDE_DIR="$prefix/usr/include/x86_64-linux-gnu/openblas-pthread" \
  ${STRATA_CMAKE_ARGS:-} >/dev/null
targets=()
[ $# -gt 0 ] && targets=(--target "$@")
[ "${STRATA_CONFIGURE_ONLY:-0}" = 1 ] && exit 0
# STRATA_KEEP_GOING=1: build every target that can be built even when one fails (a device call
# then still runs what compiled).
keep=()
[ "${STRATA_KEEP_GOING:-0}" = 1 ] && keep=(-- -k 0)
cmake --build "$build" -j "$(nproc)" "${targets[@]}" "${keep[@]}"
echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
[ -n "${OPAL_PREFIX:-}" ] && echo "export OPAL_PREFIX=$OPAL_PREFIX"

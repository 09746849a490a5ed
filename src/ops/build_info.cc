#include "strata/build_info.h"

#include <fmt/format.h>

#include "cpu/simd.h"
#include "strata/version.h"

#ifdef STRATA_WITH_CUDA
#include "strata/cuda/device.h"
#endif

#ifndef STRATA_GIT_COMMIT
#define STRATA_GIT_COMMIT "unknown"
#endif

namespace strata {
namespace {

std::string cuda_version_text(int version) {
  return fmt::format("{}.{}", version / 1000, (version % 1000) / 10);
}

}  // namespace

const char* git_commit() noexcept { return STRATA_GIT_COMMIT; }

const char* cpu_kernel_isa() { return cpu::simd::kernels().name; }

CudaInfo cuda_info() noexcept {
  CudaInfo info;
#ifdef STRATA_WITH_CUDA
  info.built = true;
  info.runtime_version = cuda::runtime_version();
  info.driver_version = cuda::driver_version();
  info.device_count = cuda::device_count();
#endif
  return info;
}

std::string version_report() {
  std::string text = fmt::format("strata {} (git {})\n", kVersion, git_commit());
  const CudaInfo cuda = cuda_info();
  if (!cuda.built) {
    text += "CUDA: not built (CPU only)\n";
  } else {
    text += fmt::format("CUDA: built, runtime {}", cuda_version_text(cuda.runtime_version));
    text += cuda.driver_version > 0
                ? fmt::format(", driver {}, {} GPU{}\n", cuda_version_text(cuda.driver_version),
                              cuda.device_count, cuda.device_count == 1 ? "" : "s")
                : std::string(", no driver found\n");
  }
  text += fmt::format("CPU kernels: {}\n", cpu_kernel_isa());
  return text;
}

}  // namespace strata

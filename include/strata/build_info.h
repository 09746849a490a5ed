#pragma once
// What this build of Strata is and what it uses on the running machine: the facts behind
// `strata --version`, for programs that log them. The version itself is in strata/version.h.

#include <string>

namespace strata {

// The git commit the library was configured from (`git rev-parse --short HEAD`), or "unknown"
// when it was built outside a git checkout.
const char* git_commit() noexcept;

// The CPU kernel set the runtime dispatch picked for this machine: "avx512", "avx2" or "generic".
const char* cpu_kernel_isa();

// The CUDA backend as this process sees it. Versions are 1000 * major + 10 * minor, as the CUDA
// runtime reports them (13000 is 13.0), and 0 when unknown.
struct CudaInfo {
  bool built = false;       // the library was built with the CUDA backend
  int runtime_version = 0;  // the CUDA runtime linked into the library (0 when not built)
  int driver_version = 0;   // the installed driver's CUDA version (0 without a driver)
  int device_count = 0;     // usable GPUs (0 without a driver or a GPU)
};
// Never throws: a machine without a driver or a GPU gives driver_version == device_count == 0.
CudaInfo cuda_info() noexcept;

// The `strata --version` text, one fact per line:
//   strata 0.2.0 (git 1a2b3c4)
//   CUDA: built, runtime 13.0, driver 13.0, 1 GPU
//   CPU kernels: avx512
std::string version_report();

}  // namespace strata

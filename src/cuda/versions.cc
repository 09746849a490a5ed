// The CUDA runtime and driver versions, for `strata --version` (strata::cuda_info).

#include <cuda_runtime.h>

#include "strata/cuda/device.h"

namespace strata::cuda {

int runtime_version() noexcept {
  int version = 0;
  if (cudaRuntimeGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

int driver_version() noexcept {
  int version = 0;  // cudaDriverGetVersion gives 0 when no driver is installed
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

}  // namespace strata::cuda

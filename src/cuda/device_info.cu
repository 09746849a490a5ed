// Placeholder translation unit of the CUDA backend: it proves in every build (CI has nvcc but no
// GPU) that the toolkit, the target architectures and the link work. The allocator, streams,
// copies and kernels arrive with the CUDA backend issue.

#include <cuda_runtime.h>

namespace strata::cuda {

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int visible_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

}  // namespace strata::cuda

#pragma once
// Helpers of the tests that call the CUDA kernels (src/cuda/kernels.h) directly.

#include <cuda_runtime.h>

#include "cuda/kernels.h"
#include "strata/core/tensor.h"
#include "strata/cuda/stream.h"

namespace strata::testing {

// The compute stream of cuda:0, where the library queues its own work.
inline cudaStream_t kernel_stream() {
  return static_cast<cudaStream_t>(cuda::Stream::compute(0).native_handle());
}
inline cuda::kernels::Type kernel_type(DType d) { return static_cast<cuda::kernels::Type>(d); }

}  // namespace strata::testing

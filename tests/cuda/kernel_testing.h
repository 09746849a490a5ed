#pragma once
// Helpers of the tests that call the CUDA kernels (src/cuda/kernels.h) directly.

#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/kernels.h"
#include "strata/core/tensor.h"
#include "strata/cuda/stream.h"

namespace strata::testing {

// The compute stream of cuda:0, where the library queues its own work.
inline cudaStream_t kernel_stream() {
  return static_cast<cudaStream_t>(cuda::Stream::compute(0).native_handle());
}
inline cuda::kernels::Type kernel_type(DType d) { return static_cast<cuda::kernels::Type>(d); }

// Whether two tensors (on any device) hold the same bytes: the check of kernels that promise the
// same bits as the path they replace.
inline bool bits_equal(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu()).contiguous(), y = b.to(Device::cpu()).contiguous();
  return x.nbytes() == y.nbytes() && std::equal(static_cast<const char*>(x.data_ptr()),
                                                static_cast<const char*>(x.data_ptr()) + x.nbytes(),
                                                static_cast<const char*>(y.data_ptr()));
}

}  // namespace strata::testing

#pragma once
// Backend-internal access to the compute streams (one non-blocking stream per device, created on
// first use and kept for the life of the process).

#include <cuda_runtime.h>

namespace strata::cuda::detail {

cudaStream_t compute_stream_handle(int device);

}  // namespace strata::cuda::detail

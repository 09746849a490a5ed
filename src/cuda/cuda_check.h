#pragma once
// Turns CUDA runtime and cuBLAS status codes into typed strata errors naming the call and the
// device. Host code only (.cc files of the backend).

#include <cuda_runtime.h>

#include "strata/core/error.h"

namespace strata::cuda::detail {

// Throws DeviceError (OutOfMemory for cudaErrorMemoryAllocation) naming `what` and the device.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* what, int device);

inline void check(cudaError_t status, const char* what, int device) {
  if (status != cudaSuccess) [[unlikely]] throw_cuda_error(status, what, device);
}

// Device the calling thread has current (-1 if even that fails), for error messages.
int current_device_or_unknown() noexcept;

}  // namespace strata::cuda::detail

// STRATA_CUDA_CHECK(cudaMemcpyAsync(...), device): the call's text becomes part of the message.
#define STRATA_CUDA_CHECK(call, device) ::strata::cuda::detail::check((call), #call, (device))

#pragma once
// Picks the kernel of an op for a device: cuda::fn on a GPU in CUDA builds, cpu::fn otherwise.
// The CPU and CUDA kernels share their signatures (src/cpu/*.h, src/cuda/cuda_ops.h).

#include "strata/core/device.h"

#ifdef STRATA_WITH_CUDA
#include "cuda/cuda_ops.h"
#define STRATA_OP_KERNEL(device, fn) ((device).is_cuda() ? &::strata::cuda::fn : &::strata::cpu::fn)
#else
#define STRATA_OP_KERNEL(device, fn) (&::strata::cpu::fn)
#endif

namespace strata::ops::detail {

// True when the op kernels exist for `device` in this build.
inline bool has_kernels(Device device) {
#ifdef STRATA_WITH_CUDA
  return device.is_cpu() || device.is_cuda();
#else
  return device.is_cpu();
#endif
}

}  // namespace strata::ops::detail

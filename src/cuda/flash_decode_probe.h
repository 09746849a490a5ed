#pragma once
// Floors for the flash-decoding bench (cuda_attention_bench): what any one-kernel decode
// attention costs at least on this device, measured the way the decode kernels are (N calls in a
// CUDA graph). Not used by the runtime.

#include <cuda_runtime.h>

#include <cstddef>

namespace strata::cuda::kernels::probe {

// A kernel of `blocks` x `threads` that does nothing: the launch and drain of one graph node.
cudaError_t launch_empty(int blocks, int threads, bool pdl, cudaStream_t stream);

// Reads `bytes` of `a` and of `b` (16-byte aligned, bytes a multiple of 16) with `blocks` blocks
// of 256 threads, each a contiguous share, 16-byte loads, `unroll` (4 or 8) in flight per thread;
// writes one word to `sink` only if the xor of everything is a value no input gives in practice
// (so the loads stay). The bandwidth a pure read of the decode's K and V reaches at this size.
cudaError_t launch_read(const void* a, const void* b, std::size_t bytes, unsigned* sink, int blocks,
                        int unroll, bool pdl, cudaStream_t stream);

}  // namespace strata::cuda::kernels::probe

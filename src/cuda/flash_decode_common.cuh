#pragma once
// Device helpers shared by the two flash-decoding kernels (flash_decode.cu: split-K with a
// combine kernel; flash_decode_fused.cu: cp.async tiles, the last block of a head merges): the
// key length read on the device, the keys of a split, a group's query rows and the mask.

#include <cstdint>

#include "cuda/float_convert.cuh"
#include "cuda/kernels.h"

namespace strata::cuda::kernels::flash {

__device__ __forceinline__ int length_of(const FlashDecodeArgs& a, int b) {
  if (a.kv_len == nullptr) return a.max_kv_len;
  const int n = a.kv_len[static_cast<std::int64_t>(b) * a.kv_len_stride];
  return n < 0 ? 0 : (n > a.max_kv_len ? a.max_kv_len : n);
}

// Keys per split for a sequence of `length` keys; the host's choice of `splits` and every block
// agree on it, and so does the merge (which skips the splits past the length).
__host__ __device__ __forceinline__ int chunk_keys(int length, int splits) {
  const int even = (length + splits - 1) / splits;
  return even > kFlashDecodeMinChunk ? even : kFlashDecodeMinChunk;
}

// Query row `rho` of a kv head's group ((head in group, position) row-major).
struct RowAt {
  int h, i;
};
__device__ __forceinline__ RowAt row_at(const FlashDecodeArgs& a, int kvh, int rho) {
  const int per_kv = a.q_heads / a.kv_heads;
  return {kvh * per_kv + rho / a.q_len, rho % a.q_len};
}

__device__ __forceinline__ float mask_at(const FlashDecodeArgs& a, std::int64_t off) {
  if (a.mask_type == Type::Float32) return static_cast<const float*>(a.mask)[off];
  if (a.mask_type == Type::BFloat16) return to_float(static_cast<const BF16Bits*>(a.mask)[off]);
  return to_float(static_cast<const HalfBits*>(a.mask)[off]);
}

}  // namespace strata::cuda::kernels::flash

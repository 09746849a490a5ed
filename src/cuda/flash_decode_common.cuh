#pragma once
// Device helpers shared by the two flash-decoding kernels (flash_decode.cu: split-K with a
// combine kernel; flash_decode_fused.cu: cp.async tiles, the last block of a head merges): the
// key length read on the device, the keys of a split, a group's query rows and the mask.

#include <cstdint>

#include "cuda/flash_common.cuh"
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

// A block's merged (max mx, sum total, unnormalised output `sum`) of column d of the group's query
// row `rho`: with one split the output itself (the sink in the denominator; a row with every key
// masked yields zeros, not NaN), else the split's partial in the scratch (output partials
// [row][split][v_dim], then (max, sum) pairs [row][split]).
template <typename T>
__device__ __forceinline__ void write_partial(const FlashDecodeArgs& a, int b, int kvh, int rho,
                                              int split, int d, float mx, float sum, float total) {
  const RowAt at = row_at(a, kvh, rho);
  if (a.splits == 1) {
    if (a.sinks != nullptr && mx != -INFINITY) total += fast_exp2(a.sinks[at.h] * kLog2e - mx);
    static_cast<T*>(
        a.out)[b * a.out_strides[0] + at.h * a.out_strides[1] + at.i * a.out_strides[2] + d] =
        from_float<T>(total > 0.0f ? sum / total : 0.0f);
    return;
  }
  const std::int64_t all_rows = static_cast<std::int64_t>(a.batch) * a.q_heads * a.q_len;
  const std::int64_t row = (static_cast<std::int64_t>(b) * a.q_heads + at.h) * a.q_len + at.i;
  const std::int64_t slot = row * a.splits + split;
  a.scratch[slot * a.v_dim + d] = sum;
  if (d == 0) {
    float* ml = a.scratch + all_rows * a.splits * a.v_dim;
    ml[2 * slot] = mx;
    ml[2 * slot + 1] = total;
  }
}

// One tile's online-softmax step for row r (base 2): the row's scores s[u][r] become
// probabilities against the new running maximum m, their sum joins the running sum l, and the
// result is the factor the row's accumulator is scaled by. While the row has seen nothing
// (every score -inf) its probabilities are 0, m and l stay, and the factor is 1.
template <int kU, int R>
__device__ __forceinline__ float online_softmax_row(float (&s)[kU][R], int r, float& m, float& l) {
  float mx = m;
#pragma unroll
  for (int u = 0; u < kU; ++u) mx = fmaxf(mx, s[u][r]);
  if (mx == -INFINITY) {
#pragma unroll
    for (int u = 0; u < kU; ++u) s[u][r] = 0.0f;
    return 1.0f;
  }
  const float corr = fast_exp2(m - mx);  // 0 when m was -inf
  float sum = 0.0f;
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    s[u][r] = fast_exp2(s[u][r] - mx);  // -inf (masked) gives 0
    sum += s[u][r];
  }
  l = l * corr + sum;
  m = mx;
  return corr;
}

}  // namespace strata::cuda::kernels::flash

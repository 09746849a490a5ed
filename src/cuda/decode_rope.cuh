#pragma once
// The rotary embedding's arithmetic, shared by rope_kv_write (decode_step.cu) and the q/k/v GEMV
// that does its work in the store (GemvEpilogue::RopeKv, matvec.cuh), so the two give the same
// bits: x * cos + partner * sin, with partner = -x[d + half] below half and x[d - half] above
// (rotate_half), each product and the sum rounded to float as written, no contraction into an
// fma (which nvcc would pick differently in the two kernels).

namespace strata::cuda::kernels {

__device__ __forceinline__ float rope_rotate(float x, float partner, float cos, float sin) {
  return __fadd_rn(__fmul_rn(x, cos), __fmul_rn(partner, sin));
}

}  // namespace strata::cuda::kernels

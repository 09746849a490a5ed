#pragma once
// The rotary embedding's arithmetic, shared by rope_kv_write (decode_step.cu) and the q/k/v GEMV
// that does its work in the store (GemvEpilogue::RopeKv, matvec.cuh), so the two give the same
// bits: x * cos + partner * sin, with partner = -x[d + half] below half and x[d - half] above
// (rotate_half), as one fma over the rounded product partner * sin. That is what nvcc made of
// rope_kv_write's `v * cos + partner * sin` before this helper (its PTX: mul.f32 then
// fma.rn.f32), written out so the contraction cannot differ between the two kernels.

namespace strata::cuda::kernels {

__device__ __forceinline__ float rope_rotate(float x, float partner, float cos, float sin) {
  return fmaf(x, cos, __fmul_rn(partner, sin));
}

}  // namespace strata::cuda::kernels

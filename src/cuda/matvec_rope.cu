// The decode GEMV's RopeKv kernels (q/k/v with rope_kv_write's work in the store, matvec.cuh):
// the default shape of every batch, bf16 and f16 (float32 keeps the rotary kernel), in their
// own translation unit so they compile beside the others.

#include "cuda/matvec.cuh"

namespace strata::cuda::kernels::gemv_detail {

#define STRATA_GEMV_ROPE_BATCH(B)                                               \
  STRATA_GEMV_INSTANTIATE_ROPE(BF16Bits, B, default_rows(B), default_unroll(B)) \
  STRATA_GEMV_INSTANTIATE_ROPE(HalfBits, B, default_rows(B), default_unroll(B))
STRATA_GEMV_EACH_BATCH(STRATA_GEMV_ROPE_BATCH)
#undef STRATA_GEMV_ROPE_BATCH

}  // namespace strata::cuda::kernels::gemv_detail

// Tuning-sweep shapes of the decode GEMV (bf16 only; Gemv::rows / Gemv::unroll select them, the
// GEMV bench times them next to the defaults). A shape that wins moves to the defaults.

#include "cuda/matvec.cuh"

namespace strata::cuda::kernels::gemv_detail {

STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 1, 8)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 1, 16)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 2, 16)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 4, 8)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 2, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 1, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 1, 4, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 2, 2, 8)
STRATA_GEMV_INSTANTIATE(BF16Bits, 2, 4, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 2, 1, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 4, 8, 2)
STRATA_GEMV_INSTANTIATE(BF16Bits, 4, 2, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 4, 4, 2)
STRATA_GEMV_INSTANTIATE(BF16Bits, 8, 4, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 8, 2, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 8, 2, 2)

}  // namespace strata::cuda::kernels::gemv_detail

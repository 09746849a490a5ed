// The decode GEMV's default-shape kernels for 8 input rows, every float type (matvec.cuh: one
// translation unit per batch so a parallel build compiles them side by side).

#include "cuda/matvec.cuh"

namespace strata::cuda::kernels::gemv_detail {

STRATA_GEMV_INSTANTIATE_PLAIN(float, 8, 4, 2)
STRATA_GEMV_INSTANTIATE(BF16Bits, 8, 4, 2)
STRATA_GEMV_INSTANTIATE(HalfBits, 8, 4, 2)

}  // namespace strata::cuda::kernels::gemv_detail

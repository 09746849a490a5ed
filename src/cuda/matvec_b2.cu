// The decode GEMV's default-shape kernels for 2 input rows, every float type (matvec.cuh: one
// translation unit per batch so a parallel build compiles them side by side).

#include "cuda/matvec.cuh"

namespace strata::cuda::kernels::gemv_detail {

STRATA_GEMV_INSTANTIATE_PLAIN(float, 2, 2, 4)
STRATA_GEMV_INSTANTIATE(BF16Bits, 2, 2, 4)
STRATA_GEMV_INSTANTIATE(HalfBits, 2, 2, 4)

}  // namespace strata::cuda::kernels::gemv_detail

#include "dist/checks.h"

#include "strata/core/error.h"

namespace strata::dist::detail {

void check_transferable(const Tensor& tensor, std::string_view op) {
  STRATA_CHECK_ARG(!tensor.is_meta(),
                   "{}: {} is a meta tensor (no data); load the weights before communicating", op,
                   tensor.describe());
  STRATA_CHECK_ARG(tensor.is_contiguous(), "{}: {} is not contiguous; pass tensor.contiguous()", op,
                   tensor.describe());
}

void check_reducible(const Tensor& tensor, std::string_view op) {
  check_transferable(tensor, op);
  const DType d = tensor.dtype();
  STRATA_CHECK(d == DType::Float32 || d == DType::BFloat16 || d == DType::Float16, NotSupported,
               "{}: {} has dtype {}; sums over ranks support float32, bfloat16 and float16", op,
               tensor.describe(), d);
}

void check_rank(int rank, int size, std::string_view what) {
  STRATA_CHECK_ARG(rank >= 0 && rank < size, "{} {} is not a rank of this job (ranks 0..{})", what,
                   rank, size - 1);
}

}  // namespace strata::dist::detail

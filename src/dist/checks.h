#pragma once
// Argument checks every communicator back end shares (private to src/dist).

#include <string_view>

#include "strata/core/tensor.h"

namespace strata::dist::detail {

// float32, bfloat16 or float16, contiguous, not meta.
void check_reducible(const Tensor& tensor, std::string_view op);
// Contiguous and not meta (point to point, broadcast, gather).
void check_transferable(const Tensor& tensor, std::string_view op);
// 0 <= rank < size.
void check_rank(int rank, int size, std::string_view what);

}  // namespace strata::dist::detail

#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor embedding(const Tensor& ids, const Tensor& table) {
  constexpr const char* kOp = "embedding";
  detail::check_materialized(kOp, "ids", ids);
  detail::check_materialized(kOp, "table", table);
  STRATA_CHECK_ARG(is_integral(ids.dtype()),
                   "embedding: 'ids' ({}) must have an integer dtype (int64, int32, ...), got {}; "
                   "token ids are integers",
                   ids.describe(), ids.dtype());
  detail::check_same_device(kOp, {{"ids", &ids}, {"table", &table}});
  detail::check_rank(kOp, "table", table, 2);
  if (!detail::has_kernels(table.device())) detail::unsupported(kOp, table.device(), table.dtype());

  Shape out_shape = ids.shape();
  out_shape.push_back(table.size(1));
  Tensor out = Tensor::empty(out_shape, table.dtype(), table.device());
  // Any table dtype works: rows are copied bit for bit.
  STRATA_OP_KERNEL(table.device(), embedding)(ids, table.contiguous(), out);
  return out;
}

}  // namespace strata::ops

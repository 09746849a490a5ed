// ops::grouped_linear: linear layers over consecutive row ranges of one input.

#include <string>

#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights,
                      const std::vector<std::int64_t>& rows) {
  constexpr const char* kOp = "grouped_linear";
  detail::check_materialized(kOp, "x", x);
  detail::check_float_dtype(kOp, "x", x);
  detail::check_rank(kOp, "x", x, 2);
  STRATA_CHECK_ARG(!weights.empty() && weights.size() == rows.size(),
                   "grouped_linear: {} weights for {} row counts; pass one weight per group",
                   weights.size(), rows.size());
  const std::int64_t in_features = x.size(1), out_features = weights.front().size(0);
  std::int64_t total = 0;
  for (std::size_t g = 0; g < weights.size(); ++g) {
    const Tensor& w = weights[g];
    const std::string name = "weights[" + std::to_string(g) + "]";
    detail::check_materialized(kOp, name.c_str(), w);
    detail::check_same_dtype(kOp, {{"x", &x}, {name.c_str(), &w}});
    detail::check_same_device(kOp, {{"x", &x}, {name.c_str(), &w}});
    detail::check_rank(kOp, name.c_str(), w, 2);
    STRATA_CHECK_ARG(w.size(0) == out_features && w.size(1) == in_features,
                     "grouped_linear: {} ({}) must be [out_features, in_features] = [{}, {}] like "
                     "weights[0] and x ({})",
                     name, w.describe(), out_features, in_features, x.describe());
    STRATA_CHECK_ARG(rows[g] >= 0, "grouped_linear: rows[{}] = {} must not be negative", g,
                     rows[g]);
    total += rows[g];
  }
  STRATA_CHECK_ARG(total == x.size(0),
                   "grouped_linear: the groups' rows add up to {} but x ({}) has {} rows", total,
                   x.describe(), x.size(0));
  Tensor out = Tensor::empty({total, out_features}, x.dtype(), x.device());
#ifdef STRATA_WITH_CUDA
  if (x.is_cuda()) {
    std::vector<Tensor> contiguous;
    for (const Tensor& w : weights) contiguous.push_back(w.contiguous());
    if (cuda::grouped_linear(x.contiguous(), contiguous, rows, out)) return out;
  }
#endif
  std::int64_t first = 0;
  for (std::size_t g = 0; g < weights.size(); ++g) {
    if (rows[g] > 0) {
      out.narrow(0, first, rows[g]).copy_(linear(x.narrow(0, first, rows[g]), weights[g]));
    }
    first += rows[g];
  }
  return out;
}

}  // namespace strata::ops

// scaled_dot_product_attention: checks the q/k/v/mask geometry once, then runs the kernel.

#include <cmath>

#include "cpu/attention_elementwise.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  constexpr const char* kOp = "scaled_dot_product_attention";
  detail::check_materialized(kOp, "q", q);
  detail::check_materialized(kOp, "k", k);
  detail::check_materialized(kOp, "v", v);
  detail::check_same_device(kOp, {{"q", &q}, {"k", &k}, {"v", &v}});
  detail::check_same_dtype(kOp, {{"q", &q}, {"k", &k}, {"v", &v}});
  detail::check_float_dtype(kOp, "q", q);
  detail::check_rank(kOp, "q", q, 4);
  detail::check_rank(kOp, "k", k, 4);
  detail::check_rank(kOp, "v", v, 4);

  const std::int64_t batch = q.size(0), q_heads = q.size(1), q_len = q.size(2);
  const std::int64_t head_dim = q.size(3);
  const std::int64_t kv_heads = k.size(1), k_len = k.size(2);
  STRATA_CHECK_ARG(k.size(0) == batch && v.size(0) == batch,
                   "{}: batch sizes differ: q {}, k {}, v {}; q, k and v need one batch size", kOp,
                   q.describe(), k.describe(), v.describe());
  STRATA_CHECK_ARG(k.size(3) == head_dim,
                   "{}: q has head_dim {} but k has {} (q {}, k {}); they must match", kOp,
                   head_dim, k.size(3), q.describe(), k.describe());
  STRATA_CHECK_ARG(v.size(1) == kv_heads && v.size(2) == k_len,
                   "{}: v {} must have k's heads and length ({} kv heads, {} keys), as k {} has",
                   kOp, v.describe(), kv_heads, k_len, k.describe());
  STRATA_CHECK_ARG(kv_heads > 0 && q_heads % kv_heads == 0,
                   "{}: q has {} heads and k/v have {}; grouped-query attention needs the query "
                   "heads to be a multiple of the kv heads",
                   kOp, q_heads, kv_heads);

  const Shape scores_shape{batch, q_heads, q_len, k_len};
  Tensor mask;
  if (options.mask.has_value()) {
    const Tensor& m = *options.mask;
    detail::check_materialized(kOp, "mask", m);
    detail::check_same_device(kOp, {{"q", &q}, {"mask", &m}});
    STRATA_CHECK_ARG(m.dtype() == DType::Float32 || m.dtype() == q.dtype(),
                     "{}: the additive mask has dtype {}; it must be float32 or the query dtype "
                     "({}); turn a boolean mask into 0 / -inf first",
                     kOp, m.dtype(), q.dtype());
    bool broadcasts = m.dim() <= 4;
    for (std::int64_t d = 1; broadcasts && d <= m.dim(); ++d) {
      const std::int64_t size = m.size(-d);
      broadcasts = size == 1 || size == scores_shape[4 - d];
    }
    STRATA_CHECK_ARG(broadcasts,
                     "{}: mask {} does not broadcast to the scores' shape [batch, q_heads, q_len, "
                     "k_len] = {}; give it that shape or size-1 dimensions in its place",
                     kOp, m.describe(), shape_str(scores_shape));
    mask = m.expand(scores_shape);
  }
  double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  if (options.scale.has_value()) {
    scale = *options.scale;
    STRATA_CHECK_ARG(std::isfinite(scale), "{}: scale is {}; pass a finite number", kOp, scale);
  }

  Tensor sinks;
  if (options.sinks.has_value()) {
    const Tensor& s = *options.sinks;
    detail::check_materialized(kOp, "sinks", s);
    detail::check_same_device(kOp, {{"q", &q}, {"sinks", &s}});
    STRATA_CHECK_ARG(s.dim() == 1 && s.size(0) == q_heads,
                     "{}: sinks {} must hold one logit per query head ([{}])", kOp, s.describe(),
                     q_heads);
    STRATA_CHECK_ARG(s.dtype() == DType::Float32 || s.dtype() == q.dtype(),
                     "{}: sinks have dtype {}; they must be float32 or the query dtype ({})", kOp,
                     s.dtype(), q.dtype());
    sinks = s.to(DType::Float32).contiguous();  // the kernels read float32 logits
  }

  Tensor out = Tensor::empty({batch, q_heads, q_len, v.size(3)}, q.dtype(), q.device());
  if (detail::has_kernels(q.device())) {
    STRATA_OP_KERNEL(q.device(), scaled_dot_product_attention)
    (q, k, v, mask.defined() ? &mask : nullptr, options.causal, static_cast<float>(scale), out,
     sinks.defined() ? &sinks : nullptr);
    return out;
  }
  detail::unsupported(kOp, q.device(), q.dtype());
}

}  // namespace strata::ops

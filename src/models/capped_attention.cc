#include "models/capped_attention.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models::detail {
namespace {

// Query rows per block: bounds the float32 scores to heads x block x keys.
constexpr std::int64_t kQueryBlock = 128;

Tensor scalar(double value, Device device) {
  return Tensor::full({1}, value, DType::Float32, device);
}

}  // namespace

Tensor soft_cap(const Tensor& x, double cap) {
  STRATA_CHECK_ARG(cap > 0.0, "soft_cap: cap is {}; it must be positive", cap);
  const Tensor x32 = ops::cast(x, DType::Float32);
  const Tensor capped =
      ops::mul(ops::tanh(ops::mul(x32, scalar(1.0 / cap, x.device()))), scalar(cap, x.device()));
  return ops::cast(capped, x.dtype());
}

Tensor finite_mask(const Tensor& additive) {
  std::vector<float> values =
      additive.to(Device::cpu(), DType::Float32).contiguous().to_vector<float>();
  const float lowest = std::numeric_limits<float>::lowest();
  for (float& v : values) v = std::max(v, lowest);
  return Tensor::from_vector(values, additive.shape()).to(additive.device());
}

Tensor capped_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache,
                               std::int64_t layer, double scale, double cap,
                               std::int64_t sliding_window, const std::optional<Tensor>& mask) {
  Tensor keys = k, values = v;
  if (cache != nullptr) std::tie(keys, values) = cache->update(layer, k, v);
  const std::int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), dim = q.size(3);
  const std::int64_t kv_heads = keys.size(1), k_len = keys.size(2), v_dim = values.size(3);
  STRATA_CHECK_ARG(heads % kv_heads == 0,
                   "attention: {} query heads are not a multiple of {} kv heads", heads, kv_heads);
  const std::int64_t groups = heads / kv_heads;
  if (mask.has_value()) {
    STRATA_CHECK_ARG(mask->dim() == 4 && mask->size(2) == q_len && mask->size(3) == k_len,
                     "attention: the layer's attention_mask is {}; it must be [batch, 1, {}, {}] "
                     "({} queries over {} cached and new keys)",
                     mask->describe(), q_len, k_len, q_len, k_len);
  }
  const Device device = q.device();
  // Grouped heads without copies: query head h reads kv head h / groups, so q viewed as
  // [batch, kv_heads, groups, rows, dim] meets k and v broadcast over the group dimension.
  const Tensor q32 = ops::cast(q, DType::Float32).contiguous();
  const Tensor k_t = ops::cast(keys, DType::Float32).unsqueeze(2).transpose(3, 4);
  const Tensor v32 = ops::cast(values, DType::Float32).unsqueeze(2);
  const Tensor scale_t = scalar(scale, device);
  const float lowest = std::numeric_limits<float>::lowest();

  Tensor out = Tensor::empty({batch, heads, q_len, v_dim}, DType::Float32, device);
  for (std::int64_t i0 = 0; i0 < q_len; i0 += kQueryBlock) {
    const std::int64_t rows = std::min(kQueryBlock, q_len - i0);
    // Query i sits at cache position k_len - q_len + i and sees keys up to it, within the window.
    const std::int64_t first = k_len - q_len + i0, last = first + rows - 1;
    std::int64_t begin = 0, span = k_len;
    Tensor additive;
    if (mask.has_value()) {
      additive = mask->narrow(2, i0, rows).unsqueeze(1);  // [batch, 1, 1, rows, k_len]
    } else {
      begin = sliding_window > 0 ? std::max<std::int64_t>(0, first - sliding_window + 1) : 0;
      span = last + 1 - begin;
      std::vector<float> m(static_cast<std::size_t>(rows * span), 0.0f);
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t p = first + r;
        for (std::int64_t j = 0; j < span; ++j) {
          const std::int64_t key = begin + j;
          if (key > p || (sliding_window > 0 && key <= p - sliding_window)) {
            m[static_cast<std::size_t>(r * span + j)] = lowest;
          }
        }
      }
      additive = Tensor::from_vector(m, {rows, span}).to(device);
    }
    const Tensor qb =
        q32.narrow(2, i0, rows).contiguous().view({batch, kv_heads, groups, rows, dim});
    Tensor scores = ops::matmul(qb, k_t.narrow(4, begin, span));  // [b, kvh, g, rows, span]
    scores = ops::mul(scores, scale_t);
    if (cap > 0.0) scores = soft_cap(scores, cap);
    const Tensor probs = ops::softmax(ops::add(scores, additive), -1);
    const Tensor part = ops::matmul(probs, v32.narrow(3, begin, span));  // [b, kvh, g, rows, dv]
    out.narrow(2, i0, rows).copy_(part.view({batch, heads, rows, v_dim}));
  }
  return ops::cast(out, q.dtype());
}

}  // namespace strata::models::detail

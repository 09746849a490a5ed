#pragma once
// Gemma 2's logit soft-capping (private to src/models): cap * tanh(x / cap) on the final logits
// and on the attention scores before the mask. Composed of existing ops (matmul, mul, tanh, add,
// softmax), so it runs on every device the ops do; see docs/models.md for why this is not a
// parameter of scaled_dot_product_attention.

#include <cstdint>
#include <optional>

#include "strata/core/tensor.h"
#include "strata/models/kv_cache.h"

namespace strata::models::detail {

// cap * tanh(x / cap), computed in float32 (one rounding to x's dtype at the end).
Tensor soft_cap(const Tensor& x, double cap);

// The additive mask [batch, 1, q_len, k_len] of a padded batch (PaddingMask::additive) with its
// -inf entries made the lowest finite float: a padding query, which sees no key, then averages
// the values instead of producing NaN (the composed softmax below has no masked-row rule).
Tensor finite_mask(const Tensor& additive);

// causal_attention (attention.h) with soft-capped scores: appends k, v to `cache` (when not null)
// at `layer`, then softmax(soft_cap(q k^T * scale, cap) + mask) v in float32, causal, within
// `sliding_window` when > 0, or under `mask` (a finite_mask of the padded batch, which already
// holds the causal rule and the window). q [batch, heads, q_len, head_dim]; k, v [batch,
// kv_heads, new_len, head_dim]. Returns [batch, heads, q_len, head_dim] in q's dtype. Queries
// are taken in blocks, so the scores never exceed [batch, heads, block, keys]. `cap` 0: no
// soft-cap (the composed attention of heads wider than the fused kernels take: DeepSeek's latent
// attention).
Tensor capped_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache,
                               std::int64_t layer, double scale, double cap,
                               std::int64_t sliding_window,
                               const std::optional<Tensor>& mask = std::nullopt);

}  // namespace strata::models::detail

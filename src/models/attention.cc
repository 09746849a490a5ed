#include "models/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "strata/core/error.h"
#include "strata/models/layers.h"
#include "strata/ops.h"

namespace strata::models::detail {
namespace {

// Query rows per block under a sliding window: bounds the additive mask to
// block x (block + window) floats however long the prompt is.
constexpr std::int64_t kWindowBlock = 128;

}  // namespace

Tensor split_heads(const Tensor& x, std::int64_t heads, std::int64_t head_dim) {
  return x.view({x.size(0), x.size(1), heads, head_dim}).transpose(1, 2);
}

Tensor merge_heads(const Tensor& x) {
  return x.transpose(1, 2).contiguous().view({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

Tensor apply_rotary(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const std::int64_t head_dim = x.size(3), rotated = cos.size(-1);
  if (rotated == head_dim) return ops::rotary_embedding(x, cos, sin);
  STRATA_CHECK_ARG(rotated > 0 && rotated < head_dim,
                   "apply_rotary: cos/sin cover {} dimensions but heads have {}; the rotated part "
                   "must fit in a head",
                   rotated, head_dim);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  out.narrow(3, 0, rotated).copy_(ops::rotary_embedding(x.narrow(3, 0, rotated), cos, sin));
  out.narrow(3, rotated, head_dim - rotated).copy_(x.narrow(3, rotated, head_dim - rotated));
  return out;
}

Tensor rotate_and_attend(const nn::Args& args, Tensor q, Tensor k, const Tensor& v, bool rope,
                         std::int64_t layer, std::int64_t sliding_window, std::string_view who) {
  const std::shared_ptr<KVCache> cache = cache_argument(args, who);
  if (rope) {
    const Value* tables = args.keyword("position_embeddings");
    STRATA_CHECK_ARG(tables != nullptr && tables->is_list() && tables->list().size() == 2,
                     "{}: position_embeddings must be [cos, sin] from the rotary module", who);
    const Tensor cos = on_device_of(tables->list()[0].tensor(), q);
    const Tensor sin = on_device_of(tables->list()[1].tensor(), q);
    q = apply_rotary(q, cos, sin);
    k = apply_rotary(k, cos, sin);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  return merge_heads(causal_attention(q, k, v, cache.get(), layer, scale, sliding_window,
                                      layer_mask_argument(args, who)));
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache,
                        std::int64_t layer, double scale, std::int64_t sliding_window,
                        const std::optional<Tensor>& mask, const std::optional<Tensor>& sinks) {
  Tensor keys = k, values = v;
  if (cache != nullptr) std::tie(keys, values) = cache->update(layer, k, v);
  const std::int64_t q_len = q.size(2), k_len = keys.size(2);
  ops::AttentionOptions options;
  options.causal = true;
  options.scale = scale;
  if (sinks.has_value()) options.sinks = on_device_of(*sinks, q);
  if (mask.has_value()) {
    // One call over every key: with padding inside a row, a window counted in tokens can reach
    // further back than `window` cache entries, so the key range is not narrowed.
    STRATA_CHECK_ARG(mask->dim() == 4 && mask->size(2) == q_len && mask->size(3) == k_len,
                     "attention: the layer's attention_mask is {}; it must be [batch, 1, {}, {}] "
                     "({} queries over {} cached and new keys)",
                     mask->describe(), q_len, k_len, q_len, k_len);
    options.mask = on_device_of(*mask, q);
    return ops::scaled_dot_product_attention(q, keys, values, options);
  }
  // Without a window, or when no query can reach past it, plain causal attention.
  if (sliding_window <= 0 || k_len <= sliding_window) {
    return ops::scaled_dot_product_attention(q, keys, values, options);
  }
  // Query i sits at position p = k_len - q_len + i and sees keys (p - window, p]. Each block of
  // queries attends to the key range its rows can see; the causal mask (aligned to the end of
  // the keys) covers the top, an additive mask the rows whose window starts inside the range.
  Tensor out = Tensor::empty({q.size(0), q.size(1), q_len, v.size(3)}, q.dtype(), q.device());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (std::int64_t i0 = 0; i0 < q_len; i0 += kWindowBlock) {
    const std::int64_t rows = std::min(kWindowBlock, q_len - i0);
    const std::int64_t first = k_len - q_len + i0, last = first + rows - 1;
    const std::int64_t begin = std::max<std::int64_t>(0, first - sliding_window + 1);
    const std::int64_t span = last + 1 - begin;
    ops::AttentionOptions block = options;
    if (last - sliding_window >= begin) {  // some row's window starts after `begin`
      std::vector<float> mask(static_cast<std::size_t>(rows * span), 0.0f);
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t hidden_end = first + r - sliding_window;  // keys <= this are out
        for (std::int64_t j = 0; begin + j <= hidden_end && j < span; ++j) {
          mask[static_cast<std::size_t>(r * span + j)] = neg_inf;
        }
      }
      block.mask = Tensor::from_vector(mask, {rows, span}).to(q.device());
    }
    const Tensor part = ops::scaled_dot_product_attention(
        q.narrow(2, i0, rows), keys.narrow(2, begin, span), values.narrow(2, begin, span), block);
    if (rows == q_len) return part;
    out.narrow(2, i0, rows).copy_(part);
  }
  return out;
}

std::shared_ptr<KVCache> cache_argument(const nn::Args& args, std::string_view who) {
  const Value* value = args.keyword("past_key_values");
  if (value == nullptr || value->is_none()) return nullptr;
  STRATA_CHECK_ARG(value->is_object(), "{}: past_key_values must be a KVCache (or none), got {}",
                   who, value->describe());
  return value->object_as<KVCache>();
}

std::optional<Tensor> layer_mask_argument(const nn::Args& args, std::string_view who) {
  const Value* value = args.keyword("attention_mask");
  if (value == nullptr || value->is_none()) return std::nullopt;
  STRATA_CHECK_ARG(value->is_tensor(),
                   "{}: attention_mask must be the additive mask [batch, 1, q_len, k_len] (or "
                   "none), got {}",
                   who, value->describe());
  return value->tensor();
}

Tensor position_ids(std::int64_t start, std::int64_t length, std::int64_t limit, Device device,
                    std::string_view who) {
  STRATA_CHECK_ARG(start + length <= limit,
                   "{}: positions up to {} exceed the model's {} learned positions "
                   "(max_position_embeddings); use a shorter sequence",
                   who, start + length - 1, limit);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(length));
  std::iota(ids.begin(), ids.end(), start);
  return Tensor::from_vector(ids, {1, length}).to(device);
}

Tensor pre_norm_block(const Tensor& hidden, nn::Args& args, nn::Module& input_norm,
                      nn::Module& attn, nn::Module& post_norm, nn::Module& mlp) {
  nn::Args attn_args({call(input_norm, hidden)}, std::move(args.keywords));
  const Tensor a = attn(std::move(attn_args)).tensor();
  const Tensor h = ops::add(hidden, on_device_of(a, hidden));
  const Tensor m = call(mlp, call(post_norm, h));
  return ops::add(h, on_device_of(m, h));
}

Tensor on_device_of(const Tensor& t, const Tensor& like) {
  return t.device() == like.device() ? t : t.to(like.device());
}

}  // namespace strata::models::detail

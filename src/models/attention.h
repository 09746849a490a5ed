#pragma once
// Helpers the attention modules of every family share (private to src/models).

#include <cstdint>
#include <optional>
#include <string_view>

#include "strata/core/tensor.h"
#include "strata/models/kv_cache.h"
#include "strata/nn/module.h"
#include "strata/nn/value.h"

namespace strata::models::detail {

using nn::Args;
using nn::Value;

// [batch, seq, heads * head_dim] -> a [batch, heads, seq, head_dim] view (no copy).
Tensor split_heads(const Tensor& x, std::int64_t heads, std::int64_t head_dim);
// [batch, heads, seq, head_dim] -> contiguous [batch, seq, heads * head_dim].
Tensor merge_heads(const Tensor& x);

// RoPE on the first cos.size(-1) dimensions of each head of x [batch, heads, seq, head_dim] (all
// of them, or fewer under partial rotary: transformers' apply_rotary_pos_emb with q_rot/q_pass),
// the rest copied through. cos, sin as ops::rotary_embedding takes them.
Tensor apply_rotary(const Tensor& x, const Tensor& cos, const Tensor& sin);

// The part of a decoder self-attention after its projections, shared by the decoder family:
// RoPE from the keyword position_embeddings ([cos, sin]) when `rope`, then causal_attention with
// the keywords past_key_values and attention_mask; returns merged heads [batch, seq, heads * d].
// q [batch, heads, seq, d], k and v [batch, kv_heads, seq, d]. `who` names the caller.
Tensor rotate_and_attend(const nn::Args& args, Tensor q, Tensor k, const Tensor& v, bool rope,
                         std::int64_t layer, std::int64_t sliding_window, std::string_view who);

// Appends k, v to `cache` (when not null) at `layer`, then causal attention of q over all keys,
// with a sliding window when `sliding_window` > 0 (a query sees itself and the window - 1 keys
// before it, transformers' sliding_window_overlay). q [batch, heads, q_len, head_dim]; k, v
// [batch, kv_heads, new_len, head_dim]. Returns [batch, heads, q_len, head_dim].
// `mask`: a padded batch's additive mask [batch, 1, q_len, cache + new_len] (PaddingMask::
// additive, which already holds the causal rule and this layer's window), moved to q's device
// when it is elsewhere; the window then is not applied again. `sinks`: gpt-oss attention sinks
// [heads] (ops::AttentionOptions::sinks), moved to q's device.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, KVCache* cache,
                        std::int64_t layer, double scale, std::int64_t sliding_window,
                        const std::optional<Tensor>& mask = std::nullopt,
                        const std::optional<Tensor>& sinks = std::nullopt);

// The keyword "attention_mask" a model passes its layers (a padded batch's additive mask), or
// nullopt when absent or none.
std::optional<Tensor> layer_mask_argument(const nn::Args& args, std::string_view who);

// The KVCache passed as keyword "past_key_values" (none or absent gives nullptr). `who` names
// the caller in the error for another kind of value.
std::shared_ptr<KVCache> cache_argument(const nn::Args& args, std::string_view who);

// Position ids start .. start + length - 1 as [1, length] int64 on `device`. `limit` is the size
// of a learned position table: running past it is an error naming the limit, not a bad read.
Tensor position_ids(std::int64_t start, std::int64_t length, std::int64_t limit, Device device,
                    std::string_view who);

// The pre-norm block of Llama-shaped decoder layers: h += attn(input_norm(h)) (the layer's keywords
// go to attn); h += mlp(post_norm(h)).
Tensor pre_norm_block(const Tensor& hidden, nn::Args& args, nn::Module& input_norm,
                      nn::Module& attn, nn::Module& post_norm, nn::Module& mlp);

// `t` on `like`'s device (a no-op when it already is): results of submodules that a device map
// placed elsewhere come back to the device of the residual stream.
Tensor on_device_of(const Tensor& t, const Tensor& like);

}  // namespace strata::models::detail

#pragma once
// What every base model's forward reads from its arguments (private to src/models): the token
// ids, the KV cache and its length, and a padded batch's mask.

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "models/padding_mask.h"
#include "strata/core/tensor.h"
#include "strata/models/kv_cache.h"
#include "strata/nn/value.h"

namespace strata::models::detail {

struct ForwardInputs {
  Tensor ids;                          // input_ids [batch, seq] (positional 0)
  std::shared_ptr<KVCache> cache;      // keyword past_key_values, or nullptr
  std::int64_t past = 0;               // tokens already in the cache
  nn::Value cache_value;               // the cache as the layers' past_key_values keyword (or none)
  std::optional<PaddingMask> padding;  // keyword attention_mask when it pads (PaddingMask)
};

// Throws as Args::tensor, cache_argument and PaddingMask::from_args, naming `who`.
ForwardInputs forward_inputs(const nn::Args& args, std::string_view who);

}  // namespace strata::models::detail

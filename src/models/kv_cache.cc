#include "strata/models/kv_cache.h"

#include <algorithm>

#include "strata/core/error.h"

namespace strata::models {
namespace {

// The smallest first allocation: a few decode steps without regrowing.
constexpr std::int64_t kMinCapacity = 16;

Tensor grown(const Tensor& old, std::int64_t length, std::int64_t capacity, const Tensor& like) {
  Tensor next = Tensor::empty({like.size(0), like.size(1), capacity, like.size(3)}, like.dtype(),
                              like.device());
  if (length > 0) next.narrow(2, 0, length).copy_(old.narrow(2, 0, length));
  return next;
}

}  // namespace

KVCache::KVCache(std::int64_t num_layers, std::int64_t reserve_tokens)
    : layers_(static_cast<std::size_t>(num_layers)), reserve_(reserve_tokens) {
  STRATA_CHECK_ARG(num_layers > 0, "KVCache: num_layers is {}; it must be positive", num_layers);
}

const KVCache::Layer& KVCache::at(std::int64_t layer, const char* who) const {
  STRATA_CHECK_ARG(layer >= 0 && layer < num_layers(),
                   "KVCache::{}: layer {} is out of range; the cache has {} layers (was it made "
                   "for another model?)",
                   who, layer, num_layers());
  return layers_[static_cast<std::size_t>(layer)];
}

std::int64_t KVCache::seq_length(std::int64_t layer) const {
  return at(layer, "seq_length").length;
}

std::pair<Tensor, Tensor> KVCache::update(std::int64_t layer, const Tensor& key,
                                          const Tensor& value) {
  at(layer, "update");
  Layer& entry = layers_[static_cast<std::size_t>(layer)];
  STRATA_CHECK_ARG(key.dim() == 4 && value.dim() == 4 && key.size(0) == value.size(0) &&
                       key.size(1) == value.size(1) && key.size(2) == value.size(2),
                   "KVCache::update (layer {}): key {} and value {} must be [batch, kv_heads, "
                   "tokens, head_dim] with the same batch, heads and tokens",
                   layer, key.describe(), value.describe());
  STRATA_CHECK_ARG(key.dtype() == value.dtype() && key.device() == value.device(),
                   "KVCache::update (layer {}): key {} and value {} differ in dtype or device",
                   layer, key.describe(), value.describe());
  const std::int64_t added = key.size(2);
  if (entry.keys.defined()) {
    const Tensor& k = entry.keys;
    const Tensor& v = entry.values;
    STRATA_CHECK_ARG(k.size(0) == key.size(0) && k.size(1) == key.size(1) &&
                         k.size(3) == key.size(3) && v.size(3) == value.size(3) &&
                         k.dtype() == key.dtype(),
                     "KVCache::update (layer {}): the layer caches [batch {}, kv_heads {}, "
                     "head_dim {}] {} entries but got key {}; use a new cache (or clear() this "
                     "one) for another batch or model",
                     layer, k.size(0), k.size(1), k.size(3), k.dtype(), key.describe());
    if (k.device() != key.device()) {  // the layer moved: its past follows it
      entry.keys = k.to(key.device());
      entry.values = v.to(key.device());
    }
  }
  const std::int64_t needed = entry.length + added;
  make_room(entry, needed, key, value);
  entry.keys.narrow(2, entry.length, added).copy_(key);
  entry.values.narrow(2, entry.length, added).copy_(value);
  entry.length = needed;
  return {entry.keys.narrow(2, 0, needed), entry.values.narrow(2, 0, needed)};
}

void KVCache::make_room(Layer& entry, std::int64_t needed, const Tensor& key_like,
                        const Tensor& value_like) const {
  const std::int64_t capacity = entry.keys.defined() ? entry.keys.size(2) : 0;
  if (needed <= capacity) return;
  const std::int64_t next =
      std::max({needed, reserve_, 2 * capacity, capacity == 0 ? kMinCapacity : 0});
  entry.keys = grown(entry.keys, entry.length, next, key_like);
  entry.values = grown(entry.values, entry.length, next, value_like);
}

std::pair<Tensor, Tensor> KVCache::storage_for_append(std::int64_t layer, std::int64_t tokens) {
  at(layer, "storage_for_append");
  Layer& entry = layers_[static_cast<std::size_t>(layer)];
  STRATA_CHECK_ARG(entry.keys.defined() && tokens >= 0,
                   "KVCache::storage_for_append (layer {}): the layer must hold entries (run the "
                   "prompt through the model first) and tokens ({}) must be >= 0",
                   layer, tokens);
  make_room(entry, entry.length + tokens, entry.keys, entry.values);
  return {entry.keys, entry.values};
}

void KVCache::commit_append(std::int64_t layer, std::int64_t tokens) {
  at(layer, "commit_append");
  Layer& entry = layers_[static_cast<std::size_t>(layer)];
  STRATA_CHECK_ARG(
      entry.keys.defined() && tokens >= 0 && entry.length + tokens <= entry.keys.size(2),
      "KVCache::commit_append (layer {}): {} tokens past the {} cached do not fit "
      "the capacity; call storage_for_append first",
      layer, tokens, entry.length);
  entry.length += tokens;
}

Tensor KVCache::keys(std::int64_t layer) const {
  const Layer& entry = at(layer, "keys");
  return entry.keys.defined() ? entry.keys.narrow(2, 0, entry.length) : Tensor();
}

Tensor KVCache::values(std::int64_t layer) const {
  const Layer& entry = at(layer, "values");
  return entry.values.defined() ? entry.values.narrow(2, 0, entry.length) : Tensor();
}

std::optional<Device> KVCache::device(std::int64_t layer) const {
  const Layer& entry = at(layer, "device");
  if (!entry.keys.defined()) return std::nullopt;
  return entry.keys.device();
}

std::uint64_t KVCache::allocated_bytes() const {
  std::uint64_t total = 0;
  for (const Layer& entry : layers_) {
    if (entry.keys.defined()) total += entry.keys.nbytes() + entry.values.nbytes();
  }
  return total;
}

void KVCache::clear() {
  for (Layer& entry : layers_) entry = Layer{};
}

}  // namespace strata::models

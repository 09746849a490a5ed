#pragma once
// KVCache: the keys and values of every attention layer, kept between forward calls so decoding
// a token attends to the past without recomputing it. It travels through forward() as an opaque
// Value object (keyword "past_key_values"), so offload and device hooks pass it through untouched;
// each layer's entries live wherever that layer computes (its execution device), allocated on
// the layer's first update and moved if the layer moves.
//
// Storage grows geometrically in the sequence dimension (or to the capacity reserved up front,
// which generate() does for prompt + new tokens), and update() returns views of the filled part,
// so a decode step copies one token per layer, not the whole history.

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/nn/value.h"

namespace strata::models {

class KVCache final : public nn::Object {
 public:
  // `reserve_tokens`: the capacity each layer allocates on its first update (at least the
  // tokens it is given).
  explicit KVCache(std::int64_t num_layers, std::int64_t reserve_tokens = 0);
  std::string_view type_name() const override { return "KVCache"; }

  std::int64_t num_layers() const { return static_cast<std::int64_t>(layers_.size()); }
  // Tokens cached in `layer` (0 before its first update).
  std::int64_t seq_length(std::int64_t layer = 0) const;
  // Appends key and value [batch, kv_heads, new_tokens, head_dim] to `layer` and returns the
  // layer's whole keys and values [batch, kv_heads, seq_length, head_dim] (views of the cache).
  // The batch, heads, head_dim and dtype must match what the layer holds (InvalidArgument
  // otherwise); a different device moves the layer's entries there first.
  std::pair<Tensor, Tensor> update(std::int64_t layer, const Tensor& key, const Tensor& value);
  // For kernels that write the cache in place (the decode graph, strata/models/decode_graph.h):
  // makes room for `tokens` more entries in `layer` (growing as update() does; the layer must
  // hold entries) and returns its whole storage [batch, kv_heads, capacity, head_dim], keys and
  // values, to be written at seq_length(layer). commit_append then counts the written tokens.
  std::pair<Tensor, Tensor> storage_for_append(std::int64_t layer, std::int64_t tokens);
  void commit_append(std::int64_t layer, std::int64_t tokens);
  // The cached keys / values of `layer` (undefined tensors before its first update).
  Tensor keys(std::int64_t layer) const;
  Tensor values(std::int64_t layer) const;
  // Where `layer`'s entries live (nullopt before its first update).
  std::optional<Device> device(std::int64_t layer) const;
  // Sets the capacity of later first allocations (existing entries keep theirs).
  void reserve(std::int64_t tokens) { reserve_ = tokens; }
  // Bytes allocated by all layers (capacity, not just the filled part).
  std::uint64_t allocated_bytes() const;
  // Drops every entry; the cache can then start a new sequence.
  void clear();

 private:
  struct Layer {
    Tensor keys;  // [batch, kv_heads, capacity, head_dim]
    Tensor values;
    std::int64_t length = 0;
  };
  const Layer& at(std::int64_t layer, const char* who) const;
  // Grows `entry` to hold `needed` tokens (geometrically; the reserve for a first allocation).
  void make_room(Layer& entry, std::int64_t needed, const Tensor& key_like,
                 const Tensor& value_like) const;

  std::vector<Layer> layers_;
  std::int64_t reserve_ = 0;
};

}  // namespace strata::models

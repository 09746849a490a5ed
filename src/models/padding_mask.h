#pragma once
// Padded batches (private to src/models): the 0/1 `attention_mask` a caller passes with
// input_ids, [batch, past + seq] (1 = token, 0 = padding, over the cached and the new tokens),
// read to the host once per forward, and what the models derive from it: per-row position ids
// and the additive masks of the attention layers.
//
// The mask may hold padding anywhere (left padding of a prompt, and the holes continuous
// batching leaves when rows of different lengths share a forward pass): positions count a row's
// tokens (cumsum), so a row computes what it computes alone, without its padding.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/nn/value.h"

namespace strata::models::detail {

class PaddingMask {
 public:
  // `mask` on any device, int64, int32 or bool, [batch, past + seq] with 0/1 values; anything
  // else is an InvalidArgument naming attention_mask, what was expected and what was found.
  PaddingMask(const Tensor& mask, std::int64_t batch, std::int64_t seq, std::int64_t past,
              std::string_view who);

  // The keyword "attention_mask" of `args` for input_ids [batch, seq] after `past` cached
  // tokens: nullopt when it is absent, none, or all ones (the unpadded path then runs exactly as
  // without a mask, building nothing).
  static std::optional<PaddingMask> from_args(const nn::Args& args, std::int64_t batch,
                                              std::int64_t seq, std::int64_t past,
                                              std::string_view who);

  std::int64_t batch() const { return batch_; }
  std::int64_t seq() const { return seq_; }
  std::int64_t past() const { return past_; }
  // The mask as int64 [batch, past + seq] on the cpu.
  Tensor tensor() const;

  // transformers' generate(): cumsum(mask) - 1 over the new tokens, 1 at padding; int64
  // [batch, seq] on `device`.
  Tensor position_ids(Device device) const;
  // OPTLearnedPositionalEmbedding's rule: cumsum(mask) * mask - 1 over the new tokens (-1 at
  // padding), plus `offset`; int64 [batch, seq] on `device`.
  Tensor opt_position_ids(std::int64_t offset, Device device) const;
  // The largest entry of position_ids() (dynamic RoPE, learned-position limits).
  std::int64_t max_position() const;
  // Throws InvalidArgument (naming max_position_embeddings) when a position reaches `limit`,
  // the size of a learned position table.
  void check_position_limit(std::int64_t limit, std::string_view who) const;

  // The additive mask of an attention layer, float32 [batch, 1, seq, past + seq] on `device`:
  // 0 where the query at cache index past + i may see key j, -inf elsewhere. It may when both
  // are tokens, j <= past + i (causal), and, for window > 0, the query's position minus the
  // key's is below the window (transformers' sliding window, counted in tokens so that padding
  // inside a row does not shrink it). A padding query sees nothing: its attention is zeros.
  // Built once per (window, device) and kept.
  Tensor additive(std::int64_t window, Device device);

 private:
  std::int64_t token(std::int64_t b, std::int64_t j) const;
  // Tokens of row b up to and including cache index j.
  std::int64_t count(std::int64_t b, std::int64_t j) const;

  std::int64_t batch_, seq_, past_, keys_;
  std::vector<std::int64_t> mask_;    // [batch, keys] 0/1
  std::vector<std::int64_t> counts_;  // [batch, keys] inclusive cumulative sums
  struct Built {
    std::int64_t window;
    Device device;
    Tensor mask;
  };
  std::vector<Built> additive_;  // a layer kind or two, a device or two: a short list
};

}  // namespace strata::models::detail

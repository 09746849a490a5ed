#pragma once
// Tensor parallelism for the decoder family (Megatron-LM's split; docs/distributed.md):
//   q/k/v_proj, gate/up_proj (and Mixtral's w1/w3)  column-parallel: each rank holds the rows of
//                                                    its heads / its part of the intermediate
//   o_proj, down_proj (and w2)                       row-parallel: each rank holds the matching
//                                                    input columns; one all-reduce sums the parts
//                                                    (Mixtral: one per MoE block, after the
//                                                    experts' weighted sum)
//   lm_head                                          vocabulary-parallel: each rank's rows of the
//                                                    vocabulary, logits all-gathered
//   embeddings, norms, router, rotary                replicated
// Heads are split per rank: num_attention_heads must divide by the ranks, and the KV heads
// either divide by them or (fewer KV heads than ranks) each KV head is held by ranks / kv_heads
// ranks, as vLLM does. The module tree keeps transformers' names, with the rank's shapes, so the
// loader reads each rank's shard straight from the checkpoint (tensor_parallel_shards).

#include <cstdint>
#include <memory>

#include "strata/dist/communicator.h"
#include "strata/io/tensor_shard.h"
#include "strata/models/config.h"
#include "strata/nn/layers.h"

namespace strata::models {

using nn::Args;
using nn::Value;

struct TensorParallel {
  int rank = 0;
  int size = 1;
  // The group's communicator. Null: a model built for planning only (its shapes are the rank's;
  // a forward over more than one rank is then an error).
  std::shared_ptr<dist::Communicator> comm;

  // The rank and size of `comm`.
  static TensorParallel over(std::shared_ptr<dist::Communicator> comm);
  bool active() const { return size > 1; }
};

// A contiguous part of n items split over `size` ranks: the first n % size ranks get one more.
struct ShardRange {
  std::int64_t start = 0;
  std::int64_t length = 0;
};
ShardRange shard_range(std::int64_t n, int rank, int size);

// Throws InvalidArgument (naming the config file, the field, its value and the sizes that work)
// when `config` cannot be split over `size` ranks: heads or KV heads that do not divide, an
// intermediate size that does not divide; NotSupported for GPT-2/OPT and quantized checkpoints.
void check_tensor_parallel(const TransformerConfig& config, int size);

// The configuration one rank builds: its heads, KV heads and intermediate size (everything else,
// the vocabulary included, as `config`). Checks with check_tensor_parallel.
TransformerConfig rank_config(const TransformerConfig& config, int size);

// The shard of every split checkpoint tensor that rank `tp.rank` loads (names not listed are
// loaded whole). A tied head's shard is cut from the input embedding.
io::TensorShards tensor_parallel_shards(const TransformerConfig& config, const TensorParallel& tp);

// A linear layer whose input features are split over the ranks (o_proj, down_proj): each rank
// multiplies its part, one all-reduce sums them, then the (replicated) bias is added once.
// class_name "Linear", so device maps and no-split rules see a linear layer.
class RowParallelLinear : public nn::Linear {
 public:
  RowParallelLinear(std::int64_t local_in_features, std::int64_t out_features, bool bias,
                    DType dtype, TensorParallel tp);
  Value forward(Args& args) override;

 private:
  TensorParallel tp_;
};

// The head with the vocabulary split over the ranks: each rank computes the logits of its rows,
// and the full [..., vocab] logits are all-gathered in vocabulary order (on every rank).
class VocabParallelHead : public nn::Linear {
 public:
  VocabParallelHead(std::int64_t in_features, std::int64_t vocab_size, DType dtype,
                    TensorParallel tp);
  Value forward(Args& args) override;

 private:
  std::int64_t vocab_size_;
  TensorParallel tp_;
};

namespace detail {
// The communicator a tensor-parallel module needs for its forward; `who` names the module.
dist::Communicator& forward_communicator(const TensorParallel& tp, const char* who);
}  // namespace detail

}  // namespace strata::models

#pragma once
// MixtralSparseMoeBlock: a router (gate) picks the top-k of num_experts feed-forward experts per
// token; the token's output is the routing-weighted sum of those experts' outputs.
//
// Module tree as Mixtral checkpoints name it (and transformers v4 built it):
//   block_sparse_moe.gate          Linear(hidden, num_experts), no bias
//   block_sparse_moe.experts.N     MixtralBlockSparseTop2MLP (w1, w2, w3, act_fn)
// Each expert is its own module, so a device map can place experts apart (a hook on an expert
// moves its input; its output is brought back here). transformers v5 fuses the experts into 3-D
// tensors in memory and converts these keys when loading; the arithmetic is the same.

#include <memory>

#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/tensor_parallel.h"
#include "strata/nn/layers.h"

namespace strata::models {

// forward(hidden [batch, seq, hidden]) -> [batch, seq, hidden]. Routing follows transformers:
// softmax of the router logits in float32, top-k, weights renormalised to sum to one (kept in
// float32), each expert's output times its weight rounded once to the model dtype, and the
// contributions of a token summed in increasing expert order (index_add_'s order). Only experts
// that received tokens run.
class SparseMoeBlock : public nn::Module {
 public:
  // Under tensor parallelism `config` is the rank's (each expert holds its part of the
  // intermediate size) and the block's output is all-reduced once.
  SparseMoeBlock(const TransformerConfig& config, DType dtype, const TensorParallel& tp = {});
  std::int64_t num_experts() const { return num_experts_; }
  std::int64_t top_k() const { return top_k_; }
  Value forward(Args& args) override;

 private:
  std::int64_t num_experts_, top_k_;
  TensorParallel tp_;
  std::shared_ptr<nn::Linear> gate_;
  std::shared_ptr<nn::ModuleList> experts_;
};

}  // namespace strata::models

#pragma once
// The sparse mixture-of-experts block of the decoder family: a router (gate) picks the top-k of
// num_experts feed-forward experts per token; the token's output is the routing-weighted sum of
// those experts' outputs (plus, for Qwen2-MoE, a shared expert scaled by a sigmoid gate).
//
// Module trees as the checkpoints name them (and transformers v4 built them):
//   Mixtral    block_sparse_moe (MixtralSparseMoeBlock): gate, experts.N
//              (MixtralBlockSparseTop2MLP: w1, w2, w3, act_fn)
//   Qwen2-MoE  mlp (Qwen2MoeSparseMoeBlock): gate, experts.N (Qwen2MoeMLP: gate_proj, up_proj,
//              down_proj, act_fn), shared_expert (Qwen2MoeMLP), shared_expert_gate (Linear -> 1)
//   Qwen3-MoE  mlp (Qwen3MoeSparseMoeBlock): gate, experts.N (Qwen3MoeMLP)
// Each expert is its own module, so a device map can place experts apart (a hook on an expert
// moves its input; its output is brought back here). transformers v5 fuses the experts into 3-D
// tensors in memory; checkpoints saved that way are split into these names when read
// (io::CheckpointReader, docs/models.md), the arithmetic is the same.

#include <memory>

#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/tensor_parallel.h"
#include "strata/nn/layers.h"

namespace strata::models {

class GatedMLP;

// forward(hidden [batch, seq, hidden]) -> [batch, seq, hidden]. Routing follows transformers:
// softmax of the router logits in float32, top-k, weights renormalised to sum to one when
// norm_topk_prob (Mixtral always), each expert's output times its weight (Mixtral: the float32
// weight, rounded once; Qwen: the weight rounded to the model dtype first, as v5's router
// does), and the contributions of a token summed in increasing expert order (index_add_'s
// order). Only experts that received tokens run.
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
  bool norm_topk_prob_, round_weights_;
  TensorParallel tp_;
  std::shared_ptr<nn::Linear> gate_;
  std::shared_ptr<nn::ModuleList> experts_;
  std::shared_ptr<GatedMLP> shared_expert_;         // Qwen2-MoE only
  std::shared_ptr<nn::Linear> shared_expert_gate_;  // Qwen2-MoE only
};

}  // namespace strata::models

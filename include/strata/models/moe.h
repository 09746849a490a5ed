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

#include <chrono>
#include <memory>
#include <vector>

#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/tensor_parallel.h"
#include "strata/nn/layers.h"
#include "strata/placement/expert_cache.h"

namespace strata::models {

class GatedMLP;
namespace detail {
struct ExpertRouting;
struct HostStaging;
class ExpertSources;
}  // namespace detail

// How the routed experts of the sparse blocks computed (docs/moe-execution.md). One count per
// (expert, step) that received tokens.
struct ExpertExecutionStats {
  std::int64_t resident = 0;  // weights on the block's device or not offloaded: called as is
  std::int64_t cpu = 0;       // offloaded, computed on the cpu where the weights are stored
  std::int64_t streamed = 0;  // offloaded, this expert's weights copied to the execution device
  std::int64_t cached = 0;    // offloaded, found in the expert cache
  // Of `streamed`: copied on the scheduler's copy stream (not kept by the cache), overlapping the
  // compute of the experts queued before it.
  std::int64_t copy_streamed = 0;
  // Not on the cpu, computed in a step's grouped products (a GPU's prefill: three launches for
  // all of them, detail::grouped_experts_forward) rather than one expert after another.
  std::int64_t grouped = 0;
  std::int64_t cpu_bytes = 0;       // stored weight bytes the cpu read
  std::int64_t streamed_bytes = 0;  // weight bytes copied to the execution device
  // Block steps with cpu experts: each moved the block's activations to the cpu once and the
  // experts' weighted outputs back once, whatever the number of experts.
  std::int64_t cpu_batches = 0;
  // Host wall time of the block steps, in nanoseconds: reading the routing to the host (it waits
  // for the GPU work queued before it: the attention), the cpu experts' products, and the whole
  // expert step after routing (cpu experts, the others' launches, the combination).
  // device_ns: the host time of the device experts' calls (resident, cached or streamed: their
  // launches, queued behind the GPU's work), within experts_ns.
  std::int64_t route_ns = 0, cpu_ns = 0, experts_ns = 0, device_ns = 0;
  // Within experts_ns: choosing each expert's path (cache lookups, policies, the cache's copies)
  // before anything computes, and the tail after the cpu experts' products (their rows' copy
  // back and the k-way sum), in steps with cpu experts.
  std::int64_t decide_ns = 0, tail_ns = 0;
  std::int64_t block_steps = 0;  // forwards of the blocks that ran experts
  // Block steps that read the routing and the input with one wait (read_to_host staged x).
  std::int64_t staged_batches = 0;
  // Experts that received tokens at least once since the counters were reset (every kind above);
  // summed over blocks, so distinct_experts / blocks is a block's mean (how much of its experts a
  // benchmark's routing stream touched: a cache's hit rate means little on a stream that repeats
  // a few experts).
  std::int64_t distinct_experts = 0;
  std::int64_t blocks = 0;  // blocks summed (1 for one block's stats)
  ExpertExecutionStats& operator+=(const ExpertExecutionStats& o);
};

// A mixture-of-experts block: its routed experts (`experts.N`, GatedMLPs) and the one mechanism
// every family runs them through (docs/moe-execution.md). A subclass routes (its own router and
// routing function) and calls run_experts: only the experts with tokens run, each where it is
// chosen to (resident; offloaded ones on the cpu where they are stored, streamed alone, or from
// the expert cache), and a token's weighted outputs are added in increasing expert order.
// SparseMoeBlock (Mixtral, Qwen2-MoE, Qwen3-MoE) and DeepseekMoE (DeepSeek-V2/V3) are the two.
class MoeBlock : public nn::Module {
 public:
  std::int64_t num_experts() const { return num_experts_; }
  std::int64_t top_k() const { return top_k_; }

  // The cache consulted before the cpu and streaming for offloaded experts (shared by the blocks
  // of a model; `block_index` tells this block's experts apart), or null.
  void set_expert_cache(std::shared_ptr<placement::ExpertCache> cache, std::int64_t block_index);
  const ExpertExecutionStats& execution_stats() const { return stats_; }
  void reset_execution_stats();
  // Whether any routed expert's weights are offloaded (behind a PrefetchHook), and the bytes of
  // the largest expert's parameters (attach_expert_cache's partitions).
  bool offloads_experts() const;
  std::int64_t largest_expert_bytes() const;

 protected:
  // `mixtral_naming`: the experts' projections are w1/w3/w2 (else gate/up/down_proj).
  MoeBlock(std::string class_name, std::int64_t num_experts, std::int64_t top_k,
           Activation activation, bool mixtral_naming);
  // The routed experts' weighted sum [tokens, hidden] for every token of `flat` [tokens, hidden]
  // (weights rounded to `weight_dtype` first, combine_experts in models/expert_routing.h). The
  // subclass registers `experts_` (in its checkpoint's registration order).
  Tensor run_experts(const Tensor& flat, const detail::ExpertRouting& routing, DType weight_dtype);
  // Counts the time since `start` (a forward's first instruction) as routing time.
  void routed_since(std::chrono::steady_clock::time_point start);
  // `tensors` (the router's outputs) read to the host with one wait for the GPU: every copy but
  // the last queues into pinned buffers kept by the block. A decode-sized `flat` of a block with
  // offloaded experts is copied with them, for run_experts' cpu experts (no second wait). On the
  // cpu: returned as they are.
  std::vector<Tensor> read_to_host(const std::vector<Tensor>& tensors, const Tensor& flat);

  std::shared_ptr<nn::ModuleList> experts_;

 private:
  std::int64_t num_experts_, top_k_;
  Activation activation_;
  bool mixtral_naming_;
  std::shared_ptr<placement::ExpertCache> cache_;
  std::shared_ptr<detail::ExpertSources> sources_;  // created at the first forward
  std::shared_ptr<detail::HostStaging> staging_;    // pinned host buffers (on a GPU)
  std::vector<Tensor> host_reads_;                  // read_to_host's pinned buffers
  bool staged_x_ = false;                           // staging_->x holds this step's input
  bool has_offloaded_ = false;                      // an offloaded expert has run
  std::int64_t block_index_ = 0;
  ExpertExecutionStats stats_;
  std::vector<bool> used_;  // experts with tokens since the last reset (distinct_experts)
};

// forward(hidden [batch, seq, hidden]) -> [batch, seq, hidden]. Routing follows transformers:
// softmax of the router logits in float32, top-k, weights renormalised to sum to one when
// norm_topk_prob (Mixtral always), each expert's output times its weight (Mixtral: the float32
// weight, rounded once; Qwen: the weight rounded to the model dtype first, as v5's router
// does), and the contributions of a token summed in increasing expert order (index_add_'s
// order). Only experts that received tokens run.
class SparseMoeBlock : public MoeBlock {
 public:
  // Under tensor parallelism `config` is the rank's (each expert holds its part of the
  // intermediate size) and the block's output is all-reduced once.
  SparseMoeBlock(const TransformerConfig& config, DType dtype, const TensorParallel& tp = {});
  Value forward(Args& args) override;

 private:
  bool norm_topk_prob_, round_weights_;
  TensorParallel tp_;
  std::shared_ptr<nn::Linear> gate_;
  std::shared_ptr<GatedMLP> shared_expert_;         // Qwen2-MoE only
  std::shared_ptr<nn::Linear> shared_expert_gate_;  // Qwen2-MoE only
};

// The mixture-of-experts blocks of `model` (every family) in module order.
std::vector<MoeBlock*> moe_blocks(nn::Module& model);
// Their execution counts, summed.
ExpertExecutionStats expert_execution_stats(nn::Module& model);
void reset_expert_execution_stats(nn::Module& model);

// Gives every mixture-of-experts block of a dispatched `model` one expert cache of `capacity_bytes`
// on the execution device of its prefetch scheduler and returns it; null (and the blocks keep none)
// when nothing is offloaded or the capacity is 0.
std::shared_ptr<placement::ExpertCache> attach_expert_cache(
    nn::Module& model, std::int64_t capacity_bytes,
    placement::ExpertCachePolicy policy = placement::ExpertCachePolicy::Lru);

}  // namespace strata::models

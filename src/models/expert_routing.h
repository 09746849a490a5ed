#pragma once
// The routing and expert loop every mixture of experts shares (private to src/models):
// SparseMoeBlock (Mixtral, Qwen2-MoE, Qwen3-MoE: moe.cc) and gpt-oss' GptOssExperts
// (gpt_oss_moe.cc). The families differ in how they pick the top-k (softmax over all experts
// then top-k, or top-k of the logits then softmax over those k), whether they renormalise the k
// weights, the dtype the weights are rounded to, and what an expert computes; the host-side
// grouping of tokens per expert, the weighting and the sum in increasing expert order (the order
// transformers' index_add_ loop adds in) are the same arithmetic, kept here once.

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::models::detail {

// Tokens grouped by expert: tokens[e] lists (increasing) the tokens routed to expert e and
// weights[e] their routing weights.
struct ExpertRouting {
  std::int64_t tokens = 0, top_k = 0;
  std::vector<std::vector<std::int64_t>> expert_tokens;
  std::vector<std::vector<double>> expert_weights;
};

// `indices` (integer) and `weights` (floating) [tokens, k] on any device, read to the host (the
// routing is tiny; transformers syncs too to learn which experts have work). With
// `normalize_top_k` each token's k weights are divided by their sum in float32 (norm_topk_prob).
// An index outside [0, num_experts) or mismatched shapes are InvalidArgument naming `who`.
ExpertRouting route_tokens(const Tensor& indices, const Tensor& weights, std::int64_t num_experts,
                           bool normalize_top_k, std::string_view who);

// Runs expert(e, rows) on the rows of `x` [tokens, hidden] routed to each expert e with tokens
// (an [n, hidden] result on any device), multiplies each output row by its routing weight, and
// returns [tokens, hidden] on x's device in x's dtype: per token, its k weighted outputs added in
// increasing expert order. The weights are rounded to `weight_dtype` (the router's), then the
// product is formed in float32 and rounded once to the output's dtype (transformers' type
// promotion of `out * routing_weights`).
// Experts for which `on_cpu(e)` holds compute on the cpu (their weights live there,
// docs/moe-execution.md): x goes to the cpu once, their rows are picked, computed and weighted
// there, and all their outputs come back in one copy, whatever their number.
// `cpu_batch`, when given, computes all the cpu experts of the step at once: their ids in
// increasing order, their rows (on the cpu), each row's routing weight (float32 [n, 1], rounded
// to weight_dtype) and where their weighted outputs go (cpu [n, hidden] views); it writes
// weigh_rows' numbers there. The caller can then spread few experts over every core. Without it
// each cpu expert runs expert(e, rows) in a task of its own.
// `staging`, when given, holds host buffers kept between steps (pinned behind a GPU): x already
// copied to the host (with the routing's read: no second wait for the GPU), the cpu experts'
// outputs and the device experts' weights, whose copies to the device then queue without a wait.
// `on_caller`, when given, must run exactly once on the calling thread (the device experts'
// launches; the batch runs it once its workers have started, cpu/expert_gemv.h).
using CpuExpertsFn =
    std::function<void(const std::vector<std::int64_t>& experts, const std::vector<Tensor>& rows,
                       const std::vector<Tensor>& weights, const std::vector<Tensor>& into,
                       const std::function<void()>& on_caller)>;
struct HostStaging {
  Tensor x;        // x on the host (this step's), or undefined
  Tensor rows;     // [>= cpu rows, hidden] of x's dtype, or undefined
  Tensor weights;  // [>= rows, 1] float32, or undefined
  // The cpu experts compute beside the caller (moe_beside.h) while it launches the device's.
  bool beside = false;
  // The cpu batch launches the device's experts on this thread once its workers have started.
  bool in_queue = false;
};
// `grouped`, when given, computes every expert of the step that is not on the cpu in one call
// (on x's device, several tokens): their ids in increasing order, their row counts, and their
// rows of x one expert after another; it returns their unweighted outputs in the same order.
// Without it (or for one token) each runs expert(e, rows).
using GroupedExpertsFn =
    std::function<Tensor(const std::vector<std::int64_t>& experts,
                         const std::vector<std::int64_t>& counts, const Tensor& rows)>;
Tensor combine_experts(const Tensor& x, const ExpertRouting& routing, DType weight_dtype,
                       const std::function<Tensor(std::int64_t expert, const Tensor& rows)>& expert,
                       const std::function<bool(std::int64_t expert)>& on_cpu = {},
                       const CpuExpertsFn& cpu_batch = {}, const HostStaging* staging = nullptr,
                       const GroupedExpertsFn& grouped = {});

// into <- out x weight as the combination rounds it: out [n, d] times its rows' float32 weights
// [n, 1] in float32, rounded once to out's dtype (transformers' `out * routing_weights`).
void weigh_rows(const Tensor& out, const Tensor& weight, const Tensor& into);

}  // namespace strata::models::detail

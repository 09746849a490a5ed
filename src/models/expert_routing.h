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
// `cpu_batch`, when given, computes all the cpu experts of the step at once (their ids in
// increasing order and their rows, on the cpu; it returns their outputs in that order): the
// caller can then spread few experts over every core. Without it each cpu expert runs
// expert(e, rows) in a task of its own.
using CpuExpertsFn = std::function<std::vector<Tensor>(const std::vector<std::int64_t>& experts,
                                                       const std::vector<Tensor>& rows)>;
Tensor combine_experts(const Tensor& x, const ExpertRouting& routing, DType weight_dtype,
                       const std::function<Tensor(std::int64_t expert, const Tensor& rows)>& expert,
                       const std::function<bool(std::int64_t expert)>& on_cpu = {},
                       const CpuExpertsFn& cpu_batch = {});

}  // namespace strata::models::detail

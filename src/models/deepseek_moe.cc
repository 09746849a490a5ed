// DeepSeek's mixture of experts: the router (float32 logits, V3's correction bias), the
// group-limited routing (transformers' route_tokens_to_experts of DeepseekV2Moe / DeepseekV3MoE)
// and the block, a MoeBlock with that routing and shared experts.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "models/attention.h"
#include "models/expert_routing.h"
#include "strata/core/error.h"
#include "strata/models/decoder.h"
#include "strata/models/deepseek.h"
#include "strata/ops.h"

namespace strata::models {
namespace {

using TopkMethod = DeepseekConfig::TopkMethod;

// The `k` largest of `values` (indices), the lower index first among equal values.
std::vector<std::int64_t> largest(const std::vector<float>& values, std::int64_t k) {
  std::vector<std::int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](std::int64_t a, std::int64_t b) {
                      const float x = values[static_cast<std::size_t>(a)];
                      const float y = values[static_cast<std::size_t>(b)];
                      return x > y || (x == y && a < b);
                    });
  order.resize(static_cast<std::size_t>(k));
  return order;
}

}  // namespace

DeepseekRouter::DeepseekRouter(const TransformerConfig& c, DType dtype)
    : nn::Module(c.architecture == Architecture::DeepseekV3 ? "DeepseekV3TopkRouter" : "Linear") {
  create_parameter("weight", {c.num_experts, c.hidden_size}, dtype, 0.0);
  if (c.architecture == Architecture::DeepseekV3) {
    create_buffer("e_score_correction_bias", {c.num_experts}, DType::Float32, 0.0);
  }
}

Value DeepseekRouter::forward(Args& args) {
  const Tensor& x = args.tensor(0, class_name() + ".forward");
  const Tensor& weight = parameter("weight");
  const Tensor logits = ops::linear(ops::cast(x, DType::Float32),
                                    ops::cast(detail::on_device_of(weight, x), DType::Float32));
  nn::ValueList out{logits};
  if (has_buffer("e_score_correction_bias")) {
    out.emplace_back(ops::cast(buffer("e_score_correction_bias"), DType::Float32));
  }
  return out;
}

DeepseekRouting deepseek_route(const std::vector<float>& logits, std::int64_t num_experts,
                               const std::vector<float>& bias, std::int64_t top_k,
                               bool norm_topk_prob, const DeepseekConfig& c) {
  const bool v3 = c.topk_method == TopkMethod::NoAuxTc;
  const auto E = static_cast<std::size_t>(num_experts);
  STRATA_CHECK_ARG(num_experts > 0 && logits.size() % E == 0,
                   "deepseek_route: {} logits are not rows of {} experts", logits.size(), E);
  STRATA_CHECK_ARG(bias.empty() || bias.size() == E,
                   "deepseek_route: {} correction biases for {} experts", bias.size(), E);
  STRATA_CHECK_ARG(top_k > 0 && top_k <= num_experts,
                   "deepseek_route: top-{} of {} experts; k must be in [1, experts]", top_k, E);
  if (c.topk_method != TopkMethod::Greedy) {
    const std::int64_t per = c.n_group > 0 ? num_experts / c.n_group : 0;
    STRATA_CHECK_ARG(c.n_group > 0 && num_experts % c.n_group == 0 && per >= (v3 ? 2 : 1) &&
                         c.topk_group > 0 && c.topk_group <= c.n_group &&
                         c.topk_group * per >= top_k,
                     "deepseek_route: {} experts in n_group {} (topk_group {}) cannot give a "
                     "group-limited top-{}",
                     E, c.n_group, c.topk_group, top_k);
  }
  const std::size_t tokens = logits.size() / E, k = static_cast<std::size_t>(top_k);
  // Greedy ignores the groups (n_group may be anything there).
  const std::size_t groups =
      c.topk_method == TopkMethod::Greedy ? 1 : static_cast<std::size_t>(c.n_group);
  const std::size_t per_group = E / groups;
  const auto scale = static_cast<float>(c.routed_scaling_factor);
  DeepseekRouting routing;
  routing.indices.reserve(tokens * k);
  routing.weights.reserve(tokens * k);
  std::vector<float> scores(E), choice(E), group_scores(groups);
  for (std::size_t t = 0; t < tokens; ++t) {
    const float* row = logits.data() + t * E;
    if (v3) {
      for (std::size_t e = 0; e < E; ++e) {
        scores[e] = 1.0f / (1.0f + std::exp(-row[e]));
        choice[e] = scores[e] + (bias.empty() ? 0.0f : bias[e]);
      }
    } else {  // softmax in float32
      const float top = *std::max_element(row, row + E);
      float sum = 0.0f;
      for (std::size_t e = 0; e < E; ++e) sum += scores[e] = std::exp(row[e] - top);
      for (std::size_t e = 0; e < E; ++e) choice[e] = scores[e] /= sum;
    }
    if (c.topk_method != TopkMethod::Greedy) {
      // A group's score: V3 the sum of its two best choices, V2 its best; the experts of the
      // groups not kept are masked to 0.0 (masked_fill), as transformers does.
      for (std::size_t g = 0; g < groups; ++g) {
        const std::vector<float> members(
            choice.begin() + static_cast<std::ptrdiff_t>(g * per_group),
            choice.begin() + static_cast<std::ptrdiff_t>((g + 1) * per_group));
        const std::vector<std::int64_t> best = largest(members, v3 ? 2 : 1);
        float score = 0.0f;
        for (std::int64_t i : best) score += members[static_cast<std::size_t>(i)];
        group_scores[g] = score;
      }
      std::vector<bool> kept(groups, false);
      for (std::int64_t g : largest(group_scores, c.topk_group))
        kept[static_cast<std::size_t>(g)] = true;
      for (std::size_t e = 0; e < E; ++e) {
        if (!kept[e / per_group]) choice[e] = 0.0f;
      }
    }
    const std::vector<std::int64_t> chosen = largest(choice, top_k);
    float denominator = 1.0f;
    if (norm_topk_prob) {
      denominator = 0.0f;
      for (std::int64_t e : chosen) denominator += scores[static_cast<std::size_t>(e)];
      denominator += 1e-20f;
    }
    for (std::int64_t e : chosen) {
      routing.indices.push_back(e);
      routing.weights.push_back(scores[static_cast<std::size_t>(e)] / denominator * scale);
    }
  }
  return routing;
}

DeepseekMoE::DeepseekMoE(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : MoeBlock(c.architecture == Architecture::DeepseekV3 ? "DeepseekV3MoE" : "DeepseekV2Moe",
               c.num_experts, c.num_experts_per_tok, c.activation, false),
      config_(*c.deepseek),
      norm_topk_prob_(c.norm_topk_prob) {
  const QuantizationConfig* quant = c.quantization ? &*c.quantization : nullptr;
  const std::string prefix = fmt::format("model.layers.{}.mlp", layer_idx);
  // transformers' registration order: experts, gate, shared_experts. The routed experts have no
  // biases (v5's fused DeepseekV2Experts); V2's dense and shared MLPs follow mlp_bias.
  experts_ = register_module("experts", std::make_shared<nn::ModuleList>());
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    experts_->push_back(std::make_shared<GatedMLP>(
        c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size, c.moe_intermediate_size, false,
        c.activation, dtype, quant, fmt::format("{}.experts.{}", prefix, e)));
  }
  gate_ = register_module("gate", std::make_shared<DeepseekRouter>(c, dtype));
  if (config_.n_shared_experts > 0) {
    shared_experts_ = register_module(
        "shared_experts",
        std::make_shared<GatedMLP>(c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size,
                                   c.moe_intermediate_size * config_.n_shared_experts, c.mlp_bias,
                                   c.activation, dtype, quant, prefix + ".shared_experts"));
  }
}

Value DeepseekMoE::forward(Args& args) {
  const auto start = std::chrono::steady_clock::now();
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t tokens = x.size(0) * x.size(1), hidden = x.size(2), k = top_k();
  const Tensor flat = x.reshape({tokens, hidden});

  // The router's float32 logits [tokens, E] (and V3's bias) come to the host, where the
  // group-limited choice is made (transformers syncs on expert_hit for the same reason).
  const Value out = (*gate_)(Args({flat}));
  const nn::ValueList& parts = out.list();
  const Tensor& logits = parts.at(0).tensor();
  // One wait for the GPU: the bias, the logits (and the input, for cpu experts).
  std::vector<Tensor> reads;
  if (parts.size() > 1) reads.push_back(parts[1].tensor());
  reads.push_back(logits);
  const std::vector<Tensor> host = read_to_host(reads, flat);
  std::vector<float> bias;
  if (parts.size() > 1) bias = host.front().to(Device::cpu()).to_vector<float>();
  const DeepseekRouting chosen =
      deepseek_route(host.back().to(Device::cpu()).contiguous().to_vector<float>(), num_experts(),
                     bias, k, norm_topk_prob_, config_);
  const detail::ExpertRouting routing = detail::route_tokens(
      Tensor::from_vector(chosen.indices, {tokens, k}),
      Tensor::from_vector(chosen.weights, {tokens, k}), num_experts(), false, who);
  routed_since(start);
  // The float32 weights multiply the experts' outputs unrounded (DeepseekV{2,3}Experts).
  // The shared experts are queued before the routed ones: the GPU computes them while the cpu
  // computes the offloaded experts.
  Tensor shared;
  if (shared_experts_) shared = detail::on_device_of(call(*shared_experts_, flat), flat);
  Tensor result = run_experts(flat, routing, DType::Float32);
  if (shared.defined()) result = ops::add(result, detail::on_device_of(shared, result));
  return result.view(x.shape());
}

}  // namespace strata::models

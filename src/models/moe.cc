#include "strata/models/moe.h"

#include <vector>

#include "models/attention.h"
#include "strata/core/error.h"
#include "strata/models/decoder.h"
#include "strata/ops.h"

namespace strata::models {

namespace {

// sigmoid(x) for a [tokens, 1] gate: softmax over [x, 0] (there is no sigmoid op; the linear
// with weight [[1], [0]] writes x and an exact 0, and softmax([x, 0])[0] = 1 / (1 + e^-x)).
Tensor sigmoid_column(const Tensor& x) {
  const Tensor pad =
      Tensor::from_vector(std::vector<float>{1.0f, 0.0f}, {2, 1}).to(x.device(), x.dtype());
  return ops::softmax(ops::linear(x, pad), -1).narrow(1, 0, 1).contiguous();
}

}  // namespace

SparseMoeBlock::SparseMoeBlock(const TransformerConfig& c, DType dtype, const TensorParallel& tp)
    : nn::Module(c.class_name("SparseMoeBlock")),
      num_experts_(c.num_experts),
      top_k_(c.num_experts_per_tok),
      norm_topk_prob_(c.norm_topk_prob),
      round_weights_(c.architecture != Architecture::Mixtral),
      tp_(tp) {
  gate_ = register_module("gate",
                          std::make_shared<nn::Linear>(c.hidden_size, c.num_experts, false, dtype));
  experts_ = register_module("experts", std::make_shared<nn::ModuleList>());
  const bool mixtral = c.architecture == Architecture::Mixtral;
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    experts_->push_back(std::make_shared<GatedMLP>(
        mixtral ? "MixtralBlockSparseTop2MLP" : c.class_name("MLP"),
        mixtral ? GatedMLP::Naming::MixtralExpert : GatedMLP::Naming::Llama, c.hidden_size,
        c.moe_intermediate_size, false, c.activation, dtype));
  }
  if (c.shared_expert_intermediate_size > 0) {
    shared_expert_ = register_module(
        "shared_expert",
        std::make_shared<GatedMLP>(c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size,
                                   c.shared_expert_intermediate_size, false, c.activation, dtype));
    shared_expert_gate_ = register_module(
        "shared_expert_gate", std::make_shared<nn::Linear>(c.hidden_size, 1, false, dtype));
  }
}

Value SparseMoeBlock::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t tokens = x.size(0) * x.size(1), hidden = x.size(2), k = top_k_;
  const Tensor flat = x.reshape({tokens, hidden});

  // Routing is tiny ([tokens, k]); it is decided on the host, which also tells which experts
  // have work (transformers syncs for the same reason: expert_hit.nonzero()).
  const Tensor logits = call(*gate_, flat);
  const Tensor probs = ops::softmax(ops::cast(logits, DType::Float32), -1);
  auto [top_values, top_indices] = ops::topk(probs, k, -1);
  const std::vector<float> values = top_values.to(Device::cpu()).to_vector<float>();
  const std::vector<std::int64_t> indices = top_indices.to(Device::cpu()).to_vector<std::int64_t>();

  std::vector<std::vector<std::int64_t>> expert_tokens(static_cast<std::size_t>(num_experts_));
  std::vector<std::vector<float>> expert_weights(static_cast<std::size_t>(num_experts_));
  for (std::int64_t t = 0; t < tokens; ++t) {
    float sum = 0.0f;
    for (std::int64_t s = 0; s < k; ++s) sum += values[static_cast<std::size_t>(t * k + s)];
    if (!norm_topk_prob_) sum = 1.0f;
    for (std::int64_t s = 0; s < k; ++s) {
      const auto at = static_cast<std::size_t>(t * k + s);
      const auto e = static_cast<std::size_t>(indices[at]);
      expert_tokens[e].push_back(t);
      expert_weights[e].push_back(values[at] / sum);
    }
  }

  // Each expert's weighted outputs go to consecutive rows of `contributions`; rows_of[t] lists
  // token t's rows in increasing expert order.
  const Device device = flat.device();
  Tensor contributions = Tensor::empty({tokens * k, hidden}, x.dtype(), device);
  std::vector<std::vector<std::int64_t>> rows_of(static_cast<std::size_t>(tokens));
  std::int64_t offset = 0;
  for (std::int64_t e = 0; e < num_experts_; ++e) {
    const std::vector<std::int64_t>& routed = expert_tokens[static_cast<std::size_t>(e)];
    const auto n = static_cast<std::int64_t>(routed.size());
    if (n == 0) continue;
    const Tensor picked = ops::embedding(Tensor::from_vector(routed).to(device), flat);
    Tensor out = detail::on_device_of(call((*experts_)[static_cast<std::size_t>(e)], picked), flat);
    Tensor weight =
        Tensor::from_vector(expert_weights[static_cast<std::size_t>(e)], {n, 1}).to(device);
    if (round_weights_ && x.dtype() != DType::Float32) {
      weight = ops::cast(ops::cast(weight, x.dtype()), DType::Float32);  // v5 routers round
    }
    // transformers multiplies by the float32 weights (type promotion) and rounds once.
    out = out.dtype() == DType::Float32
              ? ops::mul(out, weight)
              : ops::cast(ops::mul(ops::cast(out, DType::Float32), weight), out.dtype());
    contributions.narrow(0, offset, n).copy_(out);
    for (std::int64_t r = 0; r < n; ++r) {
      rows_of[static_cast<std::size_t>(routed[static_cast<std::size_t>(r)])].push_back(offset + r);
    }
    offset += n;
  }
  STRATA_ASSERT(offset == tokens * k, "MoE routed {} rows for {} tokens x top-{}", offset, tokens,
                k);

  Tensor result;
  std::vector<std::int64_t> rows(static_cast<std::size_t>(tokens));
  for (std::int64_t j = 0; j < k; ++j) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      rows[static_cast<std::size_t>(t)] =
          rows_of[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)];
    }
    const Tensor part = ops::embedding(Tensor::from_vector(rows).to(device), contributions);
    result = j == 0 ? part : ops::add(result, part);
  }
  if (tp_.active()) {
    // Each rank's experts computed their part of the intermediate size: the weighted sum of the
    // partial outputs is linear, so one all-reduce per block gives the whole (every rank routed
    // the same tokens: its input is the same everywhere).
    result = result.contiguous();
    detail::forward_communicator(tp_, who.c_str()).all_reduce_sum(result);
  }
  if (shared_expert_) {
    const Tensor shared = detail::on_device_of(call(*shared_expert_, flat), flat);
    const Tensor gate =
        sigmoid_column(detail::on_device_of(call(*shared_expert_gate_, flat), flat));
    result = ops::add(result, ops::mul(gate, shared));
  }
  return result.view(x.shape());
}

}  // namespace strata::models

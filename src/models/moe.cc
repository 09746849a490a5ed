#include "strata/models/moe.h"

#include <vector>

#include "models/attention.h"
#include "models/expert_routing.h"
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
    : MoeBlock(c.class_name("SparseMoeBlock"), c.num_experts, c.num_experts_per_tok, c.activation,
               c.architecture == Architecture::Mixtral),
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
  const auto start = std::chrono::steady_clock::now();
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t tokens = x.size(0) * x.size(1), hidden = x.size(2), k = top_k();
  const Tensor flat = x.reshape({tokens, hidden});

  // Softmax over every expert in float32, then the top-k (renormalised with norm_topk_prob).
  const Tensor logits = call(*gate_, flat);
  const Tensor probs = ops::softmax(ops::cast(logits, DType::Float32), -1);
  auto [top_values, top_indices] = ops::topk(probs, k, -1);
  // One wait for the GPU: the weights, then the indices (and the input, for cpu experts).
  const std::vector<Tensor> host = read_to_host({top_values, top_indices}, flat);
  const detail::ExpertRouting routing =
      detail::route_tokens(host[1], host[0], num_experts(), norm_topk_prob_, who);
  routed_since(start);
  // transformers v5 routers round the weights to the hidden dtype; Mixtral keeps float32.
  const DType weight_dtype = round_weights_ ? x.dtype() : DType::Float32;
  // The shared expert is queued before the routed ones: the GPU computes it while the cpu
  // computes the offloaded experts (after the routing's wait, which it would otherwise delay).
  Tensor shared_part;
  if (shared_expert_) {
    const Tensor shared = detail::on_device_of(call(*shared_expert_, flat), flat);
    const Tensor gate =
        sigmoid_column(detail::on_device_of(call(*shared_expert_gate_, flat), flat));
    shared_part = ops::mul(gate, shared);
  }
  Tensor result = run_experts(flat, routing, weight_dtype);
  if (tp_.active()) {
    // Each rank's experts computed their part of the intermediate size: the weighted sum of the
    // partial outputs is linear, so one all-reduce per block gives the whole (every rank routed
    // the same tokens: its input is the same everywhere).
    result = result.contiguous();
    detail::forward_communicator(tp_, who.c_str()).all_reduce_sum(result);
  }
  if (shared_part.defined()) result = ops::add(result, shared_part);
  return result.view(x.shape());
}

}  // namespace strata::models

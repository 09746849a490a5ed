// Qwen2-MoE / Qwen3-MoE: config keys (decoder_sparse_step, mlp_only_layers, norm_topk_prob, the
// shared expert), the module tree with transformers' names, and the sparse block against a naive
// per-token implementation in double precision (routing, renormalisation, shared expert gate).

#include "strata/models/moe.h"

#include <cmath>
#include <numeric>
#include <set>

#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/nn/tensor_placement.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::TransformerConfig;

const std::string kQwenSizes = R"("hidden_size": 16, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 24, "vocab_size": 32,
    "moe_intermediate_size": 8, "num_experts": 6, "num_experts_per_tok": 2)";

std::string qwen2_moe(const std::string& extra) {
  return R"({"model_type": "qwen2_moe", "num_hidden_layers": 4,
      "shared_expert_intermediate_size": 12, )" +
         kQwenSizes + extra + "}";
}
std::string qwen3_moe(const std::string& extra) {
  return R"({"model_type": "qwen3_moe", "num_hidden_layers": 4, "head_dim": 8, )" + kQwenSizes +
         extra + "}";
}

io::ModelConfig model_config(const std::string& json) {
  return io::parse_model_config(json, "test/config.json");
}
TransformerConfig parse(const std::string& json) {
  return models::parse_transformer_config(model_config(json));
}

TEST(MoeConfig, Qwen2MoeKeys) {
  const TransformerConfig c = parse(qwen2_moe(R"(, "mlp_only_layers": [1])"));
  EXPECT_EQ(c.architecture, Architecture::Qwen2Moe);
  EXPECT_EQ(c.num_experts, 6);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_intermediate_size, 8);
  EXPECT_EQ(c.shared_expert_intermediate_size, 12);
  EXPECT_FALSE(c.norm_topk_prob);  // Qwen2MoeConfig's default
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.sparse_layers, (std::vector<bool>{true, false, true, true}));
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"Qwen2MoeDecoderLayer"}));
}

TEST(MoeConfig, Qwen3MoeSparseStepAndNorm) {
  const TransformerConfig c = parse(qwen3_moe(R"(, "decoder_sparse_step": 2, "norm_topk_prob": true,
                          "mlp_only_layers": [3])"));
  EXPECT_EQ(c.architecture, Architecture::Qwen3Moe);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.shared_expert_intermediate_size, 0);
  EXPECT_EQ(c.head_dim, 8);
  // (layer + 1) % step == 0 and not listed in mlp_only_layers.
  EXPECT_EQ(c.sparse_layers, (std::vector<bool>{false, true, false, false}));
}

TEST(MoeConfig, Qwen3MoeHeadDimDefaultsToHiddenOverHeads) {
  // Unlike Qwen3Config (128), Qwen3MoeConfig has no head_dim default of its own.
  const std::string json =
      R"({"model_type": "qwen3_moe", "num_hidden_layers": 1, )" + kQwenSizes + "}";
  EXPECT_EQ(parse(json).head_dim, 4);
}

TEST(MoeConfig, MixtralKeepsEveryLayerSparse) {
  const TransformerConfig c = parse(R"({"model_type": "mixtral", "hidden_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 24, "vocab_size": 32, "num_local_experts": 4,
      "num_experts_per_tok": 2})");
  EXPECT_EQ(c.sparse_layers, (std::vector<bool>{true, true}));
  EXPECT_EQ(c.moe_intermediate_size, 24);
  EXPECT_TRUE(c.norm_topk_prob);
}

TEST(MoeConfig, Errors) {
  const std::string missing = R"({"model_type": "qwen3_moe", "num_hidden_layers": 1,
      "hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 24, "vocab_size": 32, "num_experts": 4, "num_experts_per_tok": 2})";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { parse(missing); },
                                             {"moe_intermediate_size", "test/config.json"}));
  const std::string no_shared =
      R"({"model_type": "qwen2_moe", "num_hidden_layers": 1, )" + kQwenSizes + "}";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { parse(no_shared); },
                                             {"shared_expert_intermediate_size"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse(qwen3_moe(R"(, "decoder_sparse_step": 0)")); }, {"decoder_sparse_step", "0"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse(qwen3_moe(R"(, "mlp_only_layers": "all")")); }, {"mlp_only_layers"}));
  const std::string too_many = R"({"model_type": "qwen3_moe", "num_hidden_layers": 1,
      "hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 24, "vocab_size": 32, "moe_intermediate_size": 8, "num_experts": 2,
      "num_experts_per_tok": 3})";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { parse(too_many); },
                                             {"num_experts_per_tok 3", "num_experts 2"}));
}

// A parameter anywhere below `module`, by dotted name.
Tensor param(const nn::Module& module, const std::string& name) {
  for (const auto& [n, t] : module.named_parameters()) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no parameter " << name;
  return Tensor();
}

TEST(MoeModuleTree, Qwen2MoeNamesAndClasses) {
  auto model = models::build_causal_lm(model_config(qwen2_moe(R"(, "mlp_only_layers": [1])")),
                                       DType::Float32);
  std::map<std::string, std::string> classes;
  for (const auto& [name, module] : model->named_modules()) classes[name] = module->class_name();
  EXPECT_EQ(classes["model.layers.0.mlp"], "Qwen2MoeSparseMoeBlock");
  EXPECT_EQ(classes["model.layers.0.mlp.experts.5"], "Qwen2MoeMLP");
  EXPECT_EQ(classes["model.layers.0.mlp.shared_expert"], "Qwen2MoeMLP");
  EXPECT_EQ(classes["model.layers.1.mlp"], "Qwen2MoeMLP");  // mlp_only_layers
  EXPECT_EQ(classes["model.layers.0"], "Qwen2MoeDecoderLayer");
  std::vector<std::string> layer0;
  for (const auto& [name, t] : model->named_parameters()) {
    if (name.starts_with("model.layers.0.mlp.")) layer0.push_back(name.substr(19));
  }
  // transformers' registration order: gate, experts, shared_expert, shared_expert_gate.
  ASSERT_EQ(layer0.size(), 1u + 6 * 3 + 3 + 1);
  EXPECT_EQ(layer0.front(), "gate.weight");
  EXPECT_EQ(layer0[1], "experts.0.gate_proj.weight");
  EXPECT_EQ(layer0[2], "experts.0.up_proj.weight");
  EXPECT_EQ(layer0[3], "experts.0.down_proj.weight");
  EXPECT_EQ(layer0[19], "shared_expert.gate_proj.weight");
  EXPECT_EQ(layer0.back(), "shared_expert_gate.weight");
  EXPECT_EQ(param(*model, "model.layers.0.mlp.experts.2.down_proj.weight").shape(), (Shape{16, 8}));
  EXPECT_EQ(param(*model, "model.layers.1.mlp.gate_proj.weight").shape(), (Shape{24, 16}));
  EXPECT_EQ(param(*model, "model.layers.0.mlp.shared_expert_gate.weight").shape(), (Shape{1, 16}));
  EXPECT_EQ(param(*model, "model.layers.0.self_attn.q_proj.bias").shape(), (Shape{16}));
}

// ---- the sparse block against a naive implementation -----------------------------------------

using Matrix = std::vector<double>;  // row-major [rows, cols]

Matrix values(const Tensor& t) { return t.to(Device::cpu()).to_doubles(); }

// y = W x for W [out, in].
std::vector<double> matvec(const Matrix& w, const std::vector<double>& x, std::size_t out) {
  std::vector<double> y(out, 0.0);
  const std::size_t in = x.size();
  for (std::size_t o = 0; o < out; ++o) {
    for (std::size_t i = 0; i < in; ++i) y[o] += w[o * in + i] * x[i];
  }
  return y;
}

std::vector<double> naive_mlp(nn::Module& block, const std::string& prefix,
                              const std::vector<double>& x, std::size_t inter) {
  const auto gate = matvec(values(param(block, prefix + ".gate_proj.weight")), x, inter);
  const auto up = matvec(values(param(block, prefix + ".up_proj.weight")), x, inter);
  std::vector<double> h(inter);
  for (std::size_t i = 0; i < inter; ++i) h[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return matvec(values(param(block, prefix + ".down_proj.weight")), h, x.size());
}

// The experts a token selects (top-k of the router's softmax, ties to the lower index) and
// their probabilities over all experts.
struct NaiveRouting {
  std::vector<std::size_t> order;
  std::vector<double> probs;
};

NaiveRouting naive_route(nn::Module& block, const TransformerConfig& c,
                         const std::vector<double>& x) {
  const auto experts = static_cast<std::size_t>(c.num_experts);
  const auto logits = matvec(values(param(block, "gate.weight")), x, experts);
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(experts);
  double sum = 0.0;
  for (std::size_t e = 0; e < experts; ++e) sum += probs[e] = std::exp(logits[e] - top);
  for (double& p : probs) p /= sum;
  std::vector<std::size_t> order(experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return probs[a] > probs[b]; });
  order.resize(static_cast<std::size_t>(c.num_experts_per_tok));
  return {order, probs};
}

// One token through a Qwen MoE block, as modeling_qwen2_moe.py computes it.
std::vector<double> naive_moe(nn::Module& block, const TransformerConfig& c,
                              const std::vector<double>& x) {
  const auto [order, probs] = naive_route(block, c, x);
  double kept = 0.0;
  for (std::size_t e : order) kept += probs[e];
  std::vector<double> out(x.size(), 0.0);
  for (std::size_t e : order) {
    const double w = c.norm_topk_prob ? probs[e] / kept : probs[e];
    const auto y = naive_mlp(block, fmt::format("experts.{}", e), x,
                             static_cast<std::size_t>(c.moe_intermediate_size));
    for (std::size_t i = 0; i < x.size(); ++i) out[i] += w * y[i];
  }
  if (c.shared_expert_intermediate_size > 0) {
    const auto y = naive_mlp(block, "shared_expert", x,
                             static_cast<std::size_t>(c.shared_expert_intermediate_size));
    const double g = matvec(values(param(block, "shared_expert_gate.weight")), x, 1)[0];
    const double s = 1.0 / (1.0 + std::exp(-g));
    for (std::size_t i = 0; i < x.size(); ++i) out[i] += s * y[i];
  }
  return out;
}

struct NaiveCase {
  std::string name;
  std::string json;
  friend void PrintTo(const NaiveCase& c, std::ostream* os) { *os << c.name; }
};

class MoeBlockTest : public ::testing::TestWithParam<NaiveCase> {};

TEST_P(MoeBlockTest, MatchesNaivePerTokenImplementation) {
  const io::ModelConfig config = model_config(GetParam().json);
  const TransformerConfig c = models::parse_transformer_config(config);
  auto model = models::build_causal_lm(config, DType::Float32);
  nn::Module& block = model->get_submodule("model.layers.0.mlp");
  std::uint64_t seed = 11;
  for (const auto& [name, t] : block.named_parameters()) {
    // Router weights larger: peaked routing, no near ties at float32 rounding.
    const double scale = name == "gate.weight" ? 2.0 : 0.5;
    nn::set_module_tensor_to_device(
        block, name, Device::cpu(),
        random_tensor(t.shape(), DType::Float32, seed++, -scale, scale));
  }
  const std::int64_t batch = 2, seq = 5, hidden = c.hidden_size;
  const Tensor x = random_tensor({batch, seq, hidden}, DType::Float32, 99);
  const Tensor y = block(nn::Args({x})).tensor();
  ASSERT_EQ(y.shape(), x.shape());
  const std::vector<double> xs = values(x), ys = values(y);
  double worst = 0.0, scale = 0.0;
  for (std::int64_t t = 0; t < batch * seq; ++t) {
    const auto at = static_cast<std::size_t>(t * hidden);
    const std::vector<double> token(xs.begin() + at, xs.begin() + at + hidden);
    const auto want = naive_moe(block, c, token);
    for (std::size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(want[i] - ys[at + i]));
      scale = std::max(scale, std::abs(want[i]));
    }
  }
  EXPECT_LE(worst, 1e-5 * scale) << "scale " << scale;

  // The block counts each expert that received tokens once (distinct_experts), across forwards,
  // until its counters are reset.
  std::set<std::size_t> selected;
  for (std::int64_t t = 0; t < batch * seq; ++t) {
    const auto at = static_cast<std::size_t>(t * hidden);
    const auto routing =
        naive_route(block, c, std::vector<double>(xs.begin() + at, xs.begin() + at + hidden));
    selected.insert(routing.order.begin(), routing.order.end());
  }
  auto& moe = dynamic_cast<models::MoeBlock&>(block);
  EXPECT_EQ(moe.execution_stats().distinct_experts, static_cast<std::int64_t>(selected.size()));
  EXPECT_EQ(moe.execution_stats().blocks, 1);
  block(nn::Args({x.narrow(1, 0, 1)}));  // experts already counted
  EXPECT_EQ(moe.execution_stats().distinct_experts, static_cast<std::int64_t>(selected.size()));
  EXPECT_EQ(moe.execution_stats().block_steps, 2);
  moe.reset_execution_stats();
  EXPECT_EQ(moe.execution_stats().distinct_experts, 0);
  EXPECT_EQ(moe.execution_stats().blocks, 1);
  block(nn::Args({x.narrow(1, 0, 1)}));
  std::set<std::size_t> first;
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto at = static_cast<std::size_t>(b * seq * hidden);
    const auto routing =
        naive_route(block, c, std::vector<double>(xs.begin() + at, xs.begin() + at + hidden));
    first.insert(routing.order.begin(), routing.order.end());
  }
  EXPECT_EQ(moe.execution_stats().distinct_experts, static_cast<std::int64_t>(first.size()));
  const models::ExpertExecutionStats total = models::expert_execution_stats(*model);
  EXPECT_EQ(total.blocks, static_cast<std::int64_t>(models::moe_blocks(*model).size()));
}

INSTANTIATE_TEST_SUITE_P(
    Qwen, MoeBlockTest,
    ::testing::Values(NaiveCase{"qwen2_moe_shared_expert", qwen2_moe("")},
                      NaiveCase{"qwen2_moe_normalised", qwen2_moe(R"(, "norm_topk_prob": true)")},
                      NaiveCase{"qwen3_moe", qwen3_moe(R"(, "norm_topk_prob": true)")},
                      NaiveCase{"qwen3_moe_unnormalised", qwen3_moe("")}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata::testing

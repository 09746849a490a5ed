// DeepSeek-V2 / V3 beyond the parameterised parity tests (parity_test.cc and the others run the
// deepseek_v2, deepseek_v3 and deepseek_v3_fp8 fixtures): config keys and their errors, the
// routing against cases worked by hand, the compressed KV cache, and the sizes of the published
// DeepSeek-V3 (671B) config against a count computed from the config by
// tests/fixtures/tools/deepseek_v3_sizes.py.

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/nn/tensor_placement.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::DeepseekConfig;
using models::TransformerConfig;

// A tiny DeepSeek-V3 config; `extra` is appended inside the object.
std::string v3(const std::string& extra = "") {
  return R"({"model_type": "deepseek_v3", "hidden_size": 32, "num_hidden_layers": 3,
      "num_attention_heads": 4, "intermediate_size": 56, "vocab_size": 96,
      "moe_intermediate_size": 24, "n_routed_experts": 8, "num_experts_per_tok": 2,
      "kv_lora_rank": 16, "q_lora_rank": 24, "qk_nope_head_dim": 12, "qk_rope_head_dim": 8,
      "v_head_dim": 12, "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1)" +
         extra + "}";
}
std::string v2(const std::string& extra = "") {
  return R"({"model_type": "deepseek_v2", "hidden_size": 32, "num_hidden_layers": 2,
      "num_attention_heads": 4, "intermediate_size": 56, "vocab_size": 96,
      "moe_intermediate_size": 24, "n_routed_experts": 8, "num_experts_per_tok": 2,
      "kv_lora_rank": 16, "q_lora_rank": null, "qk_nope_head_dim": 12, "qk_rope_head_dim": 8,
      "v_head_dim": 12)" +
         extra + "}";
}
// `json` with `key` set to `value` (replacing it).
std::string with(const std::string& json, const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(json);
  j[key] = value;
  return j.dump();
}
TransformerConfig parse(const std::string& json) {
  return models::parse_transformer_config(io::parse_model_config(json, "test/config.json"));
}

TEST(DeepseekConfig, V3KeysAndDefaults) {
  const TransformerConfig c = parse(v3());
  ASSERT_TRUE(c.deepseek.has_value());
  const DeepseekConfig& d = *c.deepseek;
  EXPECT_EQ(c.architecture, Architecture::DeepseekV3);
  EXPECT_EQ(d.q_lora_rank, 24);
  EXPECT_EQ(c.head_dim, 20);  // qk_nope_head_dim + qk_rope_head_dim
  EXPECT_EQ(c.rope->dim, 8);  // only the rope part rotates
  EXPECT_EQ(d.topk_method, DeepseekConfig::TopkMethod::NoAuxTc);
  EXPECT_TRUE(d.rope_interleave);
  EXPECT_TRUE(c.norm_topk_prob);  // DeepseekV3Config's defaults
  EXPECT_DOUBLE_EQ(d.routed_scaling_factor, 2.5);
  EXPECT_EQ(d.n_shared_experts, 1);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.sparse_layers, (std::vector<bool>{false, true, true}));
  EXPECT_DOUBLE_EQ(d.softmax_scale, 1.0 / std::sqrt(20.0));  // default rope: no mscale
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"DeepseekV3DecoderLayer"}));
  // The compressed cache: kv_lora_rank + qk_rope_head_dim per layer and token.
  EXPECT_EQ(c.kv_cache_bytes_per_token(DType::BFloat16), 3u * (16 + 8) * 2);
}

TEST(DeepseekConfig, V2KeysAndDefaults) {
  const TransformerConfig c = parse(v2(R"(, "norm_topk_prob": true, "mlp_bias": true)"));
  const DeepseekConfig& d = *c.deepseek;
  EXPECT_EQ(c.architecture, Architecture::DeepseekV2);
  EXPECT_EQ(d.q_lora_rank, 0);  // null: q_proj
  EXPECT_EQ(d.topk_method, DeepseekConfig::TopkMethod::Greedy);
  EXPECT_FALSE(c.norm_topk_prob);  // DeepseekV2Moe never renormalises
  EXPECT_TRUE(c.mlp_bias);
  EXPECT_EQ(d.n_shared_experts, 2);  // DeepseekV2Config's defaults
  EXPECT_DOUBLE_EQ(d.routed_scaling_factor, 1.0);
  EXPECT_EQ(c.sparse_layers, (std::vector<bool>{true, true}));  // first_k_dense_replace 0
  // q_lora_rank absent (not null) takes the class default.
  const std::string absent = R"({"model_type": "deepseek_v2", "hidden_size": 32,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 56,
      "vocab_size": 96, "moe_intermediate_size": 24, "n_routed_experts": 8,
      "num_experts_per_tok": 2, "kv_lora_rank": 16, "qk_nope_head_dim": 12,
      "qk_rope_head_dim": 8, "v_head_dim": 12})";
  EXPECT_EQ(parse(absent).deepseek->q_lora_rank, 1536);
}

TEST(DeepseekConfig, YarnScalesTheSoftmaxByMscaleSquared) {
  const TransformerConfig c = parse(v3(R"(, "max_position_embeddings": 128,
      "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
      "original_max_position_embeddings": 32, "mscale": 1.0, "mscale_all_dim": 0.5})"));
  const double m = 0.1 * 0.5 * std::log(4.0) + 1.0;  // yarn_get_mscale(factor, mscale_all_dim)
  EXPECT_NEAR(c.deepseek->softmax_scale, m * m / std::sqrt(20.0), 1e-15);
  EXPECT_EQ(c.rope->type, "yarn");
}

TEST(DeepseekConfig, UnsupportedRoutingNamesTheKey) {
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(v3(R"(, "scoring_func": "softmax")")); },
                                          {"scoring_func", "softmax", "test/config.json"}));
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(v3(R"(, "topk_method": "greedy")")); },
                                          {"topk_method", "greedy"}));
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(v2(R"(, "topk_method": "noaux_tc")")); },
                                          {"topk_method", "noaux_tc"}));
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(v2(R"(, "scoring_func": "sigmoid")")); },
                                          {"scoring_func", "sigmoid"}));
  EXPECT_TRUE(throws_naming<NotSupported>([] { parse(v3(R"(, "moe_layer_freq": 2)")); },
                                          {"moe_layer_freq", "2"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        parse(v3(R"(, "quantization_config": {"quant_method": "awq", "bits": 4,
            "group_size": 128})"));
      },
      {"awq", "deepseek_v3"}));
}

TEST(DeepseekConfig, InconsistentSizesAreCheckpointErrors) {
  const std::string no_rank = R"({"model_type": "deepseek_v3", "hidden_size": 32,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 56,
      "vocab_size": 96, "moe_intermediate_size": 24, "n_routed_experts": 8,
      "num_experts_per_tok": 2, "qk_nope_head_dim": 12, "qk_rope_head_dim": 8,
      "v_head_dim": 12})";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { parse(no_rank); }, {"kv_lora_rank"}));
  EXPECT_TRUE(
      throws_naming<CheckpointError>([] { parse(with(v3(), "n_group", 3)); }, {"n_group", "3"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse(with(v3(), "topk_group", 5)); },
                                             {"topk_group", "5"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(v2(R"(, "topk_method": "group_limited_greedy")")); }, {"n_group"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse(v3(R"(, "num_key_value_heads": 2)")); },
                                             {"num_key_value_heads"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse(with(v3(), "qk_rope_head_dim", 7)); },
                                             {"qk_rope_head_dim", "7"}));
}

// The routing worked by hand (transformers' route_tokens_to_experts).
TEST(DeepseekRoute, V3BiasChoosesWeightsStayScores) {
  DeepseekConfig d;
  d.topk_method = DeepseekConfig::TopkMethod::NoAuxTc;
  d.n_group = 2;
  d.topk_group = 1;
  d.routed_scaling_factor = 2.0;
  // Equal logits: every sigmoid score is 0.5. The bias makes group 0 (experts 0, 1: 0.6 + 0.7)
  // beat group 1 (0.5 + 0.65), and expert 3's own choice (0.65) is masked with its group.
  const std::vector<float> logits(4, 0.0f), bias{0.1f, 0.2f, 0.0f, 0.15f};
  const models::DeepseekRouting r = models::deepseek_route(logits, 4, bias, 2, true, d);
  EXPECT_EQ(r.indices, (std::vector<std::int64_t>{1, 0}));
  // Weights are the scores (not the biased choices), renormalised, times the scaling factor.
  EXPECT_EQ(r.weights, (std::vector<float>{1.0f, 1.0f}));
  const models::DeepseekRouting raw = models::deepseek_route(logits, 4, bias, 2, false, d);
  EXPECT_EQ(raw.weights, (std::vector<float>{1.0f, 1.0f}));  // 0.5 x 2
}

TEST(DeepseekRoute, V3MaskedGroupsScoreZero) {
  DeepseekConfig d;
  d.n_group = 2;
  d.topk_group = 1;
  // Group 0 wins on its two best choices (0.9 + x), but its second expert's biased choice is
  // negative: masked_fill puts the other group's experts at 0.0, above it, as in transformers.
  const float big = 2.0f;
  const std::vector<float> logits{big, 0.0f, 0.0f, 0.0f};
  const std::vector<float> bias{0.0f, -0.6f, -0.45f, -0.45f};
  const models::DeepseekRouting r = models::deepseek_route(logits, 4, bias, 2, false, d);
  // choices: 0.881, -0.1, 0.05, 0.05: group 0 = 0.781, group 1 = 0.1 -> group 0 kept; masked
  // experts 2 and 3 are 0.0 > -0.1, so expert 2 (the lower index) is the second choice.
  EXPECT_EQ(r.indices, (std::vector<std::int64_t>{0, 2}));
  const float s0 = 1.0f / (1.0f + std::exp(-big));
  EXPECT_EQ(r.weights, (std::vector<float>{s0, 0.5f}));
}

TEST(DeepseekRoute, V2SoftmaxGreedyAndGroupLimited) {
  DeepseekConfig d;
  d.topk_method = DeepseekConfig::TopkMethod::Greedy;
  d.routed_scaling_factor = 1.5;
  const std::vector<float> logits{std::log(1.0f), std::log(4.0f), std::log(2.0f), std::log(3.0f)};
  const models::DeepseekRouting greedy = models::deepseek_route(logits, 4, {}, 2, false, d);
  EXPECT_EQ(greedy.indices, (std::vector<std::int64_t>{1, 3}));
  EXPECT_NEAR(greedy.weights[0], 0.4 * 1.5, 1e-6);
  EXPECT_NEAR(greedy.weights[1], 0.3 * 1.5, 1e-6);
  // Groups {0, 1} (max 0.4) and {2, 3} (max 0.3): one group kept, so 1 then 0.
  d.topk_method = DeepseekConfig::TopkMethod::GroupLimitedGreedy;
  d.n_group = 2;
  d.topk_group = 1;
  const models::DeepseekRouting limited = models::deepseek_route(logits, 4, {}, 2, false, d);
  EXPECT_EQ(limited.indices, (std::vector<std::int64_t>{1, 0}));
  EXPECT_NEAR(limited.weights[1], 0.1 * 1.5, 1e-6);
}

TEST(DeepseekRoute, BadArgumentsAreInvalid) {
  DeepseekConfig d;
  d.n_group = 2;
  d.topk_group = 1;
  const std::vector<float> logits(8, 0.0f);
  EXPECT_THROW(models::deepseek_route({1.0f, 2.0f, 3.0f}, 2, {}, 1, false, d), InvalidArgument);
  EXPECT_THROW(models::deepseek_route(logits, 4, {0.0f}, 2, false, d), InvalidArgument);
  EXPECT_THROW(models::deepseek_route(logits, 4, {}, 5, false, d), InvalidArgument);
  EXPECT_THROW(models::deepseek_route(logits, 4, {}, 3, false, d), InvalidArgument);  // 1 x 2 < 3
  d.n_group = 0;
  EXPECT_THROW(models::deepseek_route(logits, 4, {}, 2, false, d), InvalidArgument);
  d.topk_method = DeepseekConfig::TopkMethod::Greedy;  // groups unused
  EXPECT_EQ(models::deepseek_route(logits, 4, {}, 2, false, d).indices.size(), 4u);
}

// The cache holds the compressed latent and the rotated key part, not per-head keys and values.
TEST(DeepseekCache, HoldsTheCompressedLatent) {
  const ModelFixture f = load_model_fixture("deepseek_v3");
  auto model = load_fixture_model(f, Device::cpu());
  auto cache = model->make_cache(16);  // capacity 16 tokens per layer
  model->run(f.prompt_ids, cache);
  const DeepseekConfig& d = *model->config().deepseek;
  for (std::int64_t layer = 0; layer < cache->num_layers(); ++layer) {
    EXPECT_EQ(cache->keys(layer).shape(), (Shape{2, 1, 8, d.kv_lora_rank}));
    EXPECT_EQ(cache->values(layer).shape(), (Shape{2, 1, 8, d.qk_rope_head_dim}));
  }
  // The planner's figure per token, for 2 rows of 16 tokens.
  EXPECT_EQ(cache->allocated_bytes(),
            2u * 16u * model->config().kv_cache_bytes_per_token(DType::Float32));
}

// Latent heads wider than the fused attention kernels take (kv_lora_rank + qk_rope_head_dim >
// 256, as DeepSeek-V3's 576) decode through the composed attention: a random model's cached
// decode (absorbed, composed) equals its full forward (expanded, fused), also for a left-padded
// row against the row alone.
class DeepseekWideLatent : public ::testing::TestWithParam<Device> {};

TEST_P(DeepseekWideLatent, DecodesLikeTheFullForward) {
  const Device device = GetParam();
  if (!device_available(device)) GTEST_SKIP() << device << " is not available here";
  const TransformerConfig c = parse(with(with(v3(), "kv_lora_rank", 256), "num_hidden_layers", 2));
  auto model = models::build_causal_lm(c, DType::Float32);
  std::mt19937 gen(17);
  for (const auto& [name, p] : model->named_parameters()) {
    const bool norm = name.find("norm") != std::string::npos;
    std::normal_distribution<float> dist(norm ? 1.0f : 0.0f, norm ? 0.1f : 0.15f);
    std::vector<float> values(static_cast<std::size_t>(p.numel()));
    for (float& v : values) v = dist(gen);
    nn::set_module_tensor_to_device(*model, name, device, Tensor::from_vector(values, p.shape()));
  }
  model->to(device);  // the rotary buffers
  const std::int64_t len = 10, prompt = 6;
  std::vector<std::int64_t> ids(2 * len);
  for (std::size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<std::int64_t>((i * 37 + 5) % 96);
  const Tensor sequence = Tensor::from_vector(ids, {2, len}).to(device);
  const Tensor full = model->run(sequence).logits;
  const double tolerance = kFloat32Tolerance * max_abs(full);
  auto cache = model->make_cache();
  EXPECT_LE(max_abs_diff(model->run(sequence.narrow(1, 0, prompt), cache).logits,
                         full.narrow(1, 0, prompt)),
            tolerance);
  for (std::int64_t at = prompt; at < len; ++at) {
    EXPECT_LE(
        max_abs_diff(model->run(sequence.narrow(1, at, 1), cache).logits, full.narrow(1, at, 1)),
        tolerance)
        << "position " << at;
  }
  // Row 1 left-padded by 3 beside row 0: its greedy continuation equals its own.
  Tensor padded = sequence.narrow(1, 0, prompt).clone();
  Tensor mask = Tensor::ones({2, prompt}, DType::Int64);
  padded = padded.to(Device::cpu());
  padded.select(0, 1)
      .narrow(0, 3, prompt - 3)
      .copy_(sequence.select(0, 1).narrow(0, 0, prompt - 3));
  mask.select(0, 1).narrow(0, 0, 3).copy_(Tensor::zeros({3}, DType::Int64));
  models::GenerationOptions options;
  options.max_new_tokens = 6;
  options.input_device = device;
  options.attention_mask = mask;
  const auto batch = models::generate_greedy(*model, padded, options);
  options.attention_mask.reset();
  const auto alone =
      models::generate_greedy(*model, sequence.narrow(0, 1, 1).narrow(1, 0, prompt - 3), options);
  EXPECT_EQ(batch.tokens.narrow(0, 1, 1).to_vector<std::int64_t>(),
            alone.tokens.to_vector<std::int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Devices, DeepseekWideLatent,
                         ::testing::Values(Device::cpu(), Device::cuda(0)),
                         [](const ::testing::TestParamInfo<Device>& info) {
                           return std::string(info.param.is_cuda() ? "cuda0" : "cpu");
                         });

// The fused 3-D experts of newer exports (transformers v5's in-memory names: experts.gate_up_proj
// [E, 2I, H], gate rows then up rows, and experts.down_proj [E, H, I]) read as the per-expert
// modules: the deepseek_v3 fixture rewritten that way gives transformers' logits.
TEST(DeepseekCheckpoint, FusedExpertsReadAsPerExpertModules) {
  const ModelFixture f = load_model_fixture("deepseek_v3");
  const auto file = io::SafetensorsFile::open(model_fixture_dir(f.name) / "model.safetensors");
  const TransformerConfig c = models::parse_transformer_config(f.config);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& entry : file->entries()) {
    if (entry.name.find(".mlp.experts.") == std::string::npos) {
      tensors.emplace_back(entry.name, file->tensor(entry.name).clone());
    }
  }
  const std::int64_t E = c.num_experts, I = c.moe_intermediate_size, H = c.hidden_size;
  int fused_layers = 0;
  for (std::int64_t layer = 0; layer < c.num_layers; ++layer) {
    if (!c.is_sparse_layer(layer)) continue;
    const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.experts";
    Tensor gate_up = Tensor::empty({E, 2 * I, H}, DType::Float32);
    Tensor down = Tensor::empty({E, H, I}, DType::Float32);
    for (std::int64_t e = 0; e < E; ++e) {
      const std::string expert = prefix + "." + std::to_string(e);
      gate_up.select(0, e).narrow(0, 0, I).copy_(file->tensor(expert + ".gate_proj.weight"));
      gate_up.select(0, e).narrow(0, I, I).copy_(file->tensor(expert + ".up_proj.weight"));
      down.select(0, e).copy_(file->tensor(expert + ".down_proj.weight"));
    }
    tensors.emplace_back(prefix + ".gate_up_proj", gate_up);
    tensors.emplace_back(prefix + ".down_proj", down);
    ++fused_layers;
  }
  ASSERT_EQ(fused_layers, 2);
  const TempDir dir;
  io::save_safetensors(dir / "model.safetensors", tensors);
  auto model = models::build_causal_lm(f.config);
  load_safetensors_into(*model, dir / "model.safetensors", Device::cpu());
  expect_float32_logits_match(f, model->run(f.prompt_ids).logits);
}

TEST(DeepseekTree, AttentionModulesInTransformersOrder) {
  const ModelFixture v3_fixture = load_model_fixture("deepseek_v3");
  auto model = models::build_causal_lm(v3_fixture.config);
  std::vector<std::string> names;
  for (const auto& [name, child] :
       model->get_submodule("model.layers.0.self_attn").named_children()) {
    names.push_back(name);
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa",
                                      "kv_a_layernorm", "kv_b_proj", "o_proj"}));
  names.clear();
  for (const auto& [name, child] : model->get_submodule("model.layers.1.mlp").named_children()) {
    names.push_back(name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"experts", "gate", "shared_experts"}));
  const nn::Module& gate = model->get_submodule("model.layers.1.mlp.gate");
  EXPECT_EQ(gate.buffer("e_score_correction_bias").dtype(), DType::Float32);
  // A bfloat16 model keeps the correction bias in float32 through loading
  // (_keep_in_fp32_modules_strict): bfloat16 would round the sigmoid choices' bias.
  auto bf16 = load_fixture_model(v3_fixture, Device::cpu(), DType::BFloat16);
  EXPECT_EQ(
      bf16->get_submodule("model.layers.1.mlp.gate").buffer("e_score_correction_bias").dtype(),
      DType::Float32);
  EXPECT_EQ(bf16->get_submodule("model.layers.1.mlp.gate").parameter("weight").dtype(),
            DType::BFloat16);
  auto v2_model = models::build_causal_lm(load_model_fixture("deepseek_v2").config);
  EXPECT_TRUE(v2_model->get_submodule("model.layers.0.self_attn").has_child("q_proj"));
}

// The published DeepSeek-V3 config (deepseek-ai/DeepSeek-V3's config.json): the module tree's
// parameters add up to the count computed from the config by deepseek_v3_sizes.py, dense (the
// count of transformers' DeepseekV3ForCausalLM) and as the fp8 checkpoint stores them.
std::int64_t parameter_bytes(nn::Module& model) {
  std::int64_t bytes = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    bytes += p.numel() * static_cast<std::int64_t>(dtype_size(p.dtype()));
  }
  return bytes;
}

TEST(DeepseekPublished, V3SizesMatchTheCountFromTheConfig) {
  const auto dir = model_fixture_dir("deepseek_v3_671b_config");
  const nlohmann::json expected = nlohmann::json::parse(std::ifstream(dir / "param_count.json"));
  TransformerConfig c = models::parse_transformer_config(io::read_model_config(dir));
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_EQ(c.kv_cache_bytes_per_token(DType::BFloat16),
            expected.at("kv_cache_bytes_per_token_bf16").get<std::uint64_t>());
  EXPECT_EQ(c.rope->type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope->factor, 40.0);
  {
    auto guard = nn::init_empty_weights();
    auto fp8 = models::build_causal_lm(c, DType::BFloat16);
    EXPECT_EQ(parameter_bytes(*fp8), expected.at("parameter_bytes_fp8").get<std::int64_t>());
  }
  c.quantization.reset();
  auto guard = nn::init_empty_weights();
  auto dense = models::build_causal_lm(c, DType::BFloat16);
  std::int64_t count = 0;
  for (const auto& [name, p] : dense->named_parameters()) count += p.numel();
  EXPECT_EQ(count, expected.at("parameter_count").get<std::int64_t>());
  // transformers 5.17's own count of DeepseekV3ForCausalLM built on the meta device (device call
  // 1 of session 6 ran the script with --transformers) and its no-split class.
  ASSERT_TRUE(expected.contains("transformers_parameter_count"));
  EXPECT_EQ(count, expected.at("transformers_parameter_count").get<std::int64_t>());
  EXPECT_EQ(c.no_split_module_classes(),
            expected.at("transformers_no_split_modules").get<std::vector<std::string>>());
}

}  // namespace
}  // namespace strata::testing

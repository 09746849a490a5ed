// Gemma 2 / Gemma 3 text config.json -> TransformerConfig on the published configs (the values a
// test expects are those files' and, for absent keys, transformers' Gemma2Config /
// Gemma3TextConfig defaults), both rope spellings, the NotSupported keys, and the plan sizes:
// Strata's parameter bytes of the published configs against transformers' own count recorded in
// param_bytes.json (tests/fixtures/tools/record_gemma_fixtures.py) and against a count written
// out here from the architecture.

#include <fstream>
#include <nlohmann/json.hpp>

#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/placement/module_sizes.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::TransformerConfig;

TransformerConfig parse(const std::string& json) {
  return models::parse_transformer_config(io::parse_model_config(json, "test/config.json"));
}
TransformerConfig published(const std::string& name) {
  return models::parse_transformer_config(io::read_model_config(model_fixture_dir(name)));
}

TEST(GemmaConfig, Gemma2_9b) {
  const TransformerConfig c = published("gemma2_9b_config");
  EXPECT_EQ(c.architecture, Architecture::Gemma2);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.num_layers, 42);
  EXPECT_EQ(c.num_heads, 16);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 256000);
  EXPECT_EQ(c.activation, models::Activation::GeluTanh);
  EXPECT_TRUE(c.tie_word_embeddings);  // Gemma2Config's default
  EXPECT_EQ(c.query_pre_attn_scalar, 256.0);
  EXPECT_EQ(c.attn_logit_softcapping, 50.0);
  EXPECT_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_FALSE(c.sliding_rope.has_value());
  EXPECT_EQ(c.rope->theta, 10000.0);
  // Gemma2Config: sliding unless (i + 1) is even.
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    EXPECT_EQ(c.sliding_windows[i], i % 2 == 0 ? 4096 : 0) << i;
  }
  EXPECT_EQ(c.no_split_module_classes(), std::vector<std::string>{"Gemma2DecoderLayer"});
}

TEST(GemmaConfig, Gemma3_27bText) {
  const TransformerConfig c = published("gemma3_27b_text_config");
  EXPECT_EQ(c.architecture, Architecture::Gemma3Text);
  EXPECT_EQ(c.vocab_size, 262208);  // absent from the file: Gemma3TextConfig's default
  EXPECT_EQ(c.num_layers, 62);
  EXPECT_EQ(c.num_kv_heads, 16);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.query_pre_attn_scalar, 168.0);
  EXPECT_FALSE(c.attn_logit_softcapping.has_value());
  EXPECT_FALSE(c.final_logit_softcapping.has_value());
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  // rope_scaling belongs to the full-attention layers; the sliding ones use the local base.
  EXPECT_EQ(c.rope->type, "linear");
  EXPECT_EQ(c.rope->factor, 8.0);
  EXPECT_EQ(c.rope->theta, 1e6);
  ASSERT_TRUE(c.sliding_rope.has_value());
  EXPECT_EQ(c.sliding_rope->type, "default");
  EXPECT_EQ(c.sliding_rope->theta, 1e4);
  // sliding_window_pattern 6: every sixth layer is global.
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    const bool global = (i + 1) % 6 == 0;
    EXPECT_EQ(c.sliding_windows[i], global ? 0 : 1024) << i;
    EXPECT_EQ(c.sliding_layers[i], !global) << i;
  }
  EXPECT_EQ(c.no_split_module_classes().front(), "Gemma3DecoderLayer");
}

const std::string kGemma3Sizes = R"("model_type": "gemma3_text", "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 8, "vocab_size": 64)";

TEST(GemmaConfig, Gemma3RopeParametersPerLayerType) {
  const TransformerConfig c = parse("{" + kGemma3Sizes + R"(, "sliding_window": null,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
      "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0},
        "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 500000.0,
                           "original_max_position_embeddings": 1024}}})");
  EXPECT_EQ(c.rope->type, "yarn");
  EXPECT_EQ(c.rope->theta, 500000.0);
  EXPECT_EQ(c.rope->original_max_position_embeddings, 1024);
  EXPECT_EQ(c.sliding_rope->theta, 20000.0);
  // sliding_window null: the sliding layers attend to everything but keep their rope.
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 0, 0}));
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, false, true}));
  // Legacy spelling: rope_theta + rope_local_base_freq, soft-caps given.
  const TransformerConfig legacy = parse("{" + kGemma3Sizes + R"(, "rope_theta": 40000.0,
      "rope_local_base_freq": 300.0, "sliding_window_pattern": 3, "sliding_window": 7,
      "attn_logit_softcapping": 20.0, "final_logit_softcapping": null})");
  EXPECT_EQ(legacy.rope->theta, 40000.0);
  EXPECT_EQ(legacy.rope->type, "default");
  EXPECT_EQ(legacy.sliding_rope->theta, 300.0);
  EXPECT_EQ(legacy.sliding_windows, (std::vector<std::int64_t>{7, 7, 0}));
  // transformers' Gemma 3 ignores attn_logit_softcapping (see config_gemma.cc).
  EXPECT_FALSE(legacy.attn_logit_softcapping.has_value());
  EXPECT_FALSE(legacy.final_logit_softcapping.has_value());
  // Gemma 2 with soft-caps null: none.
  const TransformerConfig g2 = parse(R"({"model_type": "gemma2", "num_hidden_layers": 2,
      "attn_logit_softcapping": null, "final_logit_softcapping": null})");
  EXPECT_FALSE(g2.attn_logit_softcapping.has_value());
  EXPECT_FALSE(g2.final_logit_softcapping.has_value());
  EXPECT_EQ(g2.num_kv_heads, 4);  // absent: Gemma2Config's 4, not num_attention_heads
}

TEST(GemmaConfig, UnsupportedOptionsNameTheKey) {
  const auto build = [](const std::string& extra) {
    return [extra] { parse("{" + kGemma3Sizes + ", " + extra + "}"); };
  };
  EXPECT_TRUE(throws_naming<NotSupported>(build(R"("use_bidirectional_attention": true)"),
                                          {"use_bidirectional_attention"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      build(R"("layer_types": ["sliding_attention", "chunked_attention", "full_attention"])"),
      {"layer_types[1]", "chunked_attention"}));
  EXPECT_TRUE(throws_naming<NotSupported>(build(R"("hidden_activation": "gelu_fast")"),
                                          {"hidden_activation", "gelu_fast"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      build(
          R"("rope_parameters": {"full_attention": {"rope_type": "sliding_ntk", "rope_theta": 1e4}})"),
      {"sliding_ntk"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      build(R"("quantization_config": {"quant_method": "fp8"})"), {"quantization_config"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(build(R"("attn_logit_softcapping": -1.0)"),
                                             {"attn_logit_softcapping"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(build(R"("query_pre_attn_scalar": 0)"),
                                             {"query_pre_attn_scalar"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(build(R"("layer_types": ["full_attention"])"),
                                             {"layer_types", "num_hidden_layers"}));
}

// ---- plan sizes -----------------------------------------------------------------------------

std::shared_ptr<models::CausalLM> meta_model(const std::string& name) {
  auto guard = nn::init_empty_weights();
  return models::build_causal_lm(io::read_model_config(model_fixture_dir(name)), DType::BFloat16);
}

std::int64_t parameter_bytes(models::CausalLM& model) {
  std::int64_t bytes = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    bytes += p.numel() * static_cast<std::int64_t>(dtype_size(p.dtype()));
  }
  return bytes;
}

// The parameters written out from modeling_gemma2/3.py: embedding (tied head), per layer q, k,
// v, o projections, the GeGLU's three, four norms (+ q/k norms in Gemma 3), the final norm.
std::int64_t architecture_parameters(const TransformerConfig& c) {
  const std::int64_t h = c.hidden_size, d = c.head_dim;
  const std::int64_t attention = 2 * h * c.num_heads * d + 2 * h * c.num_kv_heads * d;
  const std::int64_t layer =
      attention + 3 * h * c.intermediate_size + 4 * h + (c.qk_norm ? 2 * d : 0);
  return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_layers * layer + h;
}

class GemmaPlanSizes : public ::testing::TestWithParam<std::string> {};

TEST_P(GemmaPlanSizes, ParameterBytesMatchTheArchitecture) {
  auto model = meta_model(GetParam());
  EXPECT_EQ(parameter_bytes(*model), 2 * architecture_parameters(model->config()));
}

// transformers' own count on the meta device (recorded on the device machine).
TEST_P(GemmaPlanSizes, PlanSizesMatchTransformersCount) {
  const auto path = model_fixture_dir(GetParam()) / "param_bytes.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not recorded yet";
  const nlohmann::json recorded = nlohmann::json::parse(std::ifstream(path));
  auto model = meta_model(GetParam());
  EXPECT_EQ(model->class_name(), recorded.at("model_class").get<std::string>());
  EXPECT_EQ(parameter_bytes(*model), recorded.at("parameter_bytes_bf16").get<std::int64_t>());
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(*model, {DType::BFloat16, {}});
  // The plan counts buffers too (rotary frequencies, Gemma 3's embed_scale), as Accelerate does.
  if (recorded.contains("accelerate_module_sizes_bf16")) {
    const nlohmann::json& acc = recorded.at("accelerate_module_sizes_bf16");
    for (const auto& [name, bytes] : acc.items()) {
      EXPECT_EQ(sizes[name], bytes.get<std::int64_t>()) << "'" << name << "'";
    }
  }
  std::vector<std::string> no_split = model->no_split_module_classes();
  EXPECT_EQ(no_split, recorded.at("no_split_modules").get<std::vector<std::string>>());
}

INSTANTIATE_TEST_SUITE_P(Published, GemmaPlanSizes,
                         ::testing::Values("gemma2_9b_config", "gemma3_27b_text_config"));

}  // namespace
}  // namespace strata::testing

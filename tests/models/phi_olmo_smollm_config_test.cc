// Phi-3/4, OLMo 2 and SmolLM3 configs (issue 19): transformers' defaults and rules (Phi3Config,
// Olmo2Config, SmolLM3Config, modeling_rope_utils' longrope), read from hand-written files and the
// real published Phi-4-mini config, and one clear typed error per bad field. The expected values
// are worked out here from transformers' formulas (the comment beside each says how).

#include <cmath>
#include <filesystem>

#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/models/tensor_parallel.h"

namespace strata::testing {
namespace {

using models::Architecture;
using models::TransformerConfig;

TransformerConfig parse(const std::string& json) {
  return models::parse_transformer_config(io::parse_model_config(json, "test/config.json"));
}

// head_dim 16.
const std::string kSizes = R"("hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
    "vocab_size": 128)";

std::string phi3_json(const std::string& extra) {
  return R"({"model_type": "phi3", )" + kSizes + extra + "}";
}
TransformerConfig phi3(const std::string& extra) { return parse(phi3_json(extra)); }

TEST(Phi3Config, DefaultsAreTransformers) {
  const TransformerConfig c = phi3("");
  EXPECT_EQ(c.architecture, Architecture::Phi3);
  EXPECT_TRUE(c.fused_projections);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.post_norms);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope->type, "default");
  EXPECT_EQ(c.rope->dim, 16);
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"Phi3DecoderLayer"}));
  // Phi3Model: sliding_window applies to every layer.
  EXPECT_EQ(phi3(R"(, "sliding_window": 7)").sliding_windows,
            (std::vector<std::int64_t>{7, 7, 7, 7}));
}

TEST(Phi3Config, PartialRotaryRotatesPartOfEachHead) {
  // int(16 * 0.75) = 12 rotated dimensions, 6 frequencies; top level or inside rope_parameters.
  EXPECT_EQ(phi3(R"(, "partial_rotary_factor": 0.75)").rope->dim, 12);
  EXPECT_EQ(phi3(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                 "partial_rotary_factor": 0.5})")
                .rope->dim,
            8);
  // Both: the top level wins (standardize_rope_params copies it over the nested value).
  EXPECT_EQ(phi3(R"(, "partial_rotary_factor": 0.75, "rope_parameters": {"rope_type": "default",
                 "rope_theta": 10000.0, "partial_rotary_factor": 0.5})")
                .rope->dim,
            12);
  EXPECT_EQ(models::compute_rope_frequencies(*phi3(R"(, "partial_rotary_factor": 0.75)").rope)
                .inv_freq.size(),
            6u);
}

TEST(Phi3Config, RealPhi4MiniConfig) {
  const auto file = std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "cli" / "phi4_mini_instruct" /
                    "config.json";
  const TransformerConfig c = models::parse_transformer_config(io::read_model_config(file));
  EXPECT_EQ(c.architecture, Architecture::Phi3);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_TRUE(c.tie_word_embeddings);
  ASSERT_TRUE(c.rope.has_value());
  EXPECT_EQ(c.rope->type, "longrope");  // "type": "longrope" in rope_scaling
  EXPECT_EQ(c.rope->dim, 96);           // 128 * 0.75
  EXPECT_EQ(c.rope->long_factor.size(), 48u);
  EXPECT_EQ(c.rope->short_factor.size(), 48u);
  EXPECT_EQ(c.rope->original_max_position_embeddings, 4096);
  EXPECT_EQ(c.rope->factor, 32.0);  // 131072 / 4096
  // sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12)
  EXPECT_NEAR(*c.rope->attention_factor, std::sqrt(17.0 / 12.0), 1e-12);
  EXPECT_EQ(c.sliding_windows, std::vector<std::int64_t>(32, 262144));
  // Built on meta: the parameter count published with the model (3.8B; 3,836,021,760 from its
  // safetensors headers), the tied head counted once.
  auto guard = nn::init_empty_weights(/*include_buffers=*/true);
  auto model = models::build_causal_lm(c, DType::BFloat16);
  std::int64_t count = 0;
  for (const auto& [name, tensor] : model->named_parameters()) count += tensor.numel();
  EXPECT_EQ(count, 3'836'021'760);
  EXPECT_EQ(model->get_submodule("model.layers.0.self_attn.qkv_proj").parameter("weight").shape(),
            (Shape{5120, 3072}));
  EXPECT_EQ(model->get_submodule("model.layers.0.mlp.gate_up_proj").parameter("weight").shape(),
            (Shape{16384, 3072}));
}

TransformerConfig longrope(const std::string& rope_extra, const std::string& top_extra = "") {
  return phi3(R"(, "max_position_embeddings": 64)" + top_extra +
              R"(, "rope_scaling": {"type": "longrope",
                  "short_factor": [1, 1, 1, 1, 1, 1, 1, 1],
                  "long_factor": [2, 2, 2, 2, 2, 2, 2, 2])" +
              rope_extra + "}");
}

TEST(Phi3Config, LongropeLengthsAndFactors) {
  // Top-level original_max_position_embeddings; factor = 64 / 16 = 4;
  // attention factor sqrt(1 + ln 4 / ln 16) = sqrt(1.5).
  TransformerConfig c = longrope("", R"(, "original_max_position_embeddings": 16)");
  EXPECT_EQ(c.rope->original_max_position_embeddings, 16);
  EXPECT_EQ(c.rope->factor, 4.0);
  EXPECT_NEAR(*c.rope->attention_factor, std::sqrt(1.5), 1e-12);
  // The top-level key wins over the nested one; without either, Phi3Config's default 4096
  // (factor 64 / 4096 <= 1: attention factor 1).
  c = longrope(R"(, "original_max_position_embeddings": 8)",
               R"(, "original_max_position_embeddings": 16)");
  EXPECT_EQ(c.rope->original_max_position_embeddings, 16);
  c = longrope(R"(, "original_max_position_embeddings": 8)");
  EXPECT_EQ(c.rope->original_max_position_embeddings, 4096);
  EXPECT_EQ(*c.rope->attention_factor, 1.0);
  // An explicit factor and attention_factor are used as given.
  c = longrope(R"(, "factor": 2.0, "attention_factor": 1.25)",
               R"(, "original_max_position_embeddings": 16)");
  EXPECT_EQ(c.rope->factor, 2.0);
  EXPECT_EQ(*c.rope->attention_factor, 1.25);
  c = longrope(R"(, "factor": 2.0)", R"(, "original_max_position_embeddings": 16)");
  EXPECT_NEAR(*c.rope->attention_factor, std::sqrt(1.0 + std::log(2.0) / std::log(16.0)), 1e-12);
  // Phi3Config's old names.
  for (const char* old_name : {"su", "yarn"}) {
    const std::string json = phi3_json(std::string(R"(, "rope_scaling": {"type": ")") + old_name +
                                       R"(", "short_factor": [1, 1, 1, 1, 1, 1, 1, 1],
                                  "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]})");
    EXPECT_EQ(parse(json).rope->type, "longrope") << old_name;
  }
}

TEST(Phi3Config, LongropeErrorsNameTheField) {
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse(phi3_json(R"(, "rope_scaling": {"type": "longrope", "short_factor": [1, 1],
                   "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]})"));
      },
      {"'short_factor'", "8 numbers", "found 2", "test/config.json"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse(phi3_json(R"(, "partial_rotary_factor": 0.5, "rope_scaling": {"type": "longrope",
                   "short_factor": [1, 1, 1, 1], "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]})"));
      },
      {"'long_factor'", "4 numbers", "rotated dimensions 8"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] {
        parse(phi3_json(
            R"(, "rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1, 1, 1, 1,
                   0], "long_factor": [2, 2, 2, 2, 2, 2, 2, 2]})"));
      },
      {"'short_factor' holds 0", "positive"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse(phi3_json(R"(, "sliding_window": 0)")); },
                                             {"sliding_window is 0"}));
}

TEST(Olmo2Config, DefaultsAreTransformers) {
  const TransformerConfig c = parse(
      R"({"model_type": "olmo2", "attention_bias": true, "sliding_window": 4, )" + kSizes + "}");
  EXPECT_EQ(c.architecture, Architecture::Olmo2);
  EXPECT_TRUE(c.qk_norm && c.qk_norm_over_projection && c.post_norms);
  EXPECT_TRUE(c.qkv_bias && c.o_bias);
  EXPECT_FALSE(c.mlp_bias || c.fused_projections);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rope->theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  // Olmo2Model builds a causal mask only: a sliding_window key changes nothing.
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(c.no_split_module_classes(), (std::vector<std::string>{"Olmo2DecoderLayer"}));
}

std::string smollm3_json(const std::string& extra) {
  return R"({"model_type": "smollm3", )" + kSizes + extra + "}";
}
TransformerConfig smollm3(const std::string& extra) { return parse(smollm3_json(extra)); }

TEST(SmolLM3Config, DefaultsAndNoPELayers) {
  const TransformerConfig c = smollm3("");
  EXPECT_EQ(c.architecture, Architecture::SmolLM3);
  EXPECT_EQ(c.rope->theta, 2000000.0);  // SmolLM3Config.default_theta
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_TRUE(c.tie_word_embeddings);
  // no_rope_layer_interval 4: int((i + 1) % 4 != 0).
  EXPECT_EQ(c.rope_layers, (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(smollm3(R"(, "no_rope_layer_interval": 2)").rope_layers,
            (std::vector<bool>{true, false, true, false}));
  // An explicit list (longer than the layers is fine; transformers indexes it).
  EXPECT_EQ(smollm3(R"(, "no_rope_layers": [0, 1, 1, 0, 1])").rope_layers,
            (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ(c.sliding_windows, (std::vector<std::int64_t>{0, 0, 0, 0}));
  EXPECT_TRUE(smollm3(R"(, "attention_bias": true, "mlp_bias": true)").o_bias);
}

TEST(SmolLM3Config, SlidingWindowsFollowTheNoPELayers) {
  // use_sliding_window + sliding_window: the NoPE layers slide (SmolLM3Config's layer_types).
  EXPECT_EQ(smollm3(R"(, "use_sliding_window": true, "sliding_window": 6)").sliding_windows,
            (std::vector<std::int64_t>{0, 0, 0, 6}));
  EXPECT_EQ(smollm3(R"(, "use_sliding_window": false, "sliding_window": 6)").sliding_windows,
            (std::vector<std::int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(smollm3(R"(, "use_sliding_window": true, "sliding_window": null)").sliding_windows,
            (std::vector<std::int64_t>{0, 0, 0, 0}));
  // layer_types in the file win (the mask follows them).
  EXPECT_EQ(smollm3(R"(, "sliding_window": 5, "layer_types": ["sliding_attention",
                    "full_attention", "full_attention", "sliding_attention"])")
                .sliding_windows,
            (std::vector<std::int64_t>{5, 0, 0, 5}));
}

TEST(SmolLM3Config, ErrorsNameTheField) {
  EXPECT_TRUE(
      throws_naming<CheckpointError>([] { parse(smollm3_json(R"(, "no_rope_layers": [1, 1])")); },
                                     {"'no_rope_layers'", "4 layers"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(smollm3_json(R"(, "no_rope_layers": [1, "x", 1, 1])")); },
      {"'no_rope_layers'[1]", "0 or 1"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(smollm3_json(R"(, "no_rope_layer_interval": 0)")); },
      {"no_rope_layer_interval is 0"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        parse(smollm3_json(R"(, "layer_types": ["full_attention", "chunked_attention",
                      "full_attention", "full_attention"])"));
      },
      {"layer_types[1]", "chunked_attention"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(smollm3_json(R"(, "layer_types": ["full_attention"])")); }, {"'layer_types'"}));
}

TEST(Issue19Configs, TensorParallelismRefusesPhi3AndOlmo2ByName) {
  EXPECT_TRUE(throws_naming<NotSupported>([] { models::check_tensor_parallel(phi3(""), 2); },
                                          {"phi3", "qkv_proj", "--tensor-parallel 1"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] { models::check_tensor_parallel(parse(R"({"model_type": "olmo2", )" + kSizes + "}"), 2); },
      {"olmo2", "q/k norms"}));
  // SmolLM3 is not sharded yet either (only the families whose modules take the split are).
  EXPECT_TRUE(throws_naming<NotSupported>([] { models::check_tensor_parallel(smollm3(""), 2); },
                                          {"smollm3"}));
}

TEST(Rope, LongropeSwitchesToTheLongFactorsPastTheOriginalLength) {
  models::RopeConfig rope;
  rope.type = "longrope";
  rope.theta = 10000.0;
  rope.dim = 8;
  rope.original_max_position_embeddings = 16;
  rope.short_factor = {1.0, 1.5, 2.0, 3.0};
  rope.long_factor = {4.0, 5.0, 6.0, 7.0};
  rope.attention_factor = 1.25;
  // 1 / (ext_i * theta^(2i / dim)), evaluated here in double.
  const auto expect = [&](const std::vector<double>& ext, std::int64_t seq_len) {
    const models::RopeFrequencies f = models::compute_rope_frequencies(rope, seq_len);
    ASSERT_EQ(f.inv_freq.size(), 4u);
    EXPECT_EQ(f.attention_scaling, 1.25f);
    for (std::size_t i = 0; i < 4; ++i) {
      const double want = 1.0 / (ext[i] * std::pow(10000.0, 2.0 * static_cast<double>(i) / 8.0));
      EXPECT_NEAR(f.inv_freq[i], want, 1e-6 * want) << "seq_len " << seq_len << " [" << i << "]";
    }
  };
  expect(rope.short_factor, 0);
  expect(rope.short_factor, 16);
  expect(rope.long_factor, 17);
  // The rotary module: short up to 16 tokens, long beyond (transformers' per-call switch).
  models::RotaryEmbedding module("Phi3RotaryEmbedding", rope);
  EXPECT_EQ(module.frequencies(16).inv_freq, models::compute_rope_frequencies(rope, 0).inv_freq);
  EXPECT_EQ(module.frequencies(17).inv_freq, models::compute_rope_frequencies(rope, 17).inv_freq);
}

}  // namespace
}  // namespace strata::testing

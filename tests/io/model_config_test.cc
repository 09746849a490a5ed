// config.json reading: the typed fields models use, both transformers spellings, aliases, and
// refusal of malformed files.

#include "strata/io/model_config.h"

#include <gtest/gtest.h>

#include "io/io_testing.h"
#include "ops/throws_naming.h"

namespace strata::io {
namespace {

using strata::testing::throws_naming;

// Meta-Llama-3.1-8B's config.json (transformers 4.43 spelling).
constexpr const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

TEST(ModelConfig, ReadsALlama31Config) {
  const ModelConfig c = parse_model_config(kLlama31, "llama/config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architectures, std::vector<std::string>{"LlamaForCausalLM"});
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_FALSE(c.head_dim.has_value());
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rms_norm_eps, 1e-05);
  EXPECT_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->rope_type, "llama3");
  EXPECT_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_EQ(c.rope_scaling->low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.rope_scaling->beta_fast.has_value());
  EXPECT_NE(c.rope_scaling->raw_json.find("\"llama3\""), std::string::npos);
  EXPECT_EQ(c.tie_word_embeddings, false);
  EXPECT_EQ(c.torch_dtype, DType::BFloat16);
  // Untyped keys through the document.
  EXPECT_EQ(c.get_string("hidden_act"), "silu");
  EXPECT_EQ(c.get_int("bos_token_id"), 128000);
  EXPECT_EQ(c.get_bool("attention_bias"), false);
  EXPECT_EQ(c.get_json("eos_token_id"), "[128001,128008,128009]");
  EXPECT_FALSE(c.has("pad_token_id"));
  EXPECT_EQ(c.require_int("num_key_value_heads"), 8);
  EXPECT_EQ(c.require_double("rope_theta"), 500000.0);
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { c.require_int("num_experts"); },
                                             {"llama/config.json", "'num_experts'", "llama"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { c.get_int("hidden_act"); },
                                             {"'hidden_act'", "expected an integer"}));
}

TEST(ModelConfig, ReadsTransformersV5Spelling) {
  const ModelConfig c = parse_model_config(R"({
    "model_type": "qwen3", "hidden_size": 1024, "num_attention_heads": 16, "head_dim": 128,
    "dtype": "float16",
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                        "original_max_position_embeddings": 32768, "beta_fast": 32, "beta_slow": 1}
  })",
                                           "v5.json");
  EXPECT_EQ(c.torch_dtype, DType::Float16);
  EXPECT_EQ(c.rope_theta, 1000000.0);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 16);  // defaults to the attention heads
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->rope_type, "yarn");
  EXPECT_EQ(c.rope_scaling->beta_fast, 32.0);
  EXPECT_EQ(c.rope_scaling->beta_slow, 1.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 32768);

  const ModelConfig plain = parse_model_config(
      R"({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "dtype": "auto"})",
      "plain.json");
  EXPECT_FALSE(plain.rope_scaling.has_value());
  EXPECT_EQ(plain.rope_theta, 10000.0);
  EXPECT_FALSE(plain.torch_dtype.has_value());
  EXPECT_FALSE(plain.tie_word_embeddings.has_value());
}

TEST(ModelConfig, Gpt2NamesFillTheStandardFields) {
  const ModelConfig c = parse_model_config(R"({
    "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_inner": null,
    "n_layer": 12, "n_positions": 1024, "layer_norm_epsilon": 1e-05, "vocab_size": 50257,
    "rope_scaling": null
  })",
                                           "gpt2.json");
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.num_hidden_layers, 12);
  EXPECT_EQ(c.num_attention_heads, 12);
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_FALSE(c.intermediate_size.has_value());  // n_inner null: the model's default applies
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_EQ(c.get_double("layer_norm_epsilon"), 1e-05);
}

TEST(ModelConfig, LegacyTypeKeyAndLongropeFactors) {
  const ModelConfig c = parse_model_config(
      R"({"rope_scaling": {"type": "longrope", "short_factor": [1, 1.5], "long_factor": [2, 3]}})",
      "phi.json");
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->rope_type, "longrope");
  EXPECT_EQ(c.rope_scaling->short_factor, (std::vector<double>{1, 1.5}));
  EXPECT_EQ(c.rope_scaling->long_factor, (std::vector<double>{2, 3}));
}

TEST(ModelConfig, MalformedConfigsNameTheFileAndTheKey) {
  const std::string src = "bad/config.json";
  const auto refuses = [&](const char* text, std::initializer_list<std::string> words) {
    return throws_naming<CheckpointError>([&] { parse_model_config(text, src); }, words);
  };
  EXPECT_TRUE(refuses(R"({"hidden_size": "4096"})", {src, "'hidden_size'", "'4096'"}));
  EXPECT_TRUE(refuses(R"({"num_hidden_layers": -2})", {src, "'num_hidden_layers'", "-2"}));
  EXPECT_TRUE(refuses(R"({"hidden_size": 4096.5})", {src, "'hidden_size'", "integer"}));
  EXPECT_TRUE(refuses(R"({"rms_norm_eps": "small"})", {src, "'rms_norm_eps'", "number"}));
  EXPECT_TRUE(refuses(R"({"tie_word_embeddings": 1})", {src, "'tie_word_embeddings'"}));
  EXPECT_TRUE(refuses(R"({"torch_dtype": "float7"})", {src, "'float7'"}));
  EXPECT_TRUE(refuses(R"({"rope_scaling": [1]})", {src, "'rope_scaling'", "an object"}));
  EXPECT_TRUE(refuses(R"({"rope_scaling": {"rope_type": "linear", "factor": "x"}})",
                      {src, "'rope_scaling.factor'"}));
  EXPECT_TRUE(refuses(R"({"hidden_size": 1, "hidden_size": 2})", {src, "'hidden_size'", "twice"}));
  EXPECT_TRUE(refuses(R"({"hidden_size": )", {src, "not valid JSON"}));
  EXPECT_TRUE(refuses("[]", {src, "expected an object"}));
}

TEST(ModelConfig, ReadsAFileOrTheFolderHoldingIt) {
  strata::testing::TempDir dir;
  strata::testing::write_text(dir / "config.json", kLlama31);
  EXPECT_EQ(read_model_config(dir.path()).hidden_size, 4096);
  EXPECT_EQ(read_model_config(dir / "config.json").source, (dir / "config.json").string());
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { read_model_config(dir / "nope"); },
                                             {"nope", "does not exist"}));
}

}  // namespace
}  // namespace strata::io

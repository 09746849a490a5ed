// quantization_config -> QuantizationConfig: each producer's keys, the modules left dense, and
// NotSupported / CheckpointError naming the key and value for what Strata does not implement.

#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/models/quant_linear.h"

namespace strata::testing {
namespace {

using models::QuantizationConfig;

const std::string kLlama = R"("model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    "vocab_size": 96)";

models::TransformerConfig parse(const std::string& quant) {
  return models::parse_transformer_config(io::parse_model_config(
      "{" + kLlama + R"(, "quantization_config": )" + quant + "}", "q/config.json"));
}

QuantizationConfig quant(const std::string& json) {
  const auto c = parse(json);
  EXPECT_TRUE(c.quantization.has_value());
  return c.quantization.value_or(QuantizationConfig{});
}

const std::string kCompressed = R"({"quant_method": "compressed-tensors",
    "format": "pack-quantized", "quantization_status": "compressed",
    "ignore": ["lm_head", "re:.*mlp\\.down_proj$"],
    "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": null,
      "weights": {"num_bits": 4, "type": "int", "symmetric": false, "strategy": "group",
                  "group_size": 32, "actorder": null, "dynamic": false}}}})";

TEST(QuantizationConfig, AbsentOrNullMeansDense) {
  EXPECT_FALSE(
      models::parse_transformer_config(io::parse_model_config("{" + kLlama + "}", "q/config.json"))
          .quantization.has_value());
  EXPECT_FALSE(parse("null").quantization.has_value());
}

TEST(QuantizationConfig, Fp8BlocksAndPerTensor) {
  const QuantizationConfig q = quant(
      R"({"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
          "weight_block_size": [128, 64], "modules_to_not_convert": ["o_proj"]})");
  EXPECT_EQ(q.format, ops::QuantFormat::FP8);
  EXPECT_EQ(q.block_out, 128);
  EXPECT_EQ(q.block_in, 64);
  EXPECT_FALSE(q.converts("model.layers.0.self_attn.o_proj"));
  EXPECT_TRUE(q.converts("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(q.converts("lm_head"));
  const QuantizationConfig per_tensor = quant(R"({"quant_method": "fp8"})");
  EXPECT_EQ(per_tensor.block_out, 0);
}

TEST(QuantizationConfig, AwqAndGptqKeys) {
  const QuantizationConfig awq = quant(
      R"({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "GEMM",
          "zero_point": true, "modules_to_not_convert": null})");
  EXPECT_EQ(awq.format, ops::QuantFormat::AWQ);
  EXPECT_EQ(awq.group_size, 64);
  const QuantizationConfig gptq = quant(
      R"({"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": true,
          "sym": false})");
  EXPECT_EQ(gptq.format, ops::QuantFormat::GPTQ);
  EXPECT_EQ(gptq.bits, 8);
  EXPECT_EQ(gptq.group_size, 0);
  EXPECT_FALSE(gptq.symmetric);
}

TEST(QuantizationConfig, CompressedTensorsSchemeAndIgnore) {
  const QuantizationConfig q = quant(kCompressed);
  EXPECT_EQ(q.format, ops::QuantFormat::CompressedTensors);
  EXPECT_EQ(q.bits, 4);
  EXPECT_EQ(q.group_size, 32);
  EXPECT_FALSE(q.symmetric);
  EXPECT_FALSE(q.converts("model.layers.3.mlp.down_proj"));
  EXPECT_TRUE(q.converts("model.layers.3.mlp.up_proj"));
  EXPECT_TRUE(q.converts("model.layers.3.self_attn.q_proj"));
}

TEST(QuantizationConfig, BuilderCreatesQuantizedModulesWithPackedShapes) {
  auto guard = nn::init_empty_weights();
  const auto model = models::build_causal_lm(parse(kCompressed), DType::Float32);
  EXPECT_EQ(model->get_submodule("model.layers.0.self_attn.q_proj").class_name(),
            "CompressedLinear");
  EXPECT_EQ(model->get_submodule("model.layers.0.mlp.down_proj").class_name(), "Linear");
  EXPECT_EQ(model->get_submodule("lm_head").class_name(), "Linear");
  const nn::Module& q = model->get_submodule("model.layers.0.self_attn.q_proj");
  EXPECT_EQ(q.parameter("weight_packed").shape(), (Shape{64, 8}));
  EXPECT_EQ(q.parameter("weight_scale").shape(), (Shape{64, 2}));
  EXPECT_EQ(q.parameter("weight_zero_point").shape(), (Shape{8, 2}));
  EXPECT_EQ(q.parameter("weight_shape").shape(), (Shape{2}));
}

TEST(QuantizationConfig, UnsupportedValuesNameKeyAndValue) {
  const auto bad = [](const std::string& json, std::initializer_list<std::string> words) {
    return throws_naming<NotSupported>([&] { parse(json); }, words);
  };
  EXPECT_TRUE(bad(R"({"quant_method": "bitsandbytes"})",
                  {"q/config.json", "quantization_config.quant_method", "bitsandbytes"}));
  EXPECT_TRUE(bad(R"({"quant_method": "awq", "bits": 3})", {"quantization_config.bits", "3"}));
  EXPECT_TRUE(bad(R"({"quant_method": "awq", "group_size": 256})",
                  {"quantization_config.group_size", "256"}));
  EXPECT_TRUE(bad(R"({"quant_method": "awq", "version": "gemv"})",
                  {"quantization_config.version", "gemv"}));
  EXPECT_TRUE(bad(R"({"quant_method": "gptq", "bits": 2})", {"quantization_config.bits", "2"}));
  EXPECT_TRUE(bad(R"({"quant_method": "gptq", "bits": 4, "checkpoint_format": "gptq_v2"})",
                  {"quantization_config.checkpoint_format", "gptq_v2"}));
  EXPECT_TRUE(bad(R"({"quant_method": "fp8", "activation_scheme": "static"})",
                  {"quantization_config.activation_scheme", "static"}));
  EXPECT_TRUE(bad(R"({"quant_method": "compressed-tensors", "format": "float-quantized"})",
                  {"quantization_config.format", "float-quantized"}));
  std::string ct = kCompressed;
  ct.replace(ct.find(R"("strategy": "group")"), 19, R"("strategy": "tensor")");
  EXPECT_TRUE(bad(ct, {"quantization_config.config_groups.group_0.weights.strategy", "tensor"}));
  ct = kCompressed;
  ct.replace(ct.find(R"("num_bits": 4)"), 13, R"("num_bits": 2)");
  EXPECT_TRUE(bad(ct, {"num_bits", "2"}));
  ct = kCompressed;
  ct.replace(ct.find(R"("input_activations": null)"), 25,
             R"("input_activations": {"num_bits": 8})");
  EXPECT_TRUE(bad(ct, {"quantization_config.config_groups.group_0.input_activations"}));
  ct = kCompressed;
  ct.replace(ct.find(R"("format")"), 8, R"("kv_cache_scheme": {"num_bits": 8}, "format")");
  EXPECT_TRUE(bad(ct, {"quantization_config.kv_cache_scheme"}));
  // A mixture of experts and GPT-2/OPT with quantization: not yet.
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        models::parse_transformer_config(io::parse_model_config(
            R"({"model_type": "gpt2", "n_embd": 64, "n_layer": 1, "n_head": 4,
                "vocab_size": 96, "n_positions": 32,
                "quantization_config": {"quant_method": "fp8"}})",
            "g/config.json"));
      },
      {"quantization_config", "gpt2"}));
}

TEST(QuantizationConfig, MalformedEntriesAreCheckpointErrors) {
  EXPECT_TRUE(throws_naming<CheckpointError>([] { parse(R"({"bits": 4})"); },
                                             {"quantization_config.quant_method"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"quant_method": "fp8", "weight_block_size": [128]})"); },
      {"quantization_config.weight_block_size"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [] { parse(R"({"quant_method": "gptq", "bits": "four"})"); }, {"quantization_config.bits"}));
}

}  // namespace
}  // namespace strata::testing

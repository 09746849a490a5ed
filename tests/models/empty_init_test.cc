// Models built under init_empty_weights allocate nothing: every parameter is a meta tensor
// (buffers too with include_buffers), checkpoints then load straight into them, and full-size
// configs (Llama-2-7B, Mixtral-8x7B) build in no time with transformers' parameter counts.

#include <chrono>

#include "models/model_testing.h"

namespace strata::testing {
namespace {

std::int64_t parameter_count(const nn::Module& model) {
  std::int64_t total = 0;
  for (const auto& [name, tensor] : model.named_parameters()) total += tensor.numel();
  return total;
}

void expect_no_storage(nn::Module& model, bool buffers_too) {
  for (const nn::TensorRef& ref : model.tensor_refs(true, true, true)) {
    if (ref.is_buffer && !buffers_too) {
      EXPECT_TRUE(ref.tensor().is_cpu()) << ref.name;
      continue;
    }
    EXPECT_TRUE(ref.tensor().is_meta()) << ref.name;
    EXPECT_FALSE(ref.tensor().storage().defined()) << ref.name;
  }
}

class EmptyInitTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EmptyInitTest, AllocatesNothingThenLoads) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = empty_fixture_model(f);
  expect_no_storage(*model, /*buffers_too=*/false);
  model = empty_fixture_model(f, /*include_buffers=*/true);
  expect_no_storage(*model, /*buffers_too=*/true);
  // The checkpoint fills the meta parameters; RoPE buffers are rebuilt on the device.
  load_safetensors_into(*model, model_fixture_dir(f.name) / "model.safetensors", Device::cpu());
  for (const nn::TensorRef& ref : model->tensor_refs(true, true, true)) {
    EXPECT_FALSE(ref.tensor().is_meta()) << ref.name;
  }
  EXPECT_LE(max_abs_diff(model->run(f.prompt_ids).logits, f.logits), 1e-4 * max_abs(f.logits));
}

INSTANTIATE_TEST_SUITE_P(Models, EmptyInitTest, ::testing::ValuesIn(model_fixture_names()));

models::TransformerConfig full_size(const std::string& json) {
  return models::parse_transformer_config(io::parse_model_config(json, "full-size config"));
}

TEST(EmptyInit, FullSizeConfigsHaveTransformersParameterCounts) {
  const auto start = std::chrono::steady_clock::now();
  auto guard = nn::init_empty_weights(/*include_buffers=*/true);
  auto llama = models::build_causal_lm(full_size(R"({"model_type": "llama", "hidden_size": 4096,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
      "intermediate_size": 11008, "vocab_size": 32000})"),
                                       DType::BFloat16);
  EXPECT_EQ(parameter_count(*llama), 6'738'415'616);
  EXPECT_EQ(llama->state_dict().size(), 291u);
  auto mixtral = models::build_causal_lm(full_size(R"({"model_type": "mixtral", "hidden_size": 4096,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "intermediate_size": 14336, "vocab_size": 32000, "num_local_experts": 8,
      "num_experts_per_tok": 2})"),
                                         DType::BFloat16);
  EXPECT_EQ(parameter_count(*mixtral), 46'702'792'704);
  expect_no_storage(*llama, true);
  expect_no_storage(*mixtral, true);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 2.0) << "building two full-size trees on meta took " << seconds << " s";
}

}  // namespace
}  // namespace strata::testing

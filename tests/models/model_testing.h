#pragma once
// Shared by the model tests: the recorded fixtures (tests/fixtures/models/<case>/, written by
// tests/fixtures/tools/record_model_fixtures.py with transformers), loading a checkpoint into a
// model by tensor name, and the execution-device parameterisation (cuda:0 cases skip themselves
// where no GPU is usable: device_available).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "strata/core/backend.h"
#include "strata/io/checkpoint.h"
#include "strata/io/model_config.h"
#include "strata/io/safetensors.h"
#include "strata/models/models.h"
#include "strata/nn/init.h"
#include "strata/nn/tensor_placement.h"
#include "support/op_testing.h"

namespace strata::testing {

inline std::filesystem::path model_fixture_dir(const std::string& name) {
  return std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "models" / name;
}

// Every recorded case (one folder each).
inline const std::vector<std::string>& model_fixture_names() {
  static const std::vector<std::string> names = {
      "llama", "llama_linear", "llama_dynamic", "llama_yarn", "llama3", "mistral", "qwen2", "qwen3",
      "mixtral", "gpt2", "opt", "opt_350m_style",
      // gpt-oss (record_gpt_oss_fixtures.py): dense experts, and MXFP4 experts loaded as stored.
      "gpt_oss", "gpt_oss_mxfp4",
      // Qwen MoE (record_moe_fixtures.py); qwen3_moe_fused stores transformers' fused experts.
      "qwen2_moe", "qwen3_moe", "qwen3_moe_fused",
      // Gemma (record_gemma_fixtures.py).
      "gemma2", "gemma3_text", "gemma3_text_softcap",
      // OLMo 2, Phi-3 (longrope past original_max_position_embeddings, and within it) and SmolLM3
      // (record_phi_olmo_smollm_fixtures.py).
      "olmo2", "phi3", "phi3_short", "smollm3",
      // DeepSeek (record_moe_fixtures.py): V3 (MLA with q_lora_rank, sigmoid routing, yarn), V3
      // with fp8 block weights (reference: the dequantised model), V2 (q_proj, softmax routing).
      "deepseek_v3", "deepseek_v3_fp8", "deepseek_v2"};
  return names;
}

// What transformers produced for one case (see the recording script for each tensor).
struct ModelFixture {
  std::string name;
  io::ModelConfig config;
  Tensor prompt_ids;   // int64 [2, S]
  Tensor logits;       // float32 [2, S, V]
  Tensor logits_bf16;  // float32 [2, S, V]: the bfloat16 model's logits (undefined: not recorded)
  Tensor greedy_ids;   // int64 [1, 12]
  // inv_freq, attention_scaling, dynamic_*, long_* (longrope) when recorded; Gemma 3:
  // inv_freq_<layer type>.
  std::map<std::string, Tensor> extra;
};

inline ModelFixture load_model_fixture(const std::string& name) {
  const auto dir = model_fixture_dir(name);
  ModelFixture f;
  f.name = name;
  f.config = io::read_model_config(dir);
  const auto ref = io::SafetensorsFile::open(dir / "reference.safetensors");
  // clone(): own the bytes rather than keep views of the mapping.
  f.prompt_ids = ref->tensor("prompt_ids").clone();
  f.logits = ref->tensor("logits").clone();
  // fp8 fixtures record no bfloat16 run (their reference is the dequantised float32 model).
  if (ref->contains("logits_bf16")) f.logits_bf16 = ref->tensor("logits_bf16").clone();
  f.greedy_ids = ref->tensor("greedy_ids").clone();
  for (const auto& entry : ref->entries()) {
    for (const char* key : {"inv_freq", "attention_scaling", "dynamic_inv_freq", "dynamic_seq_len",
                            "inv_freq_full_attention", "inv_freq_sliding_attention",
                            "long_inv_freq", "long_attention_scaling", "router_margin_bf16"}) {
      if (entry.name == key) f.extra[key] = ref->tensor(entry).clone();
    }
  }
  return f;
}

// Assigns every tensor of `file` to the model tensor of the same name on `device` (cast to the
// model's dtype), moves non-persistent buffers there, and fails the test for a model tensor the
// file lacks (tied names excepted) or a file tensor the model lacks. A stand-in for
// load_checkpoint_in_model.
inline void load_safetensors_into(nn::Module& model, const std::filesystem::path& file,
                                  Device device) {
  // CheckpointReader: fused expert tensors are read as per-expert ones (docs/models.md).
  const auto st = std::make_shared<const io::CheckpointReader>(file);
  std::set<const nn::TensorSlot*> loaded;
  std::set<std::string> used;
  const auto refs = model.tensor_refs(true, true, true, /*remove_duplicate=*/false);
  for (const nn::TensorRef& ref : refs) {
    if (ref.is_buffer && !ref.persistent) continue;
    if (!st->contains(ref.name)) continue;
    nn::set_module_tensor_to_device(model, ref.name, device, st->get(ref.name));
    loaded.insert(ref.slot.get());
    used.insert(ref.name);
  }
  for (const nn::TensorRef& ref : refs) {
    if (ref.is_buffer && !ref.persistent) {
      if (ref.tensor().is_meta()) {
        nn::materialize_non_persistent_buffers(model, device);
      } else {
        nn::set_module_tensor_to_device(model, ref.name, device);
      }
      continue;
    }
    EXPECT_TRUE(loaded.contains(ref.slot.get())) << ref.name << " is not in " << file;
  }
  for (const std::string& name : st->keys()) {
    EXPECT_TRUE(used.contains(name))
        << file << " holds " << name << ", which the model does not have";
  }
}

// Builds the fixture's model in `dtype` and loads its checkpoint onto `device`.
inline std::shared_ptr<models::CausalLM> load_fixture_model(const ModelFixture& f, Device device,
                                                            DType dtype = DType::Float32) {
  auto model = models::build_causal_lm(f.config, dtype);
  load_safetensors_into(*model, model_fixture_dir(f.name) / "model.safetensors", device);
  return model;
}

// The fixture's model built under init_empty_weights, as load_checkpoint_and_dispatch (and the
// strata CLI) expects it: parameters are meta tensors, buffers too with include_buffers.
inline std::shared_ptr<models::CausalLM> empty_fixture_model(
    const ModelFixture& f, std::optional<bool> include_buffers = std::nullopt,
    DType dtype = DType::Float32) {
  auto guard = nn::init_empty_weights(include_buffers);
  return models::build_causal_lm(f.config, dtype);
}

// The decoder layers in module order (model.layers.N, transformer.h.N, model.decoder.layers.N):
// the modules whose class is one of the model's no_split_module_classes.
inline std::vector<std::string> decoder_layer_names(models::CausalLM& model) {
  const std::vector<std::string> classes = model.no_split_module_classes();
  std::vector<std::string> out;
  for (const auto& [name, module] : model.named_modules()) {
    if (std::find(classes.begin(), classes.end(), module->class_name()) != classes.end()) {
      out.push_back(name);
    }
  }
  return out;
}

// max |a - b| over all elements (both converted to float64 on the cpu).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu()).to_doubles();
  const std::vector<double> y = b.to(Device::cpu()).to_doubles();
  EXPECT_EQ(x.size(), y.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

inline double max_abs(const Tensor& a) {
  double worst = 0.0;
  for (double v : a.to(Device::cpu()).to_doubles()) worst = std::max(worst, std::abs(v));
  return worst;
}

// float32: the bound, relative to the logits' scale (max |logit|).
constexpr double kFloat32Tolerance = 1e-4;

// float32 logits of the fixture's prompts within kFloat32Tolerance of transformers'.
inline void expect_float32_logits_match(const ModelFixture& f, const Tensor& logits) {
  ASSERT_EQ(logits.shape(), f.logits.shape());
  EXPECT_EQ(logits.dtype(), DType::Float32);
  const double scale = max_abs(f.logits), diff = max_abs_diff(logits, f.logits);
  EXPECT_LE(diff, kFloat32Tolerance * scale)
      << f.name << ": max |diff| " << diff << " at logits scale " << scale;
}

// The greedy continuation of the first prompt equals transformers' (12 tokens).
inline void expect_greedy_continuation_matches(const ModelFixture& f, models::CausalLM& model) {
  models::GenerationOptions options;
  options.max_new_tokens = f.greedy_ids.size(1);
  const auto result = models::generate_greedy(model, f.prompt_ids.narrow(0, 0, 1), options);
  EXPECT_EQ(result.tokens.to_vector<std::int64_t>(), f.greedy_ids.to_vector<std::int64_t>())
      << f.name;
  EXPECT_EQ(result.step_seconds.size(), static_cast<std::size_t>(options.max_new_tokens - 1));
}

// A padded batch: prompt 0 beside prompt 1 without its last 3 tokens, left-padded, with an
// attention mask (on the cpu: the model moves it). Row 0's float32 logits and greedy tokens must
// equal transformers'; row 1's logits those of the model run on its tokens alone (except under
// dynamic RoPE, which scales every row by the batch's longest length, as transformers does).
inline void expect_padded_batch_matches(const ModelFixture& f, models::CausalLM& model,
                                        Device device) {
  const std::int64_t seq = f.prompt_ids.size(1), cut = 3;
  Tensor ids = f.prompt_ids.clone();
  Tensor mask = Tensor::ones({2, seq}, DType::Int64);
  ids.select(0, 1)
      .narrow(0, cut, seq - cut)
      .copy_(f.prompt_ids.select(0, 1).narrow(0, 0, seq - cut));
  ids.select(0, 1).narrow(0, 0, cut).copy_(Tensor::zeros({cut}, DType::Int64));
  mask.select(0, 1).narrow(0, 0, cut).copy_(Tensor::zeros({cut}, DType::Int64));
  const Tensor logits = model.run(ids.to(device), nullptr, 0, mask).logits;
  const double tolerance = kFloat32Tolerance * max_abs(f.logits);
  EXPECT_LE(max_abs_diff(logits.narrow(0, 0, 1), f.logits.narrow(0, 0, 1)), tolerance) << f.name;
  if (f.name != "llama_dynamic") {
    const Tensor alone =
        model.run(f.prompt_ids.narrow(0, 1, 1).narrow(1, 0, seq - cut).to(device)).logits;
    EXPECT_LE(max_abs_diff(logits.narrow(0, 1, 1).narrow(1, cut, seq - cut), alone), tolerance)
        << f.name;
  }
  models::GenerationOptions options;
  options.max_new_tokens = f.greedy_ids.size(1);
  options.attention_mask = mask;
  options.input_device = device;
  const auto result = models::generate_greedy(model, ids, options);
  EXPECT_EQ(result.tokens.narrow(0, 0, 1).to_vector<std::int64_t>(),
            f.greedy_ids.to_vector<std::int64_t>())
      << f.name;
}

// The case of a test parameterised over fixtures and devices.
struct ModelCase {
  std::string fixture;
  Device device;
};

inline std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> out;
  for (const Device device : {Device::cpu(), Device::cuda(0)}) {
    for (const std::string& name : model_fixture_names()) out.push_back({name, device});
  }
  return out;
}

inline std::string model_case_name(const ::testing::TestParamInfo<ModelCase>& info) {
  return info.param.fixture + (info.param.device.is_cuda() ? "_cuda0" : "_cpu");
}

}  // namespace strata::testing

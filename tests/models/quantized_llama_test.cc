// A tiny quantized Llama built here in every format: packed tensors from the naive quantizer
// (ops/quantized_testing.h) written with the project's safetensors writer beside a config.json
// carrying the quantization_config, and the same model with the dequantised dense weights. Loaded
// with load_checkpoint_and_dispatch on the cpu and over cpu + disk (an offload folder), the
// quantized model's float32 logits must equal the dense model's (within float32 accumulation
// order: 1e-4 of the logits' scale) and its greedy tokens must be the same; the planner must see
// the packed sizes.

#include <fmt/format.h>

#include <functional>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "ops/quantized_testing.h"
#include "ops/throws_naming.h"
#include "strata/models/quant_linear.h"
#include "strata/placement/load_and_dispatch.h"
#include "strata/placement/module_sizes.h"

namespace strata::testing {
namespace {

namespace fs = std::filesystem;
using placement::DeviceMap;
using placement::MapDevice;

const std::string kLlama = R"("model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    "vocab_size": 96, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": false)";

struct QuantCase {
  std::string name;
  std::string quantization_config;
  std::function<NaiveQuantized(NaiveQuantizer&, std::int64_t n, std::int64_t k)> make;
};

void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.name; }

std::vector<QuantCase> cases() {
  using Q = NaiveQuantizer;
  return {
      {"fp8_blocks_ragged",
       R"({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [48, 48],
           "modules_to_not_convert": ["o_proj"]})",
       [](Q& q, auto n, auto k) { return q.fp8(n, k, 48, 48, DType::Float32, 7); }},
      {"fp8_per_tensor", R"({"quant_method": "fp8", "weight_block_size": null})",
       [](Q& q, auto n, auto k) { return q.fp8(n, k, 0, 0, DType::Float32, 7); }},
      {"awq_g32",
       R"({"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm",
           "zero_point": true})",
       [](Q& q, auto n, auto k) { return q.awq(n, k, 32); }},
      {"gptq4_desc_act_asym",
       R"({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": true,
           "sym": false})",
       [](Q& q, auto n, auto k) { return q.gptq(n, k, 4, 32, true, false); }},
      {"gptq8_sym",
       R"({"quant_method": "gptq", "bits": 8, "group_size": 64, "desc_act": false, "sym": true})",
       [](Q& q, auto n, auto k) { return q.gptq(n, k, 8, 64, false, true); }},
      {"compressed_int4_group_asym",
       R"({"quant_method": "compressed-tensors", "format": "pack-quantized",
           "ignore": ["lm_head", "re:.*down_proj$"], "config_groups": {"group_0": {
           "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": false,
           "strategy": "group", "group_size": 32}}}})",
       [](Q& q, auto n, auto k) { return q.compressed(n, k, 4, 32, false); }},
      {"compressed_int8_channel_sym",
       R"({"quant_method": "compressed-tensors", "format": "pack-quantized",
           "ignore": ["lm_head"], "config_groups": {"group_0": {
           "targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": true,
           "strategy": "channel"}}}})",
       [](Q& q, auto n, auto k) { return q.compressed(n, k, 8, 0, true); }},
  };
}

// The two checkpoints of one case: quantized (config with quantization_config) and dense.
struct Checkpoints {
  TempDir dir;
  fs::path quantized, dense;
};

void write_config(const fs::path& folder, const std::string& extra) {
  fs::create_directories(folder);
  write_text(folder / "config.json", "{" + kLlama + extra + "}");
}

std::unique_ptr<Checkpoints> make_checkpoints(const QuantCase& c) {
  auto out = std::make_unique<Checkpoints>();
  out->quantized = out->dir / "quantized";
  out->dense = out->dir / "dense";
  write_config(out->quantized, R"(, "quantization_config": )" + c.quantization_config);
  write_config(out->dense, "");
  const io::ModelConfig config = io::read_model_config(out->quantized);
  const auto tc = models::parse_transformer_config(config);
  std::shared_ptr<models::CausalLM> skeleton;
  {
    auto guard = nn::init_empty_weights();
    skeleton = models::build_causal_lm(tc, DType::Float32);
  }
  NaiveQuantizer quantizer(2024);
  std::vector<std::pair<std::string, Tensor>> qt, dt;
  std::uint64_t seed = 1;
  for (const auto& [name, module] : skeleton->named_modules()) {
    if (auto* linear = dynamic_cast<models::QuantizedLinear*>(module)) {
      NaiveQuantized q = c.make(quantizer, linear->out_features(), linear->in_features());
      for (auto& [local, t] : q.tensors) qt.emplace_back(name + "." + local, t);
      dt.emplace_back(name + ".weight", Tensor::from_vector(q.dense, {linear->out_features(),
                                                                      linear->in_features()}));
      continue;
    }
    for (const auto& entry : module->direct_parameters()) {
      const Tensor& meta = entry.slot->tensor();
      const bool norm = entry.name == "weight" && meta.dim() == 1;
      const double scale = name.find("proj") != std::string::npos ? 0.2 : 1.0;
      const Tensor t = random_tensor(meta.shape(), DType::Float32, seed++, norm ? 0.5 : -scale,
                                     norm ? 1.5 : scale);
      qt.emplace_back(name + "." + entry.name, t);
      dt.emplace_back(name + "." + entry.name, t);
    }
  }
  io::save_safetensors(out->quantized / "model.safetensors", qt);
  io::save_safetensors(out->dense / "model.safetensors", dt);
  return out;
}

std::shared_ptr<models::CausalLM> load(const fs::path& folder,
                                       const placement::LoadAndDispatchOptions& options) {
  std::shared_ptr<models::CausalLM> model;
  {
    auto guard = nn::init_empty_weights();
    model = models::build_causal_lm(io::read_model_config(folder), DType::Float32);
  }
  placement::load_checkpoint_and_dispatch(*model, folder / "model.safetensors", options);
  return model;
}

placement::LoadAndDispatchOptions on_cpu() {
  placement::LoadAndDispatchOptions o;
  o.device_map = DeviceMap{{"", MapDevice::cpu()}};
  return o;
}

// Layer 0 and the embeddings on the cpu; layer 1, the final norm and lm_head on disk.
placement::LoadAndDispatchOptions over_cpu_and_disk(const fs::path& offload) {
  placement::LoadAndDispatchOptions o;
  o.device_map =
      DeviceMap{{"model.embed_tokens", MapDevice::cpu()}, {"model.layers.0", MapDevice::cpu()},
                {"model.layers.1", MapDevice::disk()},    {"model.norm", MapDevice::disk()},
                {"model.rotary_emb", MapDevice::cpu()},   {"lm_head", MapDevice::disk()}};
  o.offload_folder = offload;
  return o;
}

Tensor prompt() {
  return Tensor::from_vector(std::vector<std::int64_t>{3, 17, 42, 5, 88, 61, 9, 30, 2, 71, 14, 56},
                             {2, 6});
}

void expect_same_model(models::CausalLM& quantized, models::CausalLM& dense,
                       const std::string& what) {
  const Tensor expected = dense.run(prompt()).logits;
  const Tensor got = quantized.run(prompt()).logits;
  ASSERT_EQ(got.shape(), expected.shape());
  const double scale = max_abs(expected);
  EXPECT_LE(max_abs_diff(got, expected), kFloat32Tolerance * scale) << what;
  models::GenerationOptions options;
  options.max_new_tokens = 8;
  const auto a = models::generate_greedy(quantized, prompt().narrow(0, 0, 1), options);
  const auto b = models::generate_greedy(dense, prompt().narrow(0, 0, 1), options);
  EXPECT_EQ(a.tokens.to_vector<std::int64_t>(), b.tokens.to_vector<std::int64_t>()) << what;
}

class QuantizedLlamaTest : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizedLlamaTest, CpuLogitsEqualDequantisedDenseModel) {
  const auto ckpt = make_checkpoints(GetParam());
  const auto dense = load(ckpt->dense, on_cpu());
  const auto quantized = load(ckpt->quantized, on_cpu());
  EXPECT_NE(quantized->get_submodule("model.layers.0.self_attn.q_proj").class_name(), "Linear");
  expect_same_model(*quantized, *dense, GetParam().name + " on cpu");
}

TEST_P(QuantizedLlamaTest, CpuAndDiskOffloadLogitsEqualDenseModel) {
  const auto ckpt = make_checkpoints(GetParam());
  const auto dense = load(ckpt->dense, on_cpu());
  const auto quantized = load(ckpt->quantized, over_cpu_and_disk(ckpt->dir / "offload"));
  // Layer 1 is on disk: its packed tensors are meta between forwards (the hook streams them in).
  for (const auto& entry :
       quantized->get_submodule("model.layers.1.mlp.up_proj").direct_parameters()) {
    EXPECT_TRUE(entry.slot->tensor().is_meta()) << entry.name;
  }
  expect_same_model(*quantized, *dense, GetParam().name + " over cpu + disk");
}

// What the CLI does: build and load in bf16. The packed tensors and scales keep the dtypes their
// format declares (an fp8 weight stays 1 byte, f16 scales are not rounded to bf16); only the
// dense layers and the bias follow the load dtype.
TEST_P(QuantizedLlamaTest, LoadingInBfloat16KeepsTheFormatsDtypes) {
  const auto ckpt = make_checkpoints(GetParam());
  std::shared_ptr<models::CausalLM> model;
  {
    auto guard = nn::init_empty_weights();
    model = models::build_causal_lm(io::read_model_config(ckpt->quantized), DType::BFloat16);
  }
  std::map<std::string, DType> declared;
  for (const auto& [name, t] : model->named_parameters()) declared[name] = t.dtype();
  placement::LoadAndDispatchOptions options = on_cpu();
  options.dtype = DType::BFloat16;
  placement::load_checkpoint_and_dispatch(*model, ckpt->quantized / "model.safetensors", options);
  std::size_t packed = 0;
  for (const auto& [name, module] : model->named_modules()) {
    if (dynamic_cast<models::QuantizedLinear*>(module) == nullptr) continue;
    for (const auto& entry : module->direct_parameters()) {
      const std::string full = name + "." + entry.name;
      const DType expected = entry.name == "bias" ? DType::BFloat16 : declared.at(full);
      EXPECT_EQ(entry.slot->tensor().dtype(), expected) << full;
      ++packed;
    }
  }
  EXPECT_GT(packed, 0u);
  EXPECT_EQ(
      model->get_submodule("model.embed_tokens").direct_parameters().front().slot->tensor().dtype(),
      DType::BFloat16);
  const Tensor logits = model->run(prompt()).logits.to(DType::Float32);
  const Tensor expected = load(ckpt->dense, on_cpu())->run(prompt()).logits;
  std::shared_ptr<models::CausalLM> dense_bf16;
  {
    auto guard = nn::init_empty_weights();
    dense_bf16 = models::build_causal_lm(io::read_model_config(ckpt->dense), DType::BFloat16);
  }
  placement::load_checkpoint_and_dispatch(*dense_bf16, ckpt->dense / "model.safetensors", options);
  const Tensor bf16_dense = dense_bf16->run(prompt()).logits.to(DType::Float32);
  // bf16 rounding alone moves these random models' logits (up to half the scale for one seed):
  // the quantized model in bf16 stays within twice what the dense model in bf16 moves.
  const double bf16_noise = max_abs_diff(bf16_dense, expected);
  EXPECT_LE(max_abs_diff(logits, expected), 2 * bf16_noise + 1e-2 * max_abs(expected))
      << GetParam().name;
}

TEST_P(QuantizedLlamaTest, PlannerSeesPackedSizes) {
  const auto ckpt = make_checkpoints(GetParam());
  std::shared_ptr<models::CausalLM> model;
  {
    auto guard = nn::init_empty_weights();
    model = models::build_causal_lm(io::read_model_config(ckpt->quantized), DType::Float32);
  }
  const placement::ModuleSizes sizes = placement::compute_module_sizes(*model);
  const std::string q_proj = "model.layers.0.mlp.up_proj";
  nn::Module& module = model->get_submodule(q_proj);
  std::int64_t packed = 0;
  for (const auto& entry : module.direct_parameters()) {
    packed += entry.slot->tensor().numel() *
              static_cast<std::int64_t>(dtype_size(entry.slot->tensor().dtype()));
  }
  EXPECT_EQ(sizes[q_proj], packed);
  // The dense float32 layer is 128 x 64 x 4 bytes; packed is at most 8 bits a weight + scales.
  EXPECT_LT(sizes[q_proj], 128 * 64 * 4 / 3);
  EXPECT_EQ(sizes["lm_head"], 96 * 64 * 4);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedLlamaTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(QuantizedLlama, PackedTensorOfTheWrongShapeIsACheckpointErrorNamingIt) {
  const auto ckpt = make_checkpoints(cases()[2]);  // awq g32
  // Rewrite the checkpoint with one qzeros of another group size.
  const auto st = io::SafetensorsFile::open(ckpt->quantized / "model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  const std::string bad = "model.layers.1.self_attn.k_proj.qzeros";
  for (const auto& entry : st->entries()) {
    Tensor t = st->tensor(entry).clone();
    if (entry.name == bad) t = Tensor::zeros({4, t.size(1)}, DType::Int32);
    tensors.emplace_back(entry.name, t);
  }
  io::save_safetensors(ckpt->quantized / "model.safetensors", tensors);
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { load(ckpt->quantized, on_cpu()); }, {bad, "shape"}));
}

}  // namespace
}  // namespace strata::testing

// init_empty_weights / init_on_device (accelerate-semantics.md §1.1, §3.10) and the 7B-parameter
// Llama-shaped tree built from the generic layers.

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

TEST(InitEmptyWeightsTest, ParametersOnMetaBuffersStay) {
  {
    auto guard = init_empty_weights(false);
    Linear linear(4, 5);
    EXPECT_TRUE(linear.weight().is_meta());
    EXPECT_FALSE(linear.weight().storage().defined());
    BatchNorm1d norm(4);
    EXPECT_TRUE(norm.parameter("weight").is_meta());
    EXPECT_TRUE(norm.buffer("running_mean").is_cpu());
    // A tensor the caller made is replaced by a meta tensor of its shape and dtype.
    Module plain("Plain");
    plain.register_parameter("p", Tensor::ones({2, 3}, DType::Float16));
    EXPECT_TRUE(plain.parameter("p").is_meta());
    EXPECT_EQ(plain.parameter("p").dtype(), DType::Float16);
    EXPECT_EQ(plain.parameter("p").shape(), (Shape{2, 3}));
  }
  Linear after(4, 5);  // outside the guard everything is on the cpu again
  EXPECT_TRUE(after.weight().is_cpu());
}

TEST(InitEmptyWeightsTest, IncludeBuffers) {
  auto guard = init_empty_weights(true);
  BatchNorm1d norm(4);
  EXPECT_TRUE(norm.parameter("weight").is_meta());
  EXPECT_TRUE(norm.buffer("running_mean").is_meta());
  EXPECT_TRUE(norm.buffer("num_batches_tracked").is_meta());
  EXPECT_EQ(norm.buffer("num_batches_tracked").dtype(), DType::Int64);
}

TEST(InitEmptyWeightsTest, GuardsNestAndRestore) {
  auto outer = init_empty_weights(false);
  {
    auto inner = init_on_device(Device::cpu(), true);
    EXPECT_TRUE(Linear(2, 2).weight().is_cpu());
  }
  EXPECT_TRUE(Linear(2, 2).weight().is_meta());
  ASSERT_TRUE(current_init_placement().has_value());
  EXPECT_FALSE(current_init_placement()->include_buffers);
}

TEST(InitEmptyWeightsTest, ThreadLocal) {
  auto guard = init_empty_weights();
  bool other_thread_meta = true;
  std::thread([&] { other_thread_meta = Linear(2, 2).weight().is_meta(); }).join();
  EXPECT_FALSE(other_thread_meta);
  EXPECT_TRUE(Linear(2, 2).weight().is_meta());
}

TEST(InitEmptyWeightsTest, IncludeBuffersFromEnvironment) {
  ::setenv("STRATA_INIT_INCLUDE_BUFFERS", "Yes", 1);
  {
    auto guard = init_empty_weights();
    EXPECT_TRUE(current_init_placement()->include_buffers);
  }
  ::setenv("STRATA_INIT_INCLUDE_BUFFERS", "perhaps", 1);
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { auto guard = init_empty_weights(); },
                                             {"STRATA_INIT_INCLUDE_BUFFERS", "'perhaps'"}));
  EXPECT_FALSE(current_init_placement().has_value());  // a failed guard changes nothing
  ::unsetenv("STRATA_INIT_INCLUDE_BUFFERS");
}

// A rotary embedding whose inv_freq is a non-persistent buffer, rebuilt after empty init.
class Rotary : public Module {
 public:
  explicit Rotary(std::int64_t dim) : Module("Rotary"), dim_(dim) {
    register_buffer("inv_freq", compute(Device::cpu()), /*persistent=*/false);
  }
  void reset_non_persistent_buffers(Device device) override {
    buffer_slot("inv_freq")->set(compute(device));
  }

 private:
  Tensor compute(Device device) const {
    std::vector<double> values;
    for (std::int64_t i = 0; i < dim_; i += 2) {
      values.push_back(1.0 / std::pow(10000.0, static_cast<double>(i) / dim_));
    }
    return Tensor::from_doubles(values, {dim_ / 2}, DType::Float32).to(device);
  }
  std::int64_t dim_;
};

TEST(InitEmptyWeightsTest, NonPersistentBuffersAreMaterialisedAfterwards) {
  std::shared_ptr<Sequential> model;
  {
    auto guard = init_empty_weights(true);
    model = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Rotary>(8), std::make_shared<ReLU>()});
  }
  EXPECT_TRUE((*model)[0].buffer("inv_freq").is_meta());
  EXPECT_TRUE(model->state_dict().empty());  // not a checkpoint tensor
  materialize_non_persistent_buffers(*model, Device::cpu());
  const Tensor& inv_freq = (*model)[0].buffer("inv_freq");
  ASSERT_TRUE(inv_freq.is_cpu());
  EXPECT_DOUBLE_EQ(inv_freq.to_doubles()[1],
                   static_cast<double>(static_cast<float>(1.0 / std::pow(10000.0, 0.25))));

  // A module that does not know how to rebuild its buffers says which ones.
  std::shared_ptr<Module> plain;
  {
    auto guard = init_empty_weights(true);
    plain = std::make_shared<Module>("Masked");
    plain->register_buffer("mask", Tensor::ones({4}), false);
  }
  EXPECT_TRUE(throws_naming<NotSupported>(
      [&] { materialize_non_persistent_buffers(*plain, Device::cpu()); },
      {"Masked", "mask", "reset_non_persistent_buffers"}));

  // An override that forgets a buffer is caught and the buffer named.
  class Forgetful : public Module {
   public:
    Forgetful() : Module("Forgetful") { register_buffer("cache", Tensor::ones({2}), false); }
    void reset_non_persistent_buffers(Device) override {}
  };
  std::shared_ptr<Sequential> outer;
  {
    auto guard = init_empty_weights(true);
    outer = std::make_shared<Sequential>(
        std::vector<std::shared_ptr<Module>>{std::make_shared<Forgetful>()});
  }
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { materialize_non_persistent_buffers(*outer, Device::cpu()); },
      {"Forgetful", "'0.cache'", "meta"}));
}

// ---- a 7B-parameter Llama-shaped tree ---------------------------------------------------------

constexpr std::int64_t kHidden = 4096, kIntermediate = 11008, kVocab = 32000, kLayers = 32;

std::shared_ptr<Module> attention() {
  auto m = std::make_shared<Module>("LlamaAttention");
  for (const char* name : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    m->register_module(name, std::make_shared<Linear>(kHidden, kHidden, false));
  }
  return m;
}

std::shared_ptr<Module> mlp() {
  auto m = std::make_shared<Module>("LlamaMLP");
  m->register_module("gate_proj", std::make_shared<Linear>(kHidden, kIntermediate, false));
  m->register_module("up_proj", std::make_shared<Linear>(kHidden, kIntermediate, false));
  m->register_module("down_proj", std::make_shared<Linear>(kIntermediate, kHidden, false));
  m->register_module("act_fn", std::make_shared<SiLU>());
  return m;
}

std::shared_ptr<Module> llama_7b() {
  auto model = std::make_shared<Module>("LlamaForCausalLM");
  auto inner = model->register_module("model", std::make_shared<Module>("LlamaModel"));
  inner->register_module("embed_tokens", std::make_shared<Embedding>(kVocab, kHidden));
  auto layers = inner->register_module("layers", std::make_shared<ModuleList>());
  for (std::int64_t i = 0; i < kLayers; ++i) {
    auto block = std::make_shared<Module>("LlamaDecoderLayer");
    block->register_module("self_attn", attention());
    block->register_module("mlp", mlp());
    block->register_module("input_layernorm", std::make_shared<RMSNorm>(kHidden));
    block->register_module("post_attention_layernorm", std::make_shared<RMSNorm>(kHidden));
    layers->push_back(block);
  }
  inner->register_module("norm", std::make_shared<RMSNorm>(kHidden));
  model->register_module("lm_head", std::make_shared<Linear>(kHidden, kVocab, false));
  return model;
}

// Resident set size of this process in bytes (Linux), or 0 when unknown.
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * 4096;
}

TEST(InitEmptyWeightsTest, Llama7BTreeAllocatesNoTensorMemory) {
  const std::size_t rss_before = resident_bytes();
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Module> model;
  {
    auto guard = init_empty_weights(true);
    model = llama_7b();
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::size_t rss_after = resident_bytes();

  std::int64_t numel = 0;
  std::size_t storage_bytes = 0, tensors = 0;
  for (const TensorRef& ref : model->tensor_refs(true, true, /*recurse=*/true)) {
    EXPECT_TRUE(ref.tensor().is_meta()) << ref.name;
    if (ref.tensor().storage().defined()) storage_bytes += ref.tensor().storage().nbytes();
    numel += ref.tensor().numel();
    ++tensors;
  }
  EXPECT_EQ(storage_bytes, 0u);
  // Llama-2-7B: 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 2 x 32000 x 4096 + 4096.
  EXPECT_EQ(numel, 6'738'415'616);
  EXPECT_EQ(tensors, 32u * 9u + 3u);
  EXPECT_EQ(model->state_dict().front().first, "model.embed_tokens.weight");
  EXPECT_EQ(model->get_submodule("model.layers.31.mlp.down_proj").class_name(), "Linear");
  // A single materialised fp32 weight of this model would add at least 64 MiB.
  if (rss_before != 0 && rss_after > rss_before) {
    EXPECT_LT(rss_after - rss_before, std::size_t{64} << 20);
  }
  std::cout << "[ 7B-tree  ] built " << tensors << " meta tensors (" << numel
            << " parameters) under init_empty_weights in " << ms << " ms\n";
  RecordProperty("build_ms", std::to_string(ms));
}

}  // namespace
}  // namespace strata::testing

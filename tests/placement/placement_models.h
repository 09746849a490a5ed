#pragma once
// The small real models the dispatch tests run (dispatch, load-and-dispatch, crashes, two GPUs):
// a stack of residual MLP blocks and a transformer-like tree whose head is tied to its
// embedding, plus what their tests share: random weights, a bit-exact comparison and a sharded
// checkpoint writer.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/io_testing.h"
#include "strata/core/backend.h"
#include "strata/io/safetensors.h"
#include "strata/nn/layers.h"
#include "strata/nn/module.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::placement::testing {

inline constexpr std::int64_t kDim = 16;

// Residual MLP block: x + fc2(gelu(fc1(norm(x)))). `scaled` adds a persistent buffer:
// x + scale * fc2(gelu(fc1(norm(x)))).
class Block : public nn::Module {
 public:
  explicit Block(std::int64_t dim = kDim, bool scaled = false) : Module("Block"), scaled_(scaled) {
    norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(dim));
    fc1_ = register_module("fc1", std::make_shared<nn::Linear>(dim, 2 * dim));
    fc2_ = register_module("fc2", std::make_shared<nn::Linear>(2 * dim, dim));
    if (scaled_) create_buffer("scale", {dim}, DType::Float32, 1.0);
  }
  nn::Value forward(nn::Args& args) override {
    const Tensor& x = args.tensor(0, "Block");
    const Tensor h = (*fc1_)((*norm_)(x)).tensor();
    const Tensor y = (*fc2_)(ops::gelu(h)).tensor();
    return ops::add(x, scaled_ ? ops::mul(y, buffer("scale")) : y);
  }

 private:
  bool scaled_;
  std::shared_ptr<Module> norm_, fc1_, fc2_;
};

// blocks.0 .. blocks.<n-1>, run in order.
class Stack : public nn::Module {
 public:
  explicit Stack(int n, std::int64_t dim = kDim, bool scaled = false) : Module("Stack") {
    blocks_ = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < n; ++i) blocks_->push_back(std::make_shared<Block>(dim, scaled));
  }
  nn::Value forward(nn::Args& args) override {
    nn::Value x = args.positional.at(0);
    for (const auto& [name, block] : blocks_->direct_children()) x = (*block)(x);
    return x;
  }

 private:
  std::shared_ptr<nn::ModuleList> blocks_;
};

// An embedding that remembers the table its last forward read (to see which copy that was).
class RecordingEmbedding : public nn::Embedding {
 public:
  RecordingEmbedding(std::int64_t num, std::int64_t dim) : nn::Embedding(num, dim) {}
  nn::Value forward(nn::Args& args) override {
    seen_ = weight();
    return nn::Embedding::forward(args);
  }
  const Tensor& seen() const { return seen_; }

 private:
  Tensor seen_;
};

// The output head reads the embedding table (one slot bound under two names) and remembers the
// table its last forward read.
class TiedHead : public nn::Module {
 public:
  explicit TiedHead(const nn::SlotPtr& table) : Module("TiedHead") {
    register_parameter("weight", table);
  }
  nn::Value forward(nn::Args& args) override {
    seen_ = parameter("weight");
    return ops::linear(args.tensor(0, "TiedHead"), seen_);
  }
  const Tensor& seen() const { return seen_; }

 private:
  Tensor seen_;
};

// A layer with an attention-like product, then a Block.
class Layer : public nn::Module {
 public:
  Layer() : Module("Layer") {
    q_ = register_module("q", std::make_shared<nn::Linear>(kDim, kDim));
    v_ = register_module("v", std::make_shared<nn::Linear>(kDim, kDim, /*bias=*/false));
    o_ = register_module("o", std::make_shared<nn::Linear>(kDim, kDim));
    mlp_ = register_module("mlp", std::make_shared<Block>());
  }
  nn::Value forward(nn::Args& args) override {
    const Tensor& x = args.tensor(0, "Layer");
    const Tensor attn = ops::mul((*q_)(x).tensor(), (*v_)(x).tensor());
    return (*mlp_)(ops::add(x, (*o_)(attn).tensor()));
  }

 private:
  std::shared_ptr<Module> q_, v_, o_, mlp_;
};

// A transformer-like tree: embed, layers.0 .. layers.<n-1>, norm, and a head tied to the
// embedding.
class Tree : public nn::Module {
 public:
  explicit Tree(int layers = 2) : Module("Tree") {
    embed_ = register_module("embed", std::make_shared<RecordingEmbedding>(32, kDim));
    layers_ = register_module("layers", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < layers; ++i) layers_->push_back(std::make_shared<Layer>());
    norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(kDim));
    head_ = register_module("head", std::make_shared<TiedHead>(embed_->parameter_slot("weight")));
  }
  nn::Value forward(nn::Args& args) override {
    nn::Value x = (*embed_)(args.positional.at(0));
    for (const auto& [name, layer] : layers_->direct_children()) x = (*layer)(x);
    return (*head_)((*norm_)(x));
  }
  // The tables the embedding and the head read in the last forward.
  const Tensor& embed_seen() const { return embed_->seen(); }
  const Tensor& head_seen() const { return head_->seen(); }

 private:
  std::shared_ptr<RecordingEmbedding> embed_;
  std::shared_ptr<TiedHead> head_;
  std::shared_ptr<Module> norm_;
  std::shared_ptr<nn::ModuleList> layers_;
};

// Base of the tests run once per execution device (cpu, cuda:0): the CUDA instances skip
// without a CUDA backend.
class ExecutionDeviceTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    exec_ = GetParam();
    if (exec_.is_cuda() && find_backend(DeviceType::CUDA) == nullptr) {
      GTEST_SKIP() << "no CUDA backend";
    }
  }
  // A device map's name for the execution device.
  std::string gpu_or_cpu() const { return exec_.is_cuda() ? "0" : "cpu"; }

  Device exec_ = Device::cpu();
};

inline Tensor stack_input(std::int64_t dim = kDim) {
  return strata::testing::random_tensor({3, dim}, DType::Float32, 99);
}
inline Tensor tree_input() { return Tensor::from_vector<std::int64_t>({1, 5, 31, 0, 7}, {5}); }

// Random floating-point weights and buffers, one seed per tensor from `seed` on.
inline void randomize(nn::Module& model, std::uint64_t seed) {
  for (const nn::TensorRef& ref : model.tensor_refs(true, true, true)) {
    const Tensor& t = ref.tensor();
    if (is_floating_point(t.dtype())) {
      ref.slot->set(strata::testing::random_tensor(t.shape(), t.dtype(), seed++));
    }
  }
}

// The model's output for `input` without any hook, computed on `exec`, returned on the cpu; the
// model goes back to the cpu.
inline Tensor unhooked_output(nn::Module& model, const Tensor& input, Device exec) {
  model.to(exec);
  const Tensor out = model(input.to(exec)).tensor().to(Device::cpu());
  model.to(Device::cpu());
  return out;
}

inline void expect_bit_identical(const Tensor& expected, const Tensor& actual) {
  ASSERT_EQ(expected.shape(), actual.shape());
  ASSERT_EQ(expected.dtype(), actual.dtype());
  const Tensor e = expected.to(Device::cpu()).contiguous();
  const Tensor a = actual.to(Device::cpu()).contiguous();
  EXPECT_EQ(std::memcmp(e.data_ptr(), a.data_ptr(), e.nbytes()), 0)
      << "outputs differ: expected " << e.describe() << ", got " << a.describe();
}

// Gives `model` random weights (randomize from seed 1) and saves its state dict as one shard per
// group of module prefixes, with a model.safetensors.index.json. Returns the index's path.
inline std::filesystem::path write_checkpoint(const std::filesystem::path& dir, nn::Module& model,
                                              const std::vector<std::vector<std::string>>& shards) {
  randomize(model, 1);
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const std::string file = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
    std::vector<std::pair<std::string, Tensor>> part;
    for (const auto& [name, t] : model.state_dict()) {
      for (const std::string& prefix : shards[s]) {
        if (name.rfind(prefix + ".", 0) == 0) {
          part.emplace_back(name, t);
          weight_map[name] = file;
        }
      }
    }
    io::save_safetensors(dir / file, part);
  }
  const nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}};
  strata::testing::write_text(dir / "model.safetensors.index.json", index.dump(2));
  return dir / "model.safetensors.index.json";
}

}  // namespace strata::placement::testing

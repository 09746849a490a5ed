#pragma once
// Generic layers with PyTorch's parameter names and shapes, so checkpoint keys match:
// Linear, Embedding, LayerNorm, RMSNorm, activations, ModuleList and Sequential. Weights start as
// zeros (norm weights as ones), or as meta tensors under init_empty_weights: they are loaded
// from checkpoints, never trained here.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "strata/nn/module.h"
#include "strata/ops.h"

namespace strata::nn {

// y = x @ weight^T + bias; weight [out_features, in_features], bias [out_features].
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true,
         DType dtype = DType::Float32);
  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  const Tensor& weight() const { return parameter("weight"); }
  bool has_bias() const { return has_parameter("bias"); }

  Value forward(Args& args) override;
  bool supports_layerwise_casting() const override { return true; }

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
};

// Rows of weight [num_embeddings, embedding_dim] picked by integer ids.
class Embedding : public Module {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, DType dtype = DType::Float32);
  const Tensor& weight() const { return parameter("weight"); }
  Value forward(Args& args) override;

 protected:
  // For model-specific embeddings with their own class name (Gemma3TextScaledWordEmbedding).
  Embedding(std::string class_name, std::int64_t num_embeddings, std::int64_t embedding_dim,
            DType dtype);
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t dim, double eps = 1e-5, bool elementwise_affine = true,
                     bool bias = true, DType dtype = DType::Float32);
  double eps() const { return eps_; }
  Value forward(Args& args) override;

 private:
  double eps_;
};

// transformers' LlamaRMSNorm: normalise in float32, cast back, multiply by weight [dim].
class RMSNorm : public Module {
 public:
  explicit RMSNorm(std::int64_t dim, double eps = 1e-6, DType dtype = DType::Float32);
  double eps() const { return eps_; }
  Value forward(Args& args) override;

 private:
  double eps_;
};

class SiLU : public Module {
 public:
  SiLU() : Module("SiLU") {}
  Value forward(Args& args) override;
};

class GELU : public Module {
 public:
  explicit GELU(ops::GeluApproximation approximation = ops::GeluApproximation::None)
      : Module("GELU"), approximation_(approximation) {}
  Value forward(Args& args) override;

 private:
  ops::GeluApproximation approximation_;
};

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Value forward(Args& args) override;
};

// Submodules named "0", "1", ...; a container with no forward.
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  explicit ModuleList(std::vector<std::shared_ptr<Module>> modules);

  template <std::derived_from<Module> M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    return register_module(std::to_string(size()), std::move(module));
  }
  std::size_t size() const { return direct_children().size(); }
  // Throws InvalidArgument naming the index and the size when out of range.
  Module& operator[](std::size_t index) const;

 protected:
  explicit ModuleList(std::string class_name) : Module(std::move(class_name)) {}
};

// Calls its submodules in order: the first gets the arguments, each next one the previous output.
class Sequential : public ModuleList {
 public:
  Sequential() : ModuleList(std::string("Sequential")) {}
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  explicit Sequential(std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules);
  Value forward(Args& args) override;
};

}  // namespace strata::nn

#pragma once
// Layers the model families share, under transformers' class names so no_split_module_classes
// and skip lists written for transformers match: RMSNorm (named per model, LlamaRMSNorm ...),
// GPT-2's Conv1D (weight stored [in, out]), and the activation modules.

#include <cstdint>
#include <string>

#include "strata/models/config.h"
#include "strata/nn/module.h"

namespace strata::models {

using nn::Args;
using nn::Value;

// transformers' <Prefix>RMSNorm: normalise in float32, cast back, times weight [dim].
class RMSNorm : public nn::Module {
 public:
  RMSNorm(std::string class_name, std::int64_t dim, double eps, DType dtype);
  double eps() const { return eps_; }
  Value forward(Args& args) override;

 private:
  double eps_;
};

// transformers' Conv1D (GPT-2): y = x @ weight + bias with weight [in_features, out_features],
// the transpose of Linear's layout, as GPT-2 checkpoints store it.
class Conv1D : public nn::Module {
 public:
  Conv1D(std::int64_t in_features, std::int64_t out_features, DType dtype);
  Value forward(Args& args) override;
  bool supports_layerwise_casting() const override { return true; }
};

// An activation as a module (transformers registers them as children: act_fn, act,
// activation_fn). Class names follow transformers' ACT2CLS.
class ActivationLayer : public nn::Module {
 public:
  explicit ActivationLayer(Activation activation);
  Activation activation() const { return activation_; }
  Value forward(Args& args) override;

 private:
  Activation activation_;
};

// Applies `activation` to x directly (used where a module call would add nothing).
Tensor apply_activation(Activation activation, const Tensor& x);

// Calls `module` (through its hook) on one tensor and returns the tensor it produces.
Tensor call(nn::Module& module, const Tensor& x);

}  // namespace strata::models

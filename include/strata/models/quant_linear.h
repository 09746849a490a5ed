#pragma once
// QuantizedLinear: a linear layer whose weight stays as the checkpoint stores it (packed ints or
// fp8 plus scales), under the checkpoint's tensor names, so load_checkpoint_and_dispatch, device
// maps, hooks, offload folders and the planner see the packed tensors and their packed sizes.
// forward dequantises on the fly (ops::quantized_linear).
//
//   format              class name        tensors (module-local names)
//   fp8                 FP8Linear         weight [out, in] f8e4m3, weight_scale_inv
//   awq (GEMM)          WQLinear_GEMM     qweight, qzeros, scales
//   gptq (v1)           QuantLinear       qweight, qzeros, scales, g_idx
//   compressed-tensors  CompressedLinear  weight_packed, weight_scale, weight_shape
//                                         (+ weight_zero_point when asymmetric)
// plus bias [out] in the model dtype when the layer has one.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "strata/models/quant_config.h"
#include "strata/nn/module.h"

namespace strata::models {

class QuantizedLinear : public nn::Module {
 public:
  QuantizedLinear(const QuantizationConfig& config, std::int64_t in_features,
                  std::int64_t out_features, bool bias, DType dtype);
  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  // The packed tensors as the op takes them (views of the parameters).
  ops::QuantizedWeight quantized_weight() const;
  // The same with each tensor given by `tensor(local name)` instead of the parameter (a routed
  // expert's stored copies, docs/moe-execution.md). The values are not checked here (GPTQ's g_idx,
  // compressed-tensors' weight_shape): quantized_weight() checks them once per layer.
  ops::QuantizedWeight quantized_weight(
      const std::function<Tensor(const std::string& name)>& tensor) const;
  const QuantizationConfig& config() const { return config_; }
  nn::Value forward(nn::Args& args) override;
  // The packed tensors and their scales keep their format's dtypes when a model is loaded in
  // another dtype; only the bias follows it.
  bool keeps_tensor_dtype(std::string_view local_name) const override {
    return local_name != "bias";
  }

 private:
  QuantizationConfig config_;
  std::int64_t in_features_, out_features_;
  // The values of g_idx (GPTQ) and weight_shape (compressed-tensors) are checked the first time
  // the layer runs with them materialised; they are the checkpoint's and do not change.
  mutable std::optional<bool> g_idx_sequential_;
  mutable bool weight_shape_checked_ = false;
};

// The linear module at `path`: a QuantizedLinear when `quant` is set and converts `path`, else an
// nn::Linear.
std::shared_ptr<nn::Module> make_linear(const QuantizationConfig* quant, const std::string& path,
                                        std::int64_t in_features, std::int64_t out_features,
                                        bool bias, DType dtype);

}  // namespace strata::models

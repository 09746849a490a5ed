#include "strata/models/quant_linear.h"

#include "strata/core/error.h"
#include "strata/nn/layers.h"

namespace strata::models {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

std::string class_for(ops::QuantFormat format) {
  switch (format) {
    case ops::QuantFormat::FP8:
      return "FP8Linear";
    case ops::QuantFormat::AWQ:
      return "WQLinear_GEMM";
    case ops::QuantFormat::GPTQ:
      return "QuantLinear";
    case ops::QuantFormat::CompressedTensors:
      return "CompressedLinear";
  }
  STRATA_ASSERT(false, "unknown quantization format {}", static_cast<int>(format));
}

}  // namespace

QuantizedLinear::QuantizedLinear(const QuantizationConfig& config, std::int64_t in_features,
                                 std::int64_t out_features, bool bias, DType dtype)
    : nn::Module(class_for(config.format)),
      config_(config),
      in_features_(in_features),
      out_features_(out_features) {
  const std::int64_t K = in_features, N = out_features, g = config.group_size;
  // Shapes the layout cannot express are NotSupported here, before any tensor is loaded.
  const auto need = [&](bool ok, std::string_view what) {
    STRATA_CHECK(ok, NotSupported,
                 "model config '{}': quant_method '{}' with a {}x{} linear layer: {}",
                 config.source, config.quant_method, K, N, what);
  };
  switch (config.format) {
    case ops::QuantFormat::FP8:
      create_parameter("weight", {N, K}, DType::Float8E4M3FN, 0.0);
      if (config.block_out > 0) {
        create_parameter("weight_scale_inv",
                         {ceil_div(N, config.block_out), ceil_div(K, config.block_in)},
                         DType::Float32, 1.0);
      } else {
        create_parameter("weight_scale_inv", {}, DType::Float32, 1.0);
      }
      break;
    case ops::QuantFormat::AWQ:
      need(N % 8 == 0 && K % g == 0,
           "AWQ needs out_features a multiple of 8 and in_features a multiple of group_size");
      create_parameter("qweight", {K, N / 8}, DType::Int32, 0.0);
      create_parameter("qzeros", {K / g, N / 8}, DType::Int32, 0.0);
      create_parameter("scales", {K / g, N}, DType::Float16, 0.0);
      break;
    case ops::QuantFormat::GPTQ: {
      const int per = 32 / config.bits;
      need(K % per == 0 && N % per == 0, "GPTQ needs in and out features multiples of 32/bits");
      const std::int64_t groups = g > 0 ? ceil_div(K, g) : 1;
      create_parameter("qweight", {K / per, N}, DType::Int32, 0.0);
      create_parameter("qzeros", {groups, N / per}, DType::Int32, 0.0);
      create_parameter("scales", {groups, N}, DType::Float16, 0.0);
      create_parameter("g_idx", {K}, DType::Int32, 0.0);
      break;
    }
    case ops::QuantFormat::CompressedTensors: {
      const int per = 32 / config.bits;
      const std::int64_t groups = g > 0 ? ceil_div(K, g) : 1;
      create_parameter("weight_packed", {N, ceil_div(K, per)}, DType::Int32, 0.0);
      create_parameter("weight_scale", {N, groups}, DType::Float32, 0.0);
      if (!config.symmetric) {
        create_parameter("weight_zero_point", {ceil_div(N, per), groups}, DType::Int32, 0.0);
      }
      create_parameter("weight_shape", {2}, DType::Int64, 0.0);
      break;
    }
  }
  if (bias) create_parameter("bias", {N}, dtype, 0.0);
}

ops::QuantizedWeight QuantizedLinear::quantized_weight(
    const std::function<Tensor(const std::string& name)>& tensor) const {
  ops::QuantizedWeight w;
  w.format = config_.format;
  w.in_features = in_features_;
  w.out_features = out_features_;
  w.bits = config_.bits;
  w.group_size = config_.group_size;
  switch (config_.format) {
    case ops::QuantFormat::FP8:
      w.block_out = config_.block_out;
      w.block_in = config_.block_in;
      w.weight = tensor("weight");
      w.scale = tensor("weight_scale_inv");
      break;
    case ops::QuantFormat::AWQ:
    case ops::QuantFormat::GPTQ:
      w.weight = tensor("qweight");
      w.zeros = tensor("qzeros");
      w.scale = tensor("scales");
      if (has_parameter("g_idx")) w.g_idx = tensor("g_idx");
      break;
    case ops::QuantFormat::CompressedTensors:
      w.weight = tensor("weight_packed");
      w.scale = tensor("weight_scale");
      if (has_parameter("weight_zero_point")) w.zeros = tensor("weight_zero_point");
      break;
  }
  return w;
}

ops::QuantizedWeight QuantizedLinear::quantized_weight() const {
  ops::QuantizedWeight w =
      quantized_weight([this](const std::string& name) { return parameter(name); });
  // g_idx's values are the checkpoint's: checked once (not on every GPU forward, where it would
  // be a device-to-host copy and a stream sync per layer).
  if (w.g_idx && !w.g_idx->is_meta()) {
    if (!g_idx_sequential_) g_idx_sequential_ = ops::check_gptq_g_idx(w);
    w.g_idx_sequential = g_idx_sequential_;
  }
  if (config_.format == ops::QuantFormat::CompressedTensors) {
    // weight_shape is [out, in] as saved; a different one is another layer's checkpoint.
    const Tensor& shape = parameter("weight_shape");
    if (!shape.is_meta() && !weight_shape_checked_) {  // once: a GPU copy syncs the stream
      const std::vector<std::int64_t> s = shape.to(Device::cpu()).to_vector<std::int64_t>();
      STRATA_CHECK(s == std::vector<std::int64_t>({out_features_, in_features_}), CheckpointError,
                   "CompressedLinear: 'weight_shape' is [{}, {}] but the layer is [{}, {}] "
                   "(out, in); the checkpoint does not belong to this config",
                   s.size() > 0 ? s[0] : -1, s.size() > 1 ? s[1] : -1, out_features_, in_features_);
      weight_shape_checked_ = true;
    }
  }
  return w;
}

nn::Value QuantizedLinear::forward(nn::Args& args) {
  const Tensor& x = args.tensor(0, class_name() + ".forward");
  const ops::QuantizedWeight w = quantized_weight();
  if (!has_parameter("bias")) return ops::quantized_linear(x, w);
  return ops::quantized_linear(x, w, parameter("bias"));
}

std::shared_ptr<nn::Module> make_linear(const QuantizationConfig* quant, const std::string& path,
                                        std::int64_t in_features, std::int64_t out_features,
                                        bool bias, DType dtype) {
  if (quant != nullptr && quant->converts(path)) {
    return std::make_shared<QuantizedLinear>(*quant, in_features, out_features, bias, dtype);
  }
  return std::make_shared<nn::Linear>(in_features, out_features, bias, dtype);
}

}  // namespace strata::models

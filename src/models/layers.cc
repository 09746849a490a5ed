#include "strata/models/layers.h"

#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {

RMSNorm::RMSNorm(std::string class_name, std::int64_t dim, double eps, DType dtype)
    : nn::Module(std::move(class_name)), eps_(eps) {
  create_parameter("weight", {dim}, dtype, 1.0);
}

Value RMSNorm::forward(Args& args) {
  return ops::rms_norm(args.tensor(0, class_name() + ".forward"), parameter("weight"), eps_);
}

Conv1D::Conv1D(std::int64_t in_features, std::int64_t out_features, DType dtype)
    : nn::Module("Conv1D") {
  create_parameter("weight", {in_features, out_features}, dtype, 0.0);
  create_parameter("bias", {out_features}, dtype, 0.0);
}

Value Conv1D::forward(Args& args) {
  const Tensor& x = args.tensor(0, "Conv1D.forward");
  // matmul reads the [in, out] weight in place (no transposed copy per call).
  return ops::add(ops::matmul(x, parameter("weight")), parameter("bias"));
}

namespace {
std::string activation_class(Activation activation) {
  switch (activation) {
    case Activation::SiLU:
      return "SiLUActivation";
    case Activation::Gelu:
      return "GELUActivation";
    case Activation::GeluTanh:
      return "NewGELUActivation";
    case Activation::ReLU:
      return "ReLU";
  }
  STRATA_ASSERT(false, "unknown activation {}", static_cast<int>(activation));
}
}  // namespace

ActivationLayer::ActivationLayer(Activation activation)
    : nn::Module(activation_class(activation)), activation_(activation) {}

Value ActivationLayer::forward(Args& args) {
  return apply_activation(activation_, args.tensor(0, class_name() + ".forward"));
}

Tensor apply_activation(Activation activation, const Tensor& x) {
  switch (activation) {
    case Activation::SiLU:
      return ops::silu(x);
    case Activation::Gelu:
      return ops::gelu(x, ops::GeluApproximation::None);
    case Activation::GeluTanh:
      return ops::gelu(x, ops::GeluApproximation::Tanh);
    case Activation::ReLU:
      return ops::relu(x);
  }
  STRATA_ASSERT(false, "unknown activation {}", static_cast<int>(activation));
}

Tensor call(nn::Module& module, const Tensor& x) { return module(Value(x)).tensor(); }

}  // namespace strata::models

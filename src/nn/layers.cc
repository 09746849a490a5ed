#include "strata/nn/layers.h"

#include "strata/core/error.h"

namespace strata::nn {

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias, DType dtype)
    : Module("Linear"), in_features_(in_features), out_features_(out_features) {
  STRATA_CHECK_ARG(in_features >= 0 && out_features >= 0,
                   "Linear: in_features ({}) and out_features ({}) must be non-negative",
                   in_features, out_features);
  create_parameter("weight", {out_features, in_features}, dtype, 0.0);
  if (bias) create_parameter("bias", {out_features}, dtype, 0.0);
}

Value Linear::forward(Args& args) {
  const Tensor& x = args.tensor(0, "Linear.forward");
  if (!has_bias()) return ops::linear(x, weight());
  return ops::linear(x, weight(), parameter("bias"));
}

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, DType dtype)
    : Embedding("Embedding", num_embeddings, embedding_dim, dtype) {}

Embedding::Embedding(std::string class_name, std::int64_t num_embeddings,
                     std::int64_t embedding_dim, DType dtype)
    : Module(std::move(class_name)) {
  create_parameter("weight", {num_embeddings, embedding_dim}, dtype, 0.0);
}

Value Embedding::forward(Args& args) {
  return ops::embedding(args.tensor(0, "Embedding.forward"), weight());
}

LayerNorm::LayerNorm(std::int64_t dim, double eps, bool elementwise_affine, bool bias, DType dtype)
    : Module("LayerNorm"), eps_(eps) {
  if (elementwise_affine) {
    create_parameter("weight", {dim}, dtype, 1.0);
    if (bias) create_parameter("bias", {dim}, dtype, 0.0);
  }
}

Value LayerNorm::forward(Args& args) {
  const Tensor& x = args.tensor(0, "LayerNorm.forward");
  std::optional<Tensor> weight, bias;
  if (has_parameter("weight")) weight = parameter("weight");
  if (has_parameter("bias")) bias = parameter("bias");
  return ops::layer_norm(x, weight, bias, eps_);
}

RMSNorm::RMSNorm(std::int64_t dim, double eps, DType dtype) : Module("RMSNorm"), eps_(eps) {
  create_parameter("weight", {dim}, dtype, 1.0);
}

Value RMSNorm::forward(Args& args) {
  return ops::rms_norm(args.tensor(0, "RMSNorm.forward"), parameter("weight"), eps_);
}

Value SiLU::forward(Args& args) { return ops::silu(args.tensor(0, "SiLU.forward")); }

Value GELU::forward(Args& args) {
  return ops::gelu(args.tensor(0, "GELU.forward"), approximation_);
}

Value ReLU::forward(Args& args) { return ops::relu(args.tensor(0, "ReLU.forward")); }

ModuleList::ModuleList(std::vector<std::shared_ptr<Module>> modules) : Module("ModuleList") {
  for (auto& module : modules) push_back(std::move(module));
}

Module& ModuleList::operator[](std::size_t index) const {
  STRATA_CHECK_ARG(index < size(), "{}: index {} is out of range (size {})", class_name(), index,
                   size());
  return *direct_children()[index].second;
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules)
    : ModuleList(std::string("Sequential")) {
  for (auto& module : modules) push_back(std::move(module));
}

Sequential::Sequential(std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules)
    : ModuleList(std::string("Sequential")) {
  for (auto& [name, module] : named_modules) register_module(std::move(name), std::move(module));
}

Value Sequential::forward(Args& args) {
  STRATA_CHECK_ARG(size() > 0, "Sequential.forward: the Sequential is empty");
  Value output = (*this)[0](std::move(args));
  for (std::size_t i = 1; i < size(); ++i) output = (*this)[i](std::move(output));
  return output;
}

}  // namespace strata::nn

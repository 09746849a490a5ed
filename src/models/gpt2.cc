#include "strata/models/gpt2.h"

#include <cmath>

#include "models/attention.h"
#include "models/families.h"
#include "models/forward_inputs.h"
#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

GPT2Attention::GPT2Attention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module("GPT2Attention"),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      head_dim_(c.head_dim) {
  scale_ = c.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(head_dim_)) : 1.0;
  if (c.scale_attn_by_inverse_layer_idx) scale_ /= static_cast<double>(layer_idx + 1);
  c_attn_ =
      register_module("c_attn", std::make_shared<Conv1D>(c.hidden_size, 3 * c.hidden_size, dtype));
  c_proj_ =
      register_module("c_proj", std::make_shared<Conv1D>(c.hidden_size, c.hidden_size, dtype));
}

Value GPT2Attention::forward(Args& args) {
  const std::string who = "GPT2Attention.forward";
  const Tensor& x = args.tensor(0, who);
  const std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);
  const Tensor qkv = call(*c_attn_, x);  // [batch, seq, 3 * embed]: q, k, v side by side
  const std::int64_t embed = num_heads_ * head_dim_;
  const auto part = [&](std::int64_t i) {
    return detail::split_heads(qkv.narrow(2, i * embed, embed), num_heads_, head_dim_);
  };
  const Tensor attn = detail::causal_attention(part(0), part(1), part(2), cache.get(), layer_idx_,
                                               scale_, 0, detail::layer_mask_argument(args, who));
  return call(*c_proj_, detail::merge_heads(attn));
}

GPT2MLP::GPT2MLP(const TransformerConfig& c, DType dtype) : nn::Module("GPT2MLP") {
  c_fc_ =
      register_module("c_fc", std::make_shared<Conv1D>(c.hidden_size, c.intermediate_size, dtype));
  c_proj_ = register_module("c_proj",
                            std::make_shared<Conv1D>(c.intermediate_size, c.hidden_size, dtype));
  act_ = register_module("act", std::make_shared<ActivationLayer>(c.activation));
}

Value GPT2MLP::forward(Args& args) {
  return call(*c_proj_, call(*act_, call(*c_fc_, args.tensor(0, "GPT2MLP.forward"))));
}

GPT2Block::GPT2Block(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module("GPT2Block") {
  const auto norm = [&] {
    return std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, true, true, dtype);
  };
  ln_1_ = register_module("ln_1", norm());
  attn_ = register_module("attn", std::make_shared<GPT2Attention>(c, layer_idx, dtype));
  ln_2_ = register_module("ln_2", norm());
  mlp_ = register_module("mlp", std::make_shared<GPT2MLP>(c, dtype));
}

Value GPT2Block::forward(Args& args) {
  Tensor hidden = args.tensor(0, "GPT2Block.forward");
  const Tensor attn = (*attn_)(Args({call(*ln_1_, hidden)}, std::move(args.keywords))).tensor();
  hidden = ops::add(on_device_of(attn, hidden), hidden);
  const Tensor mlp = call(*mlp_, call(*ln_2_, hidden));
  return ops::add(hidden, on_device_of(mlp, hidden));
}

GPT2Model::GPT2Model(const TransformerConfig& c, DType dtype)
    : nn::Module("GPT2Model"), max_positions_(c.max_position_embeddings) {
  wte_ =
      register_module("wte", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, dtype));
  wpe_ = register_module(
      "wpe", std::make_shared<nn::Embedding>(c.max_position_embeddings, c.hidden_size, dtype));
  h_ = register_module("h", std::make_shared<nn::ModuleList>());
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    h_->push_back(std::make_shared<GPT2Block>(c, i, dtype));
  }
  ln_f_ = register_module(
      "ln_f", std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, true, true, dtype));
}

Value GPT2Model::forward(Args& args) {
  const std::string who = "GPT2Model.forward";
  auto [ids, cache, past, cache_value, padding] = detail::forward_inputs(args, who);
  if (padding) padding->check_position_limit(max_positions_, who);

  const Tensor inputs = call(*wte_, ids);
  const Tensor positions = call(
      *wpe_, padding ? padding->position_ids(ids.device())
                     : detail::position_ids(past, ids.size(1), max_positions_, ids.device(), who));
  Tensor hidden = ops::add(inputs, on_device_of(positions, inputs));
  for (std::size_t i = 0; i < h_->size(); ++i) {
    Args block_args({hidden}, {{"past_key_values", cache_value}});
    if (padding) block_args.keywords.set("attention_mask", padding->additive(0, hidden.device()));
    hidden = (*h_)[i](std::move(block_args)).tensor();
  }
  return call(*ln_f_, hidden);
}

GPT2LMHeadModel::GPT2LMHeadModel(const TransformerConfig& c, DType dtype)
    : CausalLM("GPT2LMHeadModel", c) {
  auto base = std::make_shared<GPT2Model>(c, dtype);
  auto embed = base->wte();
  finish(std::move(base), std::move(embed), c.hidden_size, dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_gpt2(const TransformerConfig& config, DType dtype) {
  return std::make_shared<GPT2LMHeadModel>(config, dtype);
}
}  // namespace detail

}  // namespace strata::models

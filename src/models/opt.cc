#include "strata/models/opt.h"

#include <cmath>

#include "models/attention.h"
#include "models/families.h"
#include "models/forward_inputs.h"
#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

namespace {
// OPT's position table has two extra rows in front (a fairseq padding convention).
constexpr std::int64_t kPositionOffset = 2;
}  // namespace

OPTLearnedPositionalEmbedding::OPTLearnedPositionalEmbedding(std::int64_t positions,
                                                             std::int64_t dim, DType dtype)
    : nn::Module("OPTLearnedPositionalEmbedding"), positions_(positions) {
  create_parameter("weight", {positions + kPositionOffset, dim}, dtype, 0.0);
}

Value OPTLearnedPositionalEmbedding::forward(Args& args) {
  const std::string who = "OPTLearnedPositionalEmbedding.forward";
  const Tensor& table = parameter("weight");
  if (const Value* mask = args.keyword("attention_mask"); mask != nullptr && !mask->is_none()) {
    // transformers' rule for a padded batch: cumsum(mask) * mask - 1 (padding reads row 1).
    STRATA_CHECK_ARG(mask->is_tensor() && mask->tensor().dim() == 2,
                     "{}: attention_mask must be [batch, past + seq], got {}", who,
                     mask->describe());
    const Value* past = args.keyword("past_key_values_length");
    const std::int64_t past_length = past != nullptr ? past->to_int() : 0;
    const Tensor& m = mask->tensor();
    STRATA_CHECK_ARG(past_length >= 0 && past_length < m.size(1),
                     "{}: past_key_values_length {} must lie in [0, {}) for attention_mask {}", who,
                     past_length, m.size(1), m.describe());
    const detail::PaddingMask padding(m, m.size(0), m.size(1) - past_length, past_length, who);
    padding.check_position_limit(positions_, who);
    return ops::embedding(padding.opt_position_ids(kPositionOffset, table.device()), table);
  }
  const Tensor& ids = args.tensor(0, who);
  // Reading rows `id` of the table without its first two rows is reading rows id + 2.
  return ops::embedding(ids, table.narrow(0, kPositionOffset, table.size(0) - kPositionOffset));
}

OPTAttention::OPTAttention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module("OPTAttention"),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      head_dim_(c.head_dim) {
  const auto linear = [&] {
    return std::make_shared<nn::Linear>(c.hidden_size, c.hidden_size, c.enable_bias, dtype);
  };
  k_proj_ = register_module("k_proj", linear());
  v_proj_ = register_module("v_proj", linear());
  q_proj_ = register_module("q_proj", linear());
  out_proj_ = register_module("out_proj", linear());
}

Value OPTAttention::forward(Args& args) {
  const std::string who = "OPTAttention.forward";
  const Tensor& x = args.tensor(0, who);
  const std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);
  // transformers scales q before the product ("keep the original order of scaling") and
  // attends with scale 1.
  const double scaling = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  Tensor q = call(*q_proj_, x);
  q = ops::mul(q, Tensor::full({1}, scaling, q.dtype(), q.device()));
  const Tensor attn = detail::causal_attention(
      detail::split_heads(q, num_heads_, head_dim_),
      detail::split_heads(call(*k_proj_, x), num_heads_, head_dim_),
      detail::split_heads(call(*v_proj_, x), num_heads_, head_dim_), cache.get(), layer_idx_, 1.0,
      0, detail::layer_mask_argument(args, who));
  return call(*out_proj_, detail::merge_heads(attn));
}

OPTDecoderLayer::OPTDecoderLayer(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module("OPTDecoderLayer"), norm_before_(c.do_layer_norm_before) {
  const auto norm = [&] {
    return std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps,
                                           c.layer_norm_elementwise_affine, true, dtype);
  };
  self_attn_ = register_module("self_attn", std::make_shared<OPTAttention>(c, layer_idx, dtype));
  activation_fn_ =
      register_module("activation_fn", std::make_shared<ActivationLayer>(c.activation));
  self_attn_layer_norm_ = register_module("self_attn_layer_norm", norm());
  fc1_ = register_module("fc1", std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size,
                                                             c.enable_bias, dtype));
  fc2_ = register_module("fc2", std::make_shared<nn::Linear>(c.intermediate_size, c.hidden_size,
                                                             c.enable_bias, dtype));
  final_layer_norm_ = register_module("final_layer_norm", norm());
}

Value OPTDecoderLayer::forward(Args& args) {
  Tensor hidden = args.tensor(0, "OPTDecoderLayer.forward");
  Tensor x = norm_before_ ? call(*self_attn_layer_norm_, hidden) : hidden;
  const Tensor attn = (*self_attn_)(Args({x}, std::move(args.keywords))).tensor();
  hidden = ops::add(hidden, on_device_of(attn, hidden));
  if (!norm_before_) hidden = call(*self_attn_layer_norm_, hidden);
  x = norm_before_ ? call(*final_layer_norm_, hidden) : hidden;
  const Tensor mlp = call(*fc2_, call(*activation_fn_, call(*fc1_, x)));
  hidden = ops::add(hidden, on_device_of(mlp, hidden));
  return norm_before_ ? hidden : call(*final_layer_norm_, hidden);
}

OPTDecoder::OPTDecoder(const TransformerConfig& c, DType dtype) : nn::Module("OPTDecoder") {
  embed_tokens_ = register_module(
      "embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.word_embed_proj_dim, dtype));
  embed_positions_ =
      register_module("embed_positions", std::make_shared<OPTLearnedPositionalEmbedding>(
                                             c.max_position_embeddings, c.hidden_size, dtype));
  if (c.word_embed_proj_dim != c.hidden_size) {
    project_out_ = register_module(
        "project_out",
        std::make_shared<nn::Linear>(c.hidden_size, c.word_embed_proj_dim, false, dtype));
    project_in_ = register_module(
        "project_in",
        std::make_shared<nn::Linear>(c.word_embed_proj_dim, c.hidden_size, false, dtype));
  }
  if (c.final_layer_norm) {
    final_layer_norm_ = register_module(
        "final_layer_norm",
        std::make_shared<nn::LayerNorm>(c.hidden_size, c.norm_eps, c.layer_norm_elementwise_affine,
                                        true, dtype));
  }
  layers_ = register_module("layers", std::make_shared<nn::ModuleList>());
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    layers_->push_back(std::make_shared<OPTDecoderLayer>(c, i, dtype));
  }
}

Value OPTDecoder::forward(Args& args) {
  const std::string who = "OPTDecoder.forward";
  auto [ids, cache, past, cache_value, padding] = detail::forward_inputs(args, who);
  // Unpadded rows: transformers' cumsum(attention_mask) - 1 is past .. past + seq - 1.
  const Tensor positions =
      padding ? (*embed_positions_)(Args({Value()}, {{"attention_mask", padding->tensor()},
                                                     {"past_key_values_length", past}}))
                    .tensor()
              : call(*embed_positions_,
                     detail::position_ids(past, ids.size(1), embed_positions_->positions(),
                                          ids.device(), who));
  Tensor inputs = call(*embed_tokens_, ids);
  if (project_in_) inputs = call(*project_in_, inputs);
  Tensor hidden = ops::add(inputs, on_device_of(positions, inputs));
  for (std::size_t i = 0; i < layers_->size(); ++i) {
    Args layer_args({hidden}, {{"past_key_values", cache_value}});
    if (padding) layer_args.keywords.set("attention_mask", padding->additive(0, hidden.device()));
    hidden = (*layers_)[i](std::move(layer_args)).tensor();
  }
  if (final_layer_norm_) hidden = call(*final_layer_norm_, hidden);
  if (project_out_) hidden = call(*project_out_, hidden);
  return hidden;
}

OPTModel::OPTModel(const TransformerConfig& c, DType dtype) : nn::Module("OPTModel") {
  decoder_ = register_module("decoder", std::make_shared<OPTDecoder>(c, dtype));
}

Value OPTModel::forward(Args& args) { return (*decoder_)(std::move(args)); }

OPTForCausalLM::OPTForCausalLM(const TransformerConfig& c, DType dtype)
    : CausalLM("OPTForCausalLM", c) {
  auto base = std::make_shared<OPTModel>(c, dtype);
  auto embed = base->decoder()->embed_tokens();
  finish(std::move(base), std::move(embed), c.word_embed_proj_dim, dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_opt(const TransformerConfig& config, DType dtype) {
  return std::make_shared<OPTForCausalLM>(config, dtype);
}
}  // namespace detail

}  // namespace strata::models

// gpt-oss: attention with sinks, the decoder layer, the base model and the causal LM
// (transformers' modeling_gpt_oss.py). The mixture of experts is in gpt_oss_moe.cc.

#include "strata/models/gpt_oss.h"

#include <fmt/format.h>

#include <cmath>

#include "models/attention.h"
#include "models/families.h"
#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

GptOssAttention::GptOssAttention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module(c.class_name("Attention")),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      sliding_window_(c.sliding_windows.at(static_cast<std::size_t>(layer_idx))) {
  const std::int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
    return register_module(name, std::make_shared<nn::Linear>(in, out, bias, dtype));
  };
  q_proj_ = linear("q_proj", c.hidden_size, q_out, c.qkv_bias);
  k_proj_ = linear("k_proj", c.hidden_size, kv_out, c.qkv_bias);
  v_proj_ = linear("v_proj", c.hidden_size, kv_out, c.qkv_bias);
  o_proj_ = linear("o_proj", q_out, c.hidden_size, c.o_bias);
  create_parameter("sinks", {c.num_heads}, dtype, 0.0);
}

Value GptOssAttention::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const Value* rope = args.keyword("position_embeddings");
  STRATA_CHECK_ARG(rope != nullptr && rope->is_list() && rope->list().size() == 2,
                   "{}: position_embeddings must be [cos, sin] from the rotary module", who);
  const std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);

  Tensor q = detail::split_heads(call(*q_proj_, x), num_heads_, head_dim_);
  Tensor k = detail::split_heads(call(*k_proj_, x), num_kv_heads_, head_dim_);
  const Tensor v = detail::split_heads(call(*v_proj_, x), num_kv_heads_, head_dim_);
  // transformers rotates the two halves with cos/sin of half the head (_apply_rotary_emb): the
  // same numbers as rotate_half with the duplicated tables the rotary module gives.
  const Tensor cos = on_device_of(rope->list()[0].tensor(), q);
  const Tensor sin = on_device_of(rope->list()[1].tensor(), q);
  q = ops::rotary_embedding(q, cos, sin);
  k = ops::rotary_embedding(k, cos, sin);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const Tensor attn =
      detail::causal_attention(q, k, v, cache.get(), layer_idx_, scale, sliding_window_,
                               detail::layer_mask_argument(args, who), parameter("sinks"));
  return call(*o_proj_, detail::merge_heads(attn));
}

GptOssDecoderLayer::GptOssDecoderLayer(const TransformerConfig& c, std::int64_t layer_idx,
                                       DType dtype)
    : nn::Module(c.class_name("DecoderLayer")) {
  // transformers' registration order: self_attn, mlp, input_layernorm, post_attention_layernorm.
  self_attn_ = register_module("self_attn", std::make_shared<GptOssAttention>(c, layer_idx, dtype));
  mlp_ = register_module("mlp", std::make_shared<GptOssMLP>(c, layer_idx, dtype));
  const std::string norm = c.class_name("RMSNorm");
  input_layernorm_ = register_module(
      "input_layernorm", std::make_shared<RMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm",
                      std::make_shared<RMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
}

Value GptOssDecoderLayer::forward(Args& args) {
  Tensor hidden = args.tensor(0, class_name() + ".forward");
  return detail::pre_norm_block(hidden, args, *input_layernorm_, *self_attn_,
                                *post_attention_layernorm_, *mlp_);
}

namespace {

BaseModel::Parts gpt_oss_parts(const TransformerConfig& c, DType dtype) {
  return BaseModel::llama_parts(c, dtype,
                                [&c, dtype](std::int64_t i) -> std::shared_ptr<nn::Module> {
                                  return std::make_shared<GptOssDecoderLayer>(c, i, dtype);
                                });
}

}  // namespace

GptOssModel::GptOssModel(const TransformerConfig& c, DType dtype)
    : BaseModel(c.class_name("Model"), c, gpt_oss_parts(c, dtype)) {}

GptOssForCausalLM::GptOssForCausalLM(const TransformerConfig& c, DType dtype)
    : CausalLM(c.class_name("ForCausalLM"), c) {
  finish(std::make_shared<GptOssModel>(c, dtype), dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_gpt_oss(const TransformerConfig& config, DType dtype) {
  return std::make_shared<GptOssForCausalLM>(config, dtype);
}
}  // namespace detail

}  // namespace strata::models

// The base model loop shared by the rotary decoder families (strata/models/base_model.h).

#include "strata/models/base_model.h"

#include <utility>

#include "models/attention.h"
#include "models/base_model_pass.h"
#include "models/capped_attention.h"
#include "models/forward_inputs.h"
#include "strata/core/error.h"
#include "strata/models/layers.h"
#include "strata/models/rope.h"

namespace strata::models {

namespace detail {

ForwardInputs forward_inputs(const nn::Args& args, std::string_view who) {
  ForwardInputs in;
  in.ids = args.tensor(0, who);
  in.cache = cache_argument(args, who);
  in.past = in.cache ? in.cache->seq_length(0) : 0;
  in.cache_value = in.cache ? Value(in.cache) : Value();
  in.padding = PaddingMask::from_args(args, in.ids.size(0), in.ids.size(1), in.past, who);
  return in;
}

}  // namespace detail

BaseModel::BaseModel(std::string class_name, const TransformerConfig& c, Parts parts)
    : nn::Module(std::move(class_name)),
      sliding_windows_(c.sliding_windows),
      rope_layer_types_(std::move(parts.rope_layer_types)),
      finite_masks_(parts.finite_masks) {
  STRATA_ASSERT(parts.embed_tokens && parts.make_layer && parts.norm && parts.rotary_emb,
                "{}: base model parts missing", this->class_name());
  STRATA_ASSERT(rope_layer_types_.empty() ||
                    rope_layer_types_.size() == static_cast<std::size_t>(c.num_layers),
                "{}: {} rope layer types for {} layers", this->class_name(),
                rope_layer_types_.size(), c.num_layers);
  embed_tokens_ = register_module("embed_tokens", std::move(parts.embed_tokens));
  layers_ = register_module("layers", std::make_shared<nn::ModuleList>());
  for (std::int64_t i = 0; i < c.num_layers; ++i) layers_->push_back(parts.make_layer(i));
  norm_ = register_module("norm", std::move(parts.norm));
  rotary_emb_ = register_module("rotary_emb", std::move(parts.rotary_emb));
}

BaseModel::Parts BaseModel::llama_parts(
    const TransformerConfig& c, DType dtype,
    std::function<std::shared_ptr<nn::Module>(std::int64_t)> make_layer) {
  STRATA_ASSERT(c.rope.has_value(), "{}: config without rope parameters", c.class_name("Model"));
  Parts parts;
  parts.embed_tokens = std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, dtype);
  parts.make_layer = std::move(make_layer);
  parts.norm = std::make_shared<RMSNorm>(c.class_name("RMSNorm"), c.hidden_size, c.norm_eps, dtype);
  parts.rotary_emb = std::make_shared<RotaryEmbedding>(c.class_name("RotaryEmbedding"), *c.rope);
  return parts;
}

Value BaseModel::forward(Args& args) {
  const std::shared_ptr<Pass> pass = begin(args);
  run_layers(*pass, 0, layers_->size());
  return finish(*pass);
}

std::shared_ptr<BaseModel::Pass> BaseModel::begin(Args& args, bool all_ropes) {
  auto pass = std::make_shared<Pass>();
  pass->in = detail::forward_inputs(args, class_name() + ".forward");
  pass->hidden = call(*embed_tokens_, pass->in.ids);
  if (all_ropes) {
    for (std::size_t i = 0; i < layers_->size(); ++i) rope_for(*pass, i);
  }
  return pass;
}

// One [cos, sin] per rope (per layer type where they differ), computed when first needed.
const Value& BaseModel::rope_for(Pass& pass, std::size_t layer) {
  const std::string type = rope_layer_types_.empty() ? "" : rope_layer_types_.at(layer);
  auto it = pass.ropes.find(type);
  if (it != pass.ropes.end()) return it->second;
  Args rope_args({pass.hidden});
  if (pass.in.padding) {
    rope_args.keywords.set("position_ids", pass.in.padding->position_ids(Device::cpu()));
  } else {
    rope_args.keywords.set("past_length", pass.in.past);
  }
  if (!type.empty()) rope_args.keywords.set("layer_type", type);
  return pass.ropes.emplace(type, (*rotary_emb_)(std::move(rope_args))).first->second;
}

void BaseModel::run_layers(Pass& pass, std::size_t first, std::size_t end) {
  STRATA_ASSERT(first <= end && end <= layers_->size(), "{}: layers [{}, {}) of {}", class_name(),
                first, end, layers_->size());
  for (std::size_t i = first; i < end; ++i) {
    const std::int64_t window = sliding_windows_.at(i);
    Args layer_args({pass.hidden}, {{"position_embeddings", rope_for(pass, i)},
                                    {"past_key_values", pass.in.cache_value}});
    if (pass.in.padding) {
      Tensor mask = pass.in.padding->additive(window, pass.hidden.device());
      if (finite_masks_) {  // soft-capped attention
        auto it = pass.finite.find(window);
        if (it == pass.finite.end()) {
          it = pass.finite.emplace(window, detail::finite_mask(mask)).first;
        }
        mask = it->second;
      }
      layer_args.keywords.set("attention_mask", mask);
    }
    pass.hidden = (*layers_)[i](std::move(layer_args)).tensor();
  }
}

Tensor BaseModel::finish(Pass& pass) { return call(*norm_, pass.hidden); }

}  // namespace strata::models

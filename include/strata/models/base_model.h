#pragma once
// The base model of the rotary decoder families (transformers' <P>Model for Llama and its
// copies, Gemma 2/3, gpt-oss, and any family of the same shape): one module tree and one forward,
// with the families' differences as parts and options.
//
//   <P>Model      embed_tokens, layers (ModuleList), norm, rotary_emb (transformers' registration
//                 order, which decides state_dict and device-map order)
//
// forward(input_ids [batch, seq]; past_key_values: KVCache or none, attention_mask: 0/1
// [batch, past + seq] or none) -> final hidden states [batch, seq, hidden]:
//   hidden = embed_tokens(input_ids)
//   [cos, sin] = rotary_emb(hidden; past_length | position_ids (padded batch)
//                           [; layer_type when the rope differs per layer type])
//   each layer i: hidden = layers[i](hidden; position_embeddings, past_key_values,
//                                    attention_mask: the padded batch's additive mask for the
//                                    layer's sliding window)
//   return norm(hidden)

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/models/config.h"
#include "strata/nn/layers.h"
#include "strata/nn/module.h"

namespace strata::models {

using nn::Args;
using nn::Value;

class BaseModel : public nn::Module {
 public:
  // What a family gives the base model; the modules are registered in the order above.
  struct Parts {
    std::shared_ptr<nn::Embedding> embed_tokens;
    // Layer `i` of config.num_layers (called in increasing order).
    std::function<std::shared_ptr<nn::Module>(std::int64_t layer_idx)> make_layer;
    std::shared_ptr<nn::Module> norm;
    // forward(hidden; past_length | position_ids [; layer_type]) -> [cos, sin].
    std::shared_ptr<nn::Module> rotary_emb;
    // Per layer, the keyword layer_type given to rotary_emb (Gemma 3: one rope per layer type);
    // empty: one rope for every layer, without the keyword. Each distinct rope is computed once
    // per forward, when the first layer that needs it runs.
    std::vector<std::string> rope_layer_types;
    // Soft-capped attention takes a padded batch's mask with finite entries
    // (models/capped_attention.h: finite_mask).
    bool finite_masks = false;
  };

  // `config` gives the layer count and the sliding window of each layer (0 = full attention).
  BaseModel(std::string class_name, const TransformerConfig& config, Parts parts);

  // The Llama-shaped parts (nn::Embedding, <P>RMSNorm, <P>RotaryEmbedding of config.rope) with
  // `make_layer`'s layers: the decoder family, gpt-oss, DeepSeek.
  static Parts llama_parts(const TransformerConfig& config, DType dtype,
                           std::function<std::shared_ptr<nn::Module>(std::int64_t)> make_layer);

  const std::shared_ptr<nn::Embedding>& embed_tokens() const { return embed_tokens_; }
  const std::shared_ptr<nn::ModuleList>& layers() const { return layers_; }
  Value forward(Args& args) override;

  // forward in three steps, for callers that run the layers in stages (models/pipeline.h):
  // begin reads the arguments and embeds the tokens (with `all_ropes`, every rope is computed
  // now rather than when a layer first needs it), run_layers runs layers [first, end), finish
  // applies the final norm. forward is begin, run_layers over every layer, finish. A Pass
  // (defined in src/models/base_model_pass.h) holds one forward's state.
  struct Pass;
  std::shared_ptr<Pass> begin(Args& args, bool all_ropes = false);
  void run_layers(Pass& pass, std::size_t first, std::size_t end);
  Tensor finish(Pass& pass);

 private:
  std::shared_ptr<nn::Embedding> embed_tokens_;
  std::shared_ptr<nn::ModuleList> layers_;
  std::shared_ptr<nn::Module> norm_;
  std::shared_ptr<nn::Module> rotary_emb_;
  std::vector<std::int64_t> sliding_windows_;  // per layer, 0 = full attention
  std::vector<std::string> rope_layer_types_;
  bool finite_masks_;

  const Value& rope_for(Pass& pass, std::size_t layer);
};

}  // namespace strata::models

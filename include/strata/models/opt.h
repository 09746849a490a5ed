#pragma once
// OPT (transformers' modeling_opt.py): learned positions with an offset of 2, pre- or post-
// LayerNorm blocks (do_layer_norm_before), optional projections between the word-embedding width
// and the hidden width (OPT-350m), the head tied to embed_tokens.
//
//   OPTForCausalLM     model, lm_head
//   OPTModel           decoder
//   OPTDecoder         embed_tokens, embed_positions, project_out?, project_in?,
//                      final_layer_norm?, layers
//   OPTDecoderLayer    self_attn, activation_fn, self_attn_layer_norm, fc1, fc2,
//                      final_layer_norm
//   OPTAttention       k_proj, v_proj, q_proj, out_proj

#include <cstdint>
#include <memory>

#include "strata/models/causal_lm.h"
#include "strata/models/layers.h"
#include "strata/nn/layers.h"

namespace strata::models {

// An Embedding of max_position_embeddings + 2 rows read at position + 2 (OPT's offset).
// forward(position_ids int64) -> embeddings; or, as transformers, forward(none; attention_mask
// 0/1 [batch, past + seq], past_key_values_length) with positions cumsum(mask) * mask - 1 over
// the new tokens (padding is -1: row 1 of the table).
class OPTLearnedPositionalEmbedding : public nn::Module {
 public:
  OPTLearnedPositionalEmbedding(std::int64_t positions, std::int64_t dim, DType dtype);
  std::int64_t positions() const { return positions_; }
  Value forward(Args& args) override;

 private:
  std::int64_t positions_;
};

class OPTAttention : public nn::Module {
 public:
  OPTAttention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  // (hidden; past_key_values, attention_mask: additive [batch, 1, seq, past + seq]) -> hidden
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, head_dim_;
  std::shared_ptr<nn::Linear> k_proj_, v_proj_, q_proj_, out_proj_;
};

class OPTDecoderLayer : public nn::Module {
 public:
  OPTDecoderLayer(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  bool norm_before_;
  std::shared_ptr<OPTAttention> self_attn_;
  std::shared_ptr<ActivationLayer> activation_fn_;
  std::shared_ptr<nn::LayerNorm> self_attn_layer_norm_, final_layer_norm_;
  std::shared_ptr<nn::Linear> fc1_, fc2_;
};

// forward(input_ids; past_key_values, attention_mask: 0/1 [batch, past + seq] for a padded
// batch) -> final hidden states (word_embed_proj_dim wide).
class OPTDecoder : public nn::Module {
 public:
  OPTDecoder(const TransformerConfig& config, DType dtype);
  const std::shared_ptr<nn::Embedding>& embed_tokens() const { return embed_tokens_; }
  Value forward(Args& args) override;

 private:
  std::shared_ptr<nn::Embedding> embed_tokens_;
  std::shared_ptr<OPTLearnedPositionalEmbedding> embed_positions_;
  std::shared_ptr<nn::Linear> project_out_, project_in_;
  std::shared_ptr<nn::LayerNorm> final_layer_norm_;
  std::shared_ptr<nn::ModuleList> layers_;
};

class OPTModel : public nn::Module {
 public:
  OPTModel(const TransformerConfig& config, DType dtype);
  const std::shared_ptr<OPTDecoder>& decoder() const { return decoder_; }
  Value forward(Args& args) override;

 private:
  std::shared_ptr<OPTDecoder> decoder_;
};

class OPTForCausalLM : public CausalLM {
 public:
  OPTForCausalLM(const TransformerConfig& config, DType dtype);
};

}  // namespace strata::models

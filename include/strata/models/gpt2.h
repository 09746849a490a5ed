#pragma once
// GPT-2 (transformers' modeling_gpt2.py): learned positions, pre-LayerNorm blocks, Conv1D
// projections stored [in, out], the head tied to wte.
//
//   GPT2LMHeadModel   transformer, lm_head
//   GPT2Model         wte, wpe, h (ModuleList of GPT2Block), ln_f
//   GPT2Block         ln_1, attn, ln_2, mlp
//   GPT2Attention     c_attn (q, k, v fused), c_proj
//   GPT2MLP           c_fc, c_proj, act
// Dropout modules are left out (inference only; they hold no weights).

#include <cstdint>
#include <memory>

#include "strata/models/causal_lm.h"
#include "strata/models/layers.h"
#include "strata/nn/layers.h"

namespace strata::models {

// forward(hidden; past_key_values, attention_mask: additive [batch, 1, seq, past + seq]) -> hidden.
class GPT2Attention : public nn::Module {
 public:
  GPT2Attention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, head_dim_;
  double scale_;
  std::shared_ptr<Conv1D> c_attn_, c_proj_;
};

class GPT2MLP : public nn::Module {
 public:
  GPT2MLP(const TransformerConfig& config, DType dtype);
  Value forward(Args& args) override;

 private:
  std::shared_ptr<Conv1D> c_fc_, c_proj_;
  std::shared_ptr<ActivationLayer> act_;
};

class GPT2Block : public nn::Module {
 public:
  GPT2Block(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::shared_ptr<nn::LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<GPT2Attention> attn_;
  std::shared_ptr<GPT2MLP> mlp_;
};

// forward(input_ids; past_key_values, attention_mask: 0/1 [batch, past + seq] for a padded
// batch, positions then cumsum - 1 per row) -> final hidden states.
class GPT2Model : public nn::Module {
 public:
  GPT2Model(const TransformerConfig& config, DType dtype);
  const std::shared_ptr<nn::Embedding>& wte() const { return wte_; }
  Value forward(Args& args) override;

 private:
  std::int64_t max_positions_;
  std::shared_ptr<nn::Embedding> wte_, wpe_;
  std::shared_ptr<nn::ModuleList> h_;
  std::shared_ptr<nn::LayerNorm> ln_f_;
};

class GPT2LMHeadModel : public CausalLM {
 public:
  GPT2LMHeadModel(const TransformerConfig& config, DType dtype);
};

}  // namespace strata::models

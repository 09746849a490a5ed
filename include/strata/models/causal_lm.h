#pragma once
// CausalLM: the root of a causal language model built from config.json, with transformers'
// module tree (LlamaForCausalLM > model > layers.N > self_attn > q_proj ...), so state_dict()
// names are the checkpoint keys and no_split_module_classes() is transformers' _no_split_modules.
//
// forward(Args):
//   positional 0      input_ids, int64 [batch, seq] (on the device of the input embedding, or
//                     anywhere when a hook moves it there)
//   past_key_values   a KVCache (from make_cache) to read and extend, or absent/none
//   logits_to_keep    int: compute logits for the last N positions only (0 = all)
//   attention_mask    0/1 [batch, past + seq] (int64, int32 or bool, any device), 1 = token,
//                     0 = padding, over the cached and the new tokens, or absent/none
// returns a dict {"logits": [batch, kept, vocab] in the model dtype, "past_key_values": cache}.
//
// Every submodule is called through its operator(), so hooks attached anywhere in the tree
// (dispatch, offload, layerwise casting) run as they do in transformers.
//
// Padded batches: with an attention_mask, each row's positions count its tokens
// (transformers' generate(): cumsum(mask) - 1, padding at 1; OPT: its own rule) and attention
// sees the keys that are tokens, causal, within the sliding window counted in tokens. Each
// row's logits at its tokens then equal those of the row run alone; a padding query attends to
// nothing (zeros), so padding never makes NaNs. The cache keeps the padded entries; extend the
// mask by the new columns on each call. Without a mask, or with one of all ones, nothing is
// built: every row has the same length and positions start at the cache length.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/io/model_config.h"
#include "strata/models/config.h"
#include "strata/models/kv_cache.h"
#include "strata/models/tensor_parallel.h"
#include "strata/nn/layers.h"
#include "strata/nn/module.h"

namespace strata::models {

using nn::Args;
using nn::Value;

class BaseModel;

class CausalLM : public nn::Module {
 public:
  // The whole model's configuration (under tensor parallelism too; rank_config gives a rank's).
  const TransformerConfig& config() const { return config_; }
  // How this model is split over ranks (size 1: not split).
  const TensorParallel& tensor_parallel() const { return tp_; }
  std::vector<std::string> no_split_module_classes() const {
    return config_.no_split_module_classes();
  }
  std::string base_model_prefix() const { return config_.base_model_prefix(); }

  // The base model (transformers' base_model_prefix child), the token embedding and the head.
  nn::Module& base_model() const { return *base_; }
  nn::Embedding& input_embeddings() const { return *embed_tokens_; }
  nn::Linear& lm_head() const { return *lm_head_; }

  // A cache with one entry per layer; `reserve_tokens` sizes each layer's first allocation.
  std::shared_ptr<KVCache> make_cache(std::int64_t reserve_tokens = 0) const;

  Value forward(Args& args) final;
  // The head over the base model's final hidden states [batch, seq, hidden]: the last
  // `logits_to_keep` positions (0 = all), lm_head, Gemma 2's final soft-cap. forward ends so.
  Tensor head(Tensor hidden, std::int64_t logits_to_keep);

  struct Output {
    Tensor logits;
    std::shared_ptr<KVCache> cache;
  };
  // (*this)({input_ids}, {past_key_values, logits_to_keep, attention_mask}) with typed results;
  // a hook on the root runs.
  Output run(const Tensor& input_ids, const std::shared_ptr<KVCache>& cache = nullptr,
             std::int64_t logits_to_keep = 0,
             const std::optional<Tensor>& attention_mask = std::nullopt);

 protected:
  CausalLM(std::string class_name, TransformerConfig config, TensorParallel tp = {});
  // Registers the base model (under base_model_prefix()) and the head, tying the head to the
  // embedding when the config says so. `head_in` is the head's input width. Under tensor
  // parallelism the head is a VocabParallelHead, never tied (its shard of a tied embedding is
  // loaded from the embedding's tensor: tensor_parallel_shards).
  void finish(std::shared_ptr<nn::Module> base, std::shared_ptr<nn::Embedding> embed_tokens,
              std::int64_t head_in, DType dtype);
  // finish for a BaseModel: its embed_tokens, a head over config().hidden_size.
  void finish(std::shared_ptr<BaseModel> base, DType dtype);

 private:
  TransformerConfig config_;
  TensorParallel tp_;
  std::shared_ptr<nn::Module> base_;
  std::shared_ptr<nn::Embedding> embed_tokens_;
  std::shared_ptr<nn::Linear> lm_head_;
};

// Builds the model a config describes, weights in `dtype` (zeros, or meta tensors under
// init_empty_weights). Throws as parse_transformer_config.
std::shared_ptr<CausalLM> build_causal_lm(const TransformerConfig& config,
                                          DType dtype = DType::Float32);
// Rank `tp.rank`'s part of the model split over `tp.size` ranks (models/tensor_parallel.h);
// throws as check_tensor_parallel when the model cannot be split so. Load it with
// tensor_parallel_shards(config, tp) as the loader's shards.
std::shared_ptr<CausalLM> build_causal_lm(const TransformerConfig& config, DType dtype,
                                          const TensorParallel& tp);
std::shared_ptr<CausalLM> build_causal_lm(const io::ModelConfig& config,
                                          DType dtype = DType::Float32);

struct GenerationOptions {
  std::int64_t max_new_tokens = 16;
  // Where the prompt and each new token are placed: by default the input embedding's device
  // when its weight is materialised, else the cpu (a hook then moves them).
  std::optional<Device> input_device;
  // The prompt's 0/1 mask [batch, seq] (int64, int32 or bool) for prompts of different lengths
  // padded on the left (every row must end with a token); each step extends it by a column of
  // ones. Absent: every row is a token.
  std::optional<Tensor> attention_mask;
  // Decode steps through the fused CUDA graph (strata/models/decode_graph.h) when the model and
  // the step allow it (STRATA_DECODE_GRAPH=0 also turns it off); the module path otherwise.
  bool decode_graph = true;
  // The token ids each decode step feeds, given the step's argmax [batch, 1] (int64, cpu) and the
  // step's index (1 for the first decode step): by default the argmax itself (greedy). A
  // benchmark feeds other ids (strata bench --decode-input random) so that a random model's
  // routing does not lock onto one repeated token. GenerationResult::tokens keeps the argmaxes.
  std::function<Tensor(std::int64_t step, const Tensor& argmax)> next_input;
};

struct GenerationResult {
  Tensor tokens;  // int64 [batch, max_new_tokens] on the cpu
  double prefill_seconds = 0.0;
  std::vector<double> step_seconds;  // one per decoded token after the first
};

// Greedy decoding with a KV cache: one prefill over the prompt [batch, seq] (int64), then one
// single-token forward per new token, each picking the argmax of the last logits (the lowest id
// on ties, as torch.argmax). With options.attention_mask, each row's tokens are those of its
// prompt run alone (without its padding).
GenerationResult generate_greedy(CausalLM& model, const Tensor& prompt_ids,
                                 const GenerationOptions& options = {});

}  // namespace strata::models

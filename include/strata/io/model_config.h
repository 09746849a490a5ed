#pragma once
// config.json (a Hugging Face model configuration) read into typed fields the models use, with
// the whole document kept for anything else. Both spellings transformers has written are read:
// "rope_scaling" + "rope_theta" and "torch_dtype" (up to v4) and "rope_parameters" and "dtype"
// (v5). GPT-2 style names (n_embd, n_layer, n_head, n_positions, n_inner) fill the standard
// fields when those are absent, as transformers' attribute_map does.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/dtype.h"

namespace strata::io {

// RoPE scaling parameters ("rope_scaling" or "rope_parameters"). Fields absent from the file
// stay empty; raw_json holds the whole object.
struct RopeScaling {
  std::string rope_type;  // "default", "linear", "dynamic", "yarn", "llama3", "longrope", ...
  std::optional<double> factor;
  std::optional<std::int64_t> original_max_position_embeddings;
  std::optional<double> low_freq_factor;   // llama3
  std::optional<double> high_freq_factor;  // llama3
  std::optional<double> beta_fast;         // yarn
  std::optional<double> beta_slow;         // yarn
  std::optional<double> attention_factor;  // yarn, longrope
  std::optional<double> mscale;            // yarn (deepseek)
  std::optional<double> mscale_all_dim;    // yarn (deepseek)
  std::vector<double> short_factor;        // longrope
  std::vector<double> long_factor;         // longrope
  std::string raw_json;
};

class ModelConfig {
 public:
  std::string source;  // the file it came from, for messages
  std::string model_type;
  std::vector<std::string> architectures;
  std::optional<std::int64_t> hidden_size;
  std::optional<std::int64_t> num_hidden_layers;
  std::optional<std::int64_t> num_attention_heads;
  // Defaults to num_attention_heads when absent (multi-head attention), as transformers does.
  std::optional<std::int64_t> num_key_value_heads;
  std::optional<std::int64_t> head_dim;
  std::optional<std::int64_t> intermediate_size;
  std::optional<std::int64_t> vocab_size;
  std::optional<std::int64_t> max_position_embeddings;
  std::optional<double> rms_norm_eps;
  std::optional<double> rope_theta;
  // Absent, or present with rope_type "default" and nothing else, means no scaling.
  std::optional<RopeScaling> rope_scaling;
  // Absent means "the model class decides" (transformers' default differs per model).
  std::optional<bool> tie_word_embeddings;
  // torch_dtype / dtype; absent or "auto" leaves it empty.
  std::optional<DType> torch_dtype;

  // The required form of a field for models: the value, or CheckpointError naming the file and
  // the key.
  std::int64_t require_int(std::string_view key) const;
  double require_double(std::string_view key) const;

  // Any top-level key of the document (nullopt when absent or null; CheckpointError naming the
  // key when present with another type).
  bool has(std::string_view key) const;
  std::optional<std::int64_t> get_int(std::string_view key) const;
  std::optional<double> get_double(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // The value of a top-level key as JSON text ("" when absent).
  std::string get_json(std::string_view key) const;
  // The whole document as JSON text.
  std::string raw_json() const;

  // The parsed document (an nlohmann::json), for code inside the library: src/io/json_util.h.
  const std::shared_ptr<const void>& document() const { return document_; }

 private:
  friend ModelConfig parse_model_config(std::string_view, std::string_view);
  std::shared_ptr<const void> document_;
};

// Parses config.json text. Throws CheckpointError naming `source` for invalid JSON, duplicate
// keys, or a typed field of the wrong type (a string hidden_size, a negative layer count).
ModelConfig parse_model_config(std::string_view json_text, std::string_view source);
// Reads `path`, or `path`/config.json when `path` is a folder.
ModelConfig read_model_config(const std::filesystem::path& path);

}  // namespace strata::io

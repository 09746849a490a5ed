#pragma once
// generation_config.json: the decoding defaults a model ships with (transformers'
// GenerationConfig). Read from a model folder; eos/bos/pad fall back to config.json when
// generation_config.json lacks them (as transformers' GenerationConfig.from_model_config does).
// Defaults are transformers' generation defaults (do_sample false, temperature 1, top_k 50,
// top_p 1, repetition_penalty 1): GenerationConfig() holds them in transformers 4; transformers 5
// (recorded in tests/fixtures/engine/sampler_cases.json) leaves the fields None there and
// applies the defaults inside generate().

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::text {

struct GenerationConfig {
  std::string source;  // the file(s) read, for messages ("" when nothing was found)
  std::vector<std::int64_t> eos_token_ids;  // eos_token_id: an int or a list of ints
  std::optional<std::int64_t> bos_token_id;
  std::optional<std::int64_t> pad_token_id;
  bool do_sample = false;
  double temperature = 1.0;
  std::int64_t top_k = 50;
  double top_p = 1.0;
  std::optional<double> min_p;
  double repetition_penalty = 1.0;
  std::optional<std::int64_t> max_new_tokens;
  std::optional<std::int64_t> max_length;  // prompt + new tokens (transformers' default: 20)
};

// Parses generation_config.json text. A field of the wrong type (a string temperature, a float
// eos_token_id, a negative top_k) throws CheckpointError naming `source` and the field; unknown
// fields and nulls are ignored.
GenerationConfig parse_generation_config(std::string_view json_text, std::string_view source);

// `model_dir`/generation_config.json, then eos/bos/pad from `model_dir`/config.json where the
// first lacks them. Absent files give the defaults; unreadable or malformed ones throw
// (IoError / CheckpointError naming the file).
GenerationConfig read_generation_config(const std::filesystem::path& model_dir);

}  // namespace strata::text

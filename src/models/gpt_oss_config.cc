// The gpt-oss keys of config.json that the shared decoder parsing does not cover: the clamped
// SwiGLU's constants, GptOssConfig's YaRN default, and the MXFP4 quantization_config (which only
// ever packs the experts: transformers' Mxfp4HfQuantizer replaces GptOssExperts, nothing else).

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "io/json_util.h"
#include "models/families.h"
#include "strata/core/error.h"

namespace strata::models::detail {
namespace {

using Json = nlohmann::json;

// transformers' should_convert_module: an entry of modules_to_not_convert keeps a module dense
// when it matches (as a regular expression, from the start) the module's dotted name.
bool kept_dense(const std::string& path, const std::vector<std::string>& patterns,
                const std::string& source) {
  for (const std::string& p : patterns) {
    try {
      if (std::regex_search(path, std::regex(p), std::regex_constants::match_continuous)) {
        return true;
      }
    } catch (const std::regex_error&) {
      STRATA_THROW(CheckpointError,
                   "model config '{}': quantization_config.modules_to_not_convert entry '{}' is "
                   "not a valid regular expression; fix config.json",
                   source, p);
    }
  }
  return false;
}

void parse_mxfp4(const Json& q, TransformerConfig& t) {
  const auto method = q.find("quant_method");
  if (method == q.end() || !method->is_string()) {
    STRATA_THROW(CheckpointError,
                 "model config '{}': quantization_config.quant_method must be a string; fix "
                 "config.json",
                 t.source);
  }
  if (method->get<std::string>() != "mxfp4") {
    STRATA_THROW(NotSupported,
                 "model config '{}': quantization_config.quant_method = \"{}\" is not supported "
                 "for gpt_oss; Strata loads gpt-oss experts dense or as \"mxfp4\"",
                 t.source, method->get<std::string>());
  }
  std::vector<std::string> patterns;
  if (const auto it = q.find("modules_to_not_convert"); it != q.end() && !it->is_null()) {
    if (!it->is_array()) {
      STRATA_THROW(CheckpointError,
                   "model config '{}': quantization_config.modules_to_not_convert must be a list "
                   "of strings; fix config.json",
                   t.source);
    }
    for (const Json& v : *it) {
      if (!v.is_string()) {
        STRATA_THROW(CheckpointError,
                     "model config '{}': quantization_config.modules_to_not_convert must be a "
                     "list of strings; fix config.json",
                     t.source);
      }
      patterns.push_back(v.get<std::string>());
    }
  }
  t.mxfp4_experts.assign(static_cast<std::size_t>(t.num_layers), false);
  bool any = false;
  for (std::int64_t i = 0; i < t.num_layers; ++i) {
    const std::string path = fmt::format("model.layers.{}.mlp.experts", i);
    any |= t.mxfp4_experts[static_cast<std::size_t>(i)] = !kept_dense(path, patterns, t.source);
  }
  // MXFP4 blocks hold 32 inputs: both expert projections need whole blocks.
  if (any && (t.hidden_size % 32 != 0 || t.intermediate_size % 32 != 0)) {
    STRATA_THROW(NotSupported,
                 "model config '{}': MXFP4 experts need hidden_size ({}) and intermediate_size "
                 "({}) to be multiples of 32 (one scale per block of 32 inputs)",
                 t.source, t.hidden_size, t.intermediate_size);
  }
}

}  // namespace

void parse_gpt_oss_config(const io::ModelConfig& config, TransformerConfig& t) {
  t.swiglu_alpha = config.get_double("swiglu_alpha").value_or(1.702);
  t.swiglu_limit = config.get_double("swiglu_limit").value_or(7.0);
  if (!(t.swiglu_limit > 0.0)) {
    STRATA_THROW(CheckpointError,
                 "model config '{}': swiglu_limit is {}; it must be positive (the clamp of the "
                 "experts' gate and up projections)",
                 t.source, t.swiglu_limit);
  }
  if (!config.rope_scaling) {
    // GptOssConfig.__post_init__: no rope_parameters -> YaRN over a 4096-token original context.
    RopeConfig& rope = *t.rope;
    rope.type = "yarn";
    rope.factor = 32.0;
    rope.beta_fast = 32.0;
    rope.beta_slow = 1.0;
    rope.truncate = false;
    rope.original_max_position_embeddings = 4096;
  }
  const Json& doc = io::detail::config_document(config.document());
  if (const auto q = doc.find("quantization_config"); q != doc.end() && !q->is_null()) {
    if (!q->is_object()) {
      STRATA_THROW(CheckpointError,
                   "model config '{}': quantization_config must be an object; fix config.json",
                   t.source);
    }
    parse_mxfp4(*q, t);
  }
}

}  // namespace strata::models::detail

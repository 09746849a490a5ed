// parse_transformer_config: config.json -> TransformerConfig, with transformers' per-class
// defaults for optional keys and one clear error per missing or inconsistent field.

#include "strata/models/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "io/json_util.h"
#include "models/config_families.h"
#include "models/config_parts.h"
#include "models/families.h"
#include "strata/core/error.h"

namespace strata::models {
namespace {

using Json = nlohmann::json;

struct TypeInfo {
  std::string_view model_type;
  Architecture architecture;
  double rms_norm_eps;
  double rope_theta;
  std::int64_t max_position_embeddings;
  bool tie_word_embeddings;
};

// transformers' config class defaults (v5) for the keys a config.json may omit.
constexpr TypeInfo kTypes[] = {
    {"llama", Architecture::Llama, 1e-6, 10000.0, 2048, false},
    {"mistral", Architecture::Mistral, 1e-6, 10000.0, 4096 * 32, false},
    {"qwen2", Architecture::Qwen2, 1e-6, 10000.0, 32768, false},
    {"qwen3", Architecture::Qwen3, 1e-6, 10000.0, 32768, false},
    {"mixtral", Architecture::Mixtral, 1e-5, 1000000.0, 4096 * 32, false},
    {"gpt2", Architecture::GPT2, 1e-5, 0.0, 1024, true},
    {"opt", Architecture::OPT, 1e-5, 0.0, 2048, true},
    {"qwen2_moe", Architecture::Qwen2Moe, 1e-6, 10000.0, 32768, false},
    {"qwen3_moe", Architecture::Qwen3Moe, 1e-6, 10000.0, 32768, false},
    {"phi3", Architecture::Phi3, 1e-5, 10000.0, 4096, false},
    {"olmo2", Architecture::Olmo2, 1e-5, 10000.0, 2048, false},
    {"smollm3", Architecture::SmolLM3, 1e-6, 2000000.0, 32768, true},
    {"gemma2", Architecture::Gemma2, 1e-6, 10000.0, 8192, true},
    {"gemma3_text", Architecture::Gemma3Text, 1e-6, 1000000.0, 131072, true},
    {"gpt_oss", Architecture::GptOss, 1e-5, 150000.0, 131072, false},
    {"deepseek_v2", Architecture::DeepseekV2, 1e-6, 10000.0, 2048, false},
    {"deepseek_v3", Architecture::DeepseekV3, 1e-6, 10000.0, 4096, false},
};

class Reader {
 public:
  explicit Reader(const io::ModelConfig& c)
      : c_(c), doc_(io::detail::config_document(c.document())) {}

  [[noreturn]] void fail(std::string_view what) const {
    STRATA_THROW(CheckpointError, "model config '{}' ({}): {}", c_.source, c_.model_type, what);
  }
  std::int64_t required(const std::optional<std::int64_t>& value, std::string_view key) const {
    if (!value)
      fail(fmt::format("'{}' is missing; a {} model needs it, add it to config.json", key,
                       c_.model_type));
    if (*value <= 0) fail(fmt::format("'{}' is {}; it must be positive", key, *value));
    return *value;
  }
  // Present and not null.
  bool has(std::string_view key) const { return c_.has(key); }
  // Present, possibly null (null and absent differ for Mistral's sliding_window).
  bool present(std::string_view key) const { return doc_.contains(std::string(key)); }
  bool flag(std::string_view key, bool fallback) const {
    return c_.get_bool(key).value_or(fallback);
  }
  std::vector<std::string> strings(std::string_view key) const {
    std::vector<std::string> out;
    const auto it = doc_.find(std::string(key));
    if (it == doc_.end() || it->is_null()) return out;
    if (!it->is_array()) fail(fmt::format("'{}' must be a list of strings", key));
    for (const Json& v : *it) {
      if (!v.is_string()) fail(fmt::format("'{}' must be a list of strings", key));
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  const io::ModelConfig& config() const { return c_; }
  const Json* document() const { return &doc_; }
  // A top-level object, or nullptr.
  const Json* object(std::string_view key) const {
    const auto it = doc_.find(std::string(key));
    return it != doc_.end() && it->is_object() ? &*it : nullptr;
  }

 private:
  const io::ModelConfig& c_;
  const Json& doc_;
};

Activation parse_activation(const Reader& r, std::string_view key, std::string_view fallback) {
  const std::string name = r.config().get_string(key).value_or(std::string(fallback));
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
  if (name == "relu") return Activation::ReLU;
  STRATA_THROW(NotSupported,
               "model config '{}': {} '{}' is not supported; Strata implements silu, swish, gelu, "
               "gelu_new, gelu_pytorch_tanh and relu",
               r.config().source, key, name);
}

RopeConfig parse_rope(const Reader& r, const TypeInfo& info, std::int64_t head_dim,
                      std::int64_t max_positions) {
  const io::ModelConfig& c = r.config();
  RopeConfig rope;
  rope.theta = c.rope_theta.value_or(info.rope_theta);
  if (rope.theta <= 1.0) r.fail(fmt::format("rope_theta is {}; it must be above 1", rope.theta));
  rope.max_position_embeddings = max_positions;
  // partial_rotary_factor may sit inside rope_parameters (v5) or at the top level (v4); the top
  // level wins, as transformers' standardize_rope_params copies it over the nested one.
  double partial = 1.0;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const Json* params = r.object(key);
    if (params && params->contains("partial_rotary_factor") &&
        (*params)["partial_rotary_factor"].is_number()) {
      partial = (*params)["partial_rotary_factor"].get<double>();
    }
  }
  partial = c.get_double("partial_rotary_factor").value_or(partial);
  rope.dim = detail::rotary_dim(c, head_dim, partial);
  Json raw = Json::object();
  if (c.rope_scaling) raw = Json::parse(c.rope_scaling->raw_json);
  if (!c.rope_scaling) return rope;

  const io::RopeScaling& s = *c.rope_scaling;
  rope.type = s.rope_type;
  // Phi3Config reads the old names "su" and "yarn" as longrope.
  if (info.architecture == Architecture::Phi3 && (rope.type == "su" || rope.type == "yarn")) {
    rope.type = "longrope";
  }
  const auto need = [&](const std::optional<double>& v, std::string_view key) {
    if (!v)
      r.fail(
          fmt::format("rope type '{}' needs '{}' in rope_parameters/rope_scaling", rope.type, key));
    return *v;
  };
  if (rope.type == "linear" || rope.type == "dynamic") {
    rope.factor = need(s.factor, "factor");
  } else if (rope.type == "llama3") {
    rope.factor = need(s.factor, "factor");
    rope.low_freq_factor = need(s.low_freq_factor, "low_freq_factor");
    rope.high_freq_factor = need(s.high_freq_factor, "high_freq_factor");
    if (!s.original_max_position_embeddings) {
      r.fail("rope type 'llama3' needs 'original_max_position_embeddings' in rope_parameters");
    }
    rope.original_max_position_embeddings = *s.original_max_position_embeddings;
    if (rope.high_freq_factor == rope.low_freq_factor) {
      r.fail("llama3 rope: high_freq_factor equals low_freq_factor; they must differ");
    }
  } else if (rope.type == "yarn") {
    rope.original_max_position_embeddings =
        s.original_max_position_embeddings.value_or(max_positions);
    // transformers: factor None -> max_position_embeddings / original_max_position_embeddings.
    rope.factor = s.factor.value_or(static_cast<double>(max_positions) /
                                    static_cast<double>(rope.original_max_position_embeddings));
    rope.attention_factor = s.attention_factor;
    // `get("beta_fast") or 32`: zero means the default too.
    if (s.beta_fast && *s.beta_fast != 0.0) rope.beta_fast = *s.beta_fast;
    if (s.beta_slow && *s.beta_slow != 0.0) rope.beta_slow = *s.beta_slow;
    rope.mscale = s.mscale;
    rope.mscale_all_dim = s.mscale_all_dim;
    if (raw.contains("truncate") && raw["truncate"].is_boolean()) {
      rope.truncate = raw["truncate"].get<bool>();
    }
  } else if (rope.type == "longrope") {
    detail::parse_longrope(c, info.architecture, s, rope);
  } else {
    STRATA_THROW(NotSupported,
                 "model config '{}': rope type '{}' is not supported; Strata implements default, "
                 "linear, dynamic, yarn, llama3 and longrope",
                 c.source, rope.type);
  }
  if (rope.factor <= 0.0)
    r.fail(fmt::format("rope factor is {}; it must be positive", rope.factor));
  if (rope.original_max_position_embeddings < 0) {
    r.fail("rope original_max_position_embeddings must be positive");
  }
  return rope;
}

// Per-layer sliding windows: layer_types when the file has them (transformers v5), else the
// class rules (Mistral/Mixtral: every layer; Qwen2/Qwen3: layers >= max_window_layers when
// use_sliding_window).
std::vector<std::int64_t> parse_sliding_windows(const Reader& r, Architecture arch,
                                                std::int64_t layers) {
  const io::ModelConfig& c = r.config();
  if (arch == Architecture::Phi3 || arch == Architecture::Olmo2 || arch == Architecture::SmolLM3) {
    return detail::family_sliding_windows(c, arch, layers);
  }
  std::optional<std::int64_t> window;
  if (arch == Architecture::Mistral) {
    window = r.present("sliding_window") ? c.get_int("sliding_window") : 4096;
  } else if (arch == Architecture::Mixtral) {
    window = c.get_int("sliding_window");
  } else if (arch == Architecture::GptOss) {
    window = r.present("sliding_window") ? c.get_int("sliding_window") : 128;
  } else if (r.flag("use_sliding_window", false)) {
    window = r.present("sliding_window") ? c.get_int("sliding_window") : 4096;
  }
  if (window && *window <= 0) {
    r.fail(fmt::format("sliding_window is {}; it must be positive or null", *window));
  }
  std::vector<std::int64_t> windows(static_cast<std::size_t>(layers), 0);
  const std::vector<std::string> types = r.strings("layer_types");
  if (!types.empty()) {
    if (static_cast<std::int64_t>(types.size()) != layers) {
      r.fail(fmt::format("'layer_types' lists {} layers but num_hidden_layers is {}", types.size(),
                         layers));
    }
    for (std::size_t i = 0; i < types.size(); ++i) {
      if (types[i] == "sliding_attention") {
        // transformers leaves such a layer at full attention when sliding_window is null.
        windows[i] = window.value_or(0);
      } else if (types[i] != "full_attention") {
        STRATA_THROW(NotSupported,
                     "model config '{}': layer_types[{}] is '{}'; Strata implements "
                     "full_attention and sliding_attention",
                     c.source, i, types[i]);
      }
    }
    return windows;
  }
  if (arch == Architecture::GptOss) {  // GptOssConfig: sliding, full, sliding, ... from layer 0
    for (std::int64_t i = 0; i < layers; i += 2)
      windows[static_cast<std::size_t>(i)] = window.value_or(0);
    return windows;
  }
  if (!window) return windows;
  if (arch == Architecture::Qwen2Moe) {
    // Qwen2MoeConfig's layer_types rule (v5): even layers below max_window_layers.
    const std::int64_t below = c.get_int("max_window_layers").value_or(28);
    for (std::int64_t i = 0; i < std::min(below, layers); i += 2) {
      windows[static_cast<std::size_t>(i)] = *window;
    }
    return windows;
  }
  // Qwen3MoeAttention applies the window to every layer.
  const bool every_layer = arch == Architecture::Mistral || arch == Architecture::Mixtral ||
                           arch == Architecture::Qwen3Moe;
  const std::int64_t first = every_layer ? 0 : c.get_int("max_window_layers").value_or(28);
  for (std::int64_t i = std::max<std::int64_t>(first, 0); i < layers; ++i) {
    windows[static_cast<std::size_t>(i)] = *window;
  }
  return windows;
}

// Integers of a list key (mlp_only_layers); absent or null: empty.
std::vector<std::int64_t> integers(const Reader& r, const Json* doc, std::string_view key) {
  std::vector<std::int64_t> out;
  if (doc == nullptr) return out;
  const auto it = doc->find(std::string(key));
  if (it == doc->end() || it->is_null()) return out;
  if (!it->is_array()) r.fail(fmt::format("'{}' must be a list of layer indices", key));
  for (const Json& v : *it) {
    if (!v.is_number_integer()) r.fail(fmt::format("'{}' must be a list of layer indices", key));
    out.push_back(v.get<std::int64_t>());
  }
  return out;
}

// The mixture-of-experts keys: Mixtral (every layer sparse, renormalised top-k), Qwen2-MoE and
// Qwen3-MoE (decoder_sparse_step, mlp_only_layers, norm_topk_prob; Qwen2-MoE's shared expert).
void parse_experts(const Reader& r, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  const bool qwen =
      t.architecture == Architecture::Qwen2Moe || t.architecture == Architecture::Qwen3Moe;
  const bool gpt_oss = t.architecture == Architecture::GptOss;  // num_local_experts, as Mixtral
  if (t.architecture != Architecture::Mixtral && !gpt_oss && !qwen) return;
  const char* experts_key = qwen ? "num_experts" : "num_local_experts";
  // transformers 5.17's Qwen3MoeConfig saves num_experts as num_local_experts (attribute_map);
  // released Qwen checkpoints spell it num_experts. Either is read.
  const std::optional<std::int64_t> experts =
      qwen && !r.has("num_experts") ? c.get_int("num_local_experts") : c.get_int(experts_key);
  t.num_experts = r.required(experts, experts_key);
  t.num_experts_per_tok = r.required(c.get_int("num_experts_per_tok"), "num_experts_per_tok");
  if (t.num_experts_per_tok > t.num_experts) {
    r.fail(fmt::format("num_experts_per_tok {} exceeds {} {}", t.num_experts_per_tok, experts_key,
                       t.num_experts));
  }
  t.sparse_layers.assign(static_cast<std::size_t>(t.num_layers), true);
  if (!qwen) {
    t.moe_intermediate_size = t.intermediate_size;
    t.norm_topk_prob = true;
    return;
  }
  t.moe_intermediate_size = r.required(c.get_int("moe_intermediate_size"), "moe_intermediate_size");
  t.norm_topk_prob = r.flag("norm_topk_prob", false);
  if (t.architecture == Architecture::Qwen2Moe) {
    t.shared_expert_intermediate_size =
        r.required(c.get_int("shared_expert_intermediate_size"), "shared_expert_intermediate_size");
  }
  const std::int64_t step = c.get_int("decoder_sparse_step").value_or(1);
  if (step <= 0) {
    r.fail(fmt::format("decoder_sparse_step is {}; it must be positive (1: every layer sparse)",
                       step));
  }
  const std::vector<std::int64_t> dense = integers(r, r.document(), "mlp_only_layers");
  for (std::int64_t i = 0; i < t.num_layers; ++i) {
    const bool listed = std::find(dense.begin(), dense.end(), i) != dense.end();
    t.sparse_layers[static_cast<std::size_t>(i)] = !listed && (i + 1) % step == 0;
  }
  // router_aux_loss_coef, output_router_logits and router_jitter_noise act in training only.
}

void parse_decoder_family(const Reader& r, const TypeInfo& info, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  t.hidden_size = r.required(c.hidden_size, "hidden_size");
  t.num_layers = r.required(c.num_hidden_layers, "num_hidden_layers");
  t.num_heads = r.required(c.num_attention_heads, "num_attention_heads");
  t.num_kv_heads = r.required(c.num_key_value_heads, "num_key_value_heads");
  t.intermediate_size = r.required(c.intermediate_size, "intermediate_size");
  t.vocab_size = r.required(c.vocab_size, "vocab_size");
  t.max_position_embeddings = c.max_position_embeddings.value_or(info.max_position_embeddings);
  t.norm_eps = c.rms_norm_eps.value_or(info.rms_norm_eps);
  t.activation = parse_activation(r, "hidden_act", "silu");
  if (c.head_dim) {
    t.head_dim = r.required(c.head_dim, "head_dim");
  } else if (t.architecture == Architecture::Qwen3 && !r.present("head_dim")) {
    t.head_dim = 128;  // Qwen3Config's default, not hidden_size / heads
  } else if (t.architecture == Architecture::GptOss && !r.present("head_dim")) {
    t.head_dim = 64;  // GptOssConfig's default
  } else {
    if (t.hidden_size % t.num_heads != 0) {
      r.fail(
          fmt::format("hidden_size {} is not a multiple of num_attention_heads {} and there is "
                      "no head_dim; add head_dim or fix the head count",
                      t.hidden_size, t.num_heads));
    }
    t.head_dim = t.hidden_size / t.num_heads;
  }
  if (t.num_heads % t.num_kv_heads != 0) {
    r.fail(
        fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}; "
                    "grouped-query attention needs whole groups",
                    t.num_heads, t.num_kv_heads));
  }
  if (t.head_dim % 2 != 0) {
    r.fail(fmt::format("head_dim {} is odd; rotary embeddings need an even head_dim", t.head_dim));
  }
  const bool attention_bias = r.flag("attention_bias", false);
  switch (t.architecture) {
    case Architecture::Llama:
      t.qkv_bias = t.o_bias = attention_bias;
      t.mlp_bias = r.flag("mlp_bias", false);
      break;
    case Architecture::Qwen2:
      t.qkv_bias = true;  // hard-wired in Qwen2Attention
      break;
    case Architecture::Qwen3:
    case Architecture::Qwen3Moe:
      t.qkv_bias = t.o_bias = attention_bias;
      t.qk_norm = true;
      break;
    case Architecture::Phi3:
      t.fused_projections = true;  // Phi3Attention and Phi3MLP have no biases
      break;
    case Architecture::Olmo2:
      t.qkv_bias = t.o_bias = attention_bias;
      t.qk_norm = t.qk_norm_over_projection = t.post_norms = true;
      break;
    case Architecture::SmolLM3:
      t.qkv_bias = t.o_bias = attention_bias;
      t.mlp_bias = r.flag("mlp_bias", false);
      t.rope_layers = detail::smollm3_rope_layers(c, t.num_layers);
      break;
    case Architecture::Qwen2Moe:
      t.qkv_bias = r.flag("qkv_bias", true);
      break;
    case Architecture::GptOss:
      t.qkv_bias = t.o_bias = r.flag("attention_bias", true);  // GptOssConfig's default
      t.attention_sinks = true;
      break;
    default:
      break;
  }
  t.rope = parse_rope(r, info, t.head_dim, t.max_position_embeddings);
  t.sliding_windows = parse_sliding_windows(r, t.architecture, t.num_layers);
  parse_experts(r, t);
}

void parse_gpt2(const Reader& r, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  t.hidden_size = r.required(c.hidden_size, "n_embd");
  t.num_layers = r.required(c.num_hidden_layers, "n_layer");
  t.num_heads = r.required(c.num_attention_heads, "n_head");
  t.vocab_size = r.required(c.vocab_size, "vocab_size");
  t.max_position_embeddings = r.required(c.max_position_embeddings, "n_positions");
  t.intermediate_size = c.intermediate_size.value_or(4 * t.hidden_size);  // n_inner null
  t.norm_eps = c.get_double("layer_norm_epsilon").value_or(1e-5);
  t.activation = parse_activation(r, "activation_function", "gelu_new");
  t.scale_attn_weights = r.flag("scale_attn_weights", true);
  t.scale_attn_by_inverse_layer_idx = r.flag("scale_attn_by_inverse_layer_idx", false);
  if (r.flag("add_cross_attention", false)) {
    STRATA_THROW(NotSupported,
                 "model config '{}': add_cross_attention is true; Strata runs GPT-2 as a decoder "
                 "only model",
                 c.source);
  }
  if (t.hidden_size % t.num_heads != 0) {
    r.fail(fmt::format("n_embd {} is not a multiple of n_head {}", t.hidden_size, t.num_heads));
  }
}

void parse_opt(const Reader& r, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  t.hidden_size = r.required(c.hidden_size, "hidden_size");
  t.num_layers = r.required(c.num_hidden_layers, "num_hidden_layers");
  t.num_heads = r.required(c.num_attention_heads, "num_attention_heads");
  t.vocab_size = r.required(c.vocab_size, "vocab_size");
  t.intermediate_size = r.required(c.intermediate_size, "ffn_dim");
  t.max_position_embeddings = r.required(c.max_position_embeddings, "max_position_embeddings");
  t.norm_eps = 1e-5;  // nn.LayerNorm's default: OPT does not configure it
  t.activation = parse_activation(r, "activation_function", "relu");
  t.word_embed_proj_dim = c.get_int("word_embed_proj_dim").value_or(t.hidden_size);
  if (t.word_embed_proj_dim <= 0) r.fail("'word_embed_proj_dim' must be positive");
  t.do_layer_norm_before = r.flag("do_layer_norm_before", true);
  t.final_layer_norm = t.do_layer_norm_before && !r.flag("_remove_final_layer_norm", false);
  t.enable_bias = r.flag("enable_bias", true);
  t.layer_norm_elementwise_affine = r.flag("layer_norm_elementwise_affine", true);
  if (t.hidden_size % t.num_heads != 0) {
    r.fail(fmt::format("hidden_size {} is not a multiple of num_attention_heads {}", t.hidden_size,
                       t.num_heads));
  }
}

}  // namespace

namespace detail {

Activation activation_named(const io::ModelConfig& config, std::string_view key,
                            std::string_view fallback) {
  return parse_activation(Reader(config), key, fallback);
}

RopeConfig rope_from(const io::ModelConfig& config, double default_theta, std::int64_t head_dim,
                     std::int64_t max_positions) {
  TypeInfo info{config.model_type, Architecture::Llama, 1e-6, default_theta, max_positions, false};
  return parse_rope(Reader(config), info, head_dim, max_positions);
}

}  // namespace detail

std::string_view class_prefix(Architecture architecture) {
  switch (architecture) {
    case Architecture::Llama:
      return "Llama";
    case Architecture::Mistral:
      return "Mistral";
    case Architecture::Qwen2:
      return "Qwen2";
    case Architecture::Qwen3:
      return "Qwen3";
    case Architecture::Mixtral:
      return "Mixtral";
    case Architecture::GPT2:
      return "GPT2";
    case Architecture::OPT:
      return "OPT";
    case Architecture::Qwen2Moe:
      return "Qwen2Moe";
    case Architecture::Qwen3Moe:
      return "Qwen3Moe";
    case Architecture::Phi3:
      return "Phi3";
    case Architecture::Olmo2:
      return "Olmo2";
    case Architecture::SmolLM3:
      return "SmolLM3";
    case Architecture::Gemma2:
      return "Gemma2";
    case Architecture::Gemma3Text:
      return "Gemma3";
    case Architecture::GptOss:
      return "GptOss";
    case Architecture::DeepseekV2:
      return "DeepseekV2";
    case Architecture::DeepseekV3:
      return "DeepseekV3";
  }
  STRATA_ASSERT(false, "unknown architecture {}", static_cast<int>(architecture));
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const TypeInfo& info : kTypes) out.emplace_back(info.model_type);
  return out;
}

std::string TransformerConfig::class_name(std::string_view suffix) const {
  return fmt::format("{}{}", class_prefix(architecture), suffix);
}

std::vector<std::string> TransformerConfig::no_split_module_classes() const {
  switch (architecture) {
    case Architecture::GPT2:
      return {"GPT2Block"};
    case Architecture::OPT:
      return {"OPTDecoderLayer"};
    case Architecture::Gemma3Text:  // Gemma3ForCausalLM's own (not the multimodal model's list)
      return {"Gemma3DecoderLayer"};
    default:
      return {class_name("DecoderLayer")};
  }
}

std::string TransformerConfig::base_model_prefix() const {
  return architecture == Architecture::GPT2 ? "transformer" : "model";
}

std::uint64_t TransformerConfig::kv_cache_bytes_per_token(DType dtype) const {
  if (deepseek) {  // the compressed cache (docs/models.md "DeepSeek")
    return static_cast<std::uint64_t>(num_layers) *
           static_cast<std::uint64_t>(deepseek->kv_lora_rank + deepseek->qk_rope_head_dim) *
           dtype_size(dtype);
  }
  return 2ull * static_cast<std::uint64_t>(num_layers) * static_cast<std::uint64_t>(num_kv_heads) *
         static_cast<std::uint64_t>(head_dim) * dtype_size(dtype);
}

TransformerConfig parse_transformer_config(const io::ModelConfig& config) {
  const TypeInfo* info = nullptr;
  for (const TypeInfo& candidate : kTypes) {
    if (candidate.model_type == config.model_type) info = &candidate;
  }
  if (info == nullptr) {
    STRATA_THROW(NotSupported,
                 "model config '{}': model_type '{}' is not supported; Strata builds {} (set "
                 "model_type in config.json to one of them if the model is one)",
                 config.source, config.model_type.empty() ? "<missing>" : config.model_type,
                 fmt::join(supported_model_types(), ", "));
  }
  const Reader reader(config);
  TransformerConfig t;
  t.architecture = info->architecture;
  t.model_type = config.model_type;
  t.source = config.source;
  t.tie_word_embeddings = config.tie_word_embeddings.value_or(info->tie_word_embeddings);
  switch (t.architecture) {
    case Architecture::GPT2:
      parse_gpt2(reader, t);
      break;
    case Architecture::OPT:
      parse_opt(reader, t);
      break;
    case Architecture::Gemma2:
    case Architecture::Gemma3Text:
      detail::parse_gemma_config(config, t);
      return t;
    case Architecture::GptOss:
      parse_decoder_family(reader, *info, t);
      detail::parse_gpt_oss_config(config, t);  // quantization_config (mxfp4), SwiGLU, rope
      return t;
    case Architecture::DeepseekV2:
    case Architecture::DeepseekV3:
      detail::parse_deepseek_config(config, t);  // src/models/config_deepseek.cc
      return t;
    default:
      parse_decoder_family(reader, *info, t);
      t.quantization = parse_quantization_config(config);
      if (t.quantization && t.num_experts > 0) {
        STRATA_THROW(NotSupported,
                     "model config '{}': quantization_config with a mixture of experts ({}) is "
                     "not supported yet; quantized experts come with the MoE issue",
                     config.source, config.model_type);
      }
      return t;
  }
  if (parse_quantization_config(config)) {
    STRATA_THROW(NotSupported,
                 "model config '{}': quantization_config on a {} model is not supported; Strata "
                 "loads quantized checkpoints of the Llama family (llama, mistral, qwen2, qwen3)",
                 config.source, config.model_type);
  }
  // GPT-2 and OPT: multi-head attention, learned positions, no sliding windows.
  t.num_kv_heads = t.num_heads;
  t.head_dim = t.hidden_size / t.num_heads;
  t.sliding_windows.assign(static_cast<std::size_t>(t.num_layers), 0);
  return t;
}

}  // namespace strata::models

// DeepSeek-V2 / DeepSeek-V3 config.json -> TransformerConfig (transformers' DeepseekV2Config and
// DeepseekV3Config, v5.17): the multi-head latent attention sizes, the rope of the rotated part
// of each head (qk_rope_head_dim, YaRN with mscale for V3), and the routing of the experts.
// Optional keys take the config class's defaults; the sizes of the model are required. Routing
// options Strata does not implement (another scoring_func or topk_method, moe_layer_freq other
// than 1) are NotSupported naming the key, before any tensor is read.

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "io/json_util.h"
#include "models/config_parts.h"
#include "strata/core/error.h"

namespace strata::models::detail {
namespace {

using Json = nlohmann::json;
using TopkMethod = DeepseekConfig::TopkMethod;

// The defaults of DeepseekV2Config / DeepseekV3Config that differ between the two.
struct DeepseekDefaults {
  std::int64_t first_k_dense_replace;
  std::optional<std::int64_t> n_group, topk_group;  // V2: None (needed by group_limited_greedy)
  std::int64_t n_shared_experts;
  double routed_scaling_factor;
  bool norm_topk_prob;
};
constexpr DeepseekDefaults kV2{0, std::nullopt, std::nullopt, 2, 1.0, false};
constexpr DeepseekDefaults kV3{3, 8, 4, 1, 2.5, true};
constexpr std::int64_t kDefaultQLoraRank = 1536;  // both classes

class DeepseekReader {
 public:
  explicit DeepseekReader(const io::ModelConfig& c)
      : c_(c), doc_(io::detail::config_document(c.document())) {}

  [[noreturn]] void fail(std::string_view what) const {
    STRATA_THROW(CheckpointError, "model config '{}' ({}): {}", c_.source, c_.model_type, what);
  }
  [[noreturn]] void unsupported(std::string_view key, std::string_view value,
                                std::string_view supported) const {
    STRATA_THROW(NotSupported,
                 "model config '{}' ({}): {} = {} is not supported; Strata implements {}",
                 c_.source, c_.model_type, key, value, supported);
  }
  bool present(std::string_view key) const {
    const auto it = doc_.find(std::string(key));
    return it != doc_.end() && !it->is_null();
  }
  std::int64_t size(const std::optional<std::int64_t>& value, std::string_view key) const {
    if (!value) {
      fail(fmt::format("'{}' is missing; a {} model needs it, add it to config.json", key,
                       c_.model_type));
    }
    if (*value <= 0) fail(fmt::format("'{}' is {}; it must be positive", key, *value));
    return *value;
  }
  std::int64_t size(std::string_view key) const { return size(c_.get_int(key), key); }
  // A count that may be absent (the class default) but not zero or negative.
  std::int64_t count(std::string_view key, std::int64_t fallback, std::int64_t minimum) const {
    const std::int64_t value = c_.get_int(key).value_or(fallback);
    if (value < minimum) {
      fail(fmt::format("'{}' is {}; it must be at least {}", key, value, minimum));
    }
    return value;
  }
  const io::ModelConfig& config() const { return c_; }

 private:
  const io::ModelConfig& c_;
  const Json& doc_;
};

TopkMethod parse_topk_method(const DeepseekReader& r, bool v3) {
  const io::ModelConfig& c = r.config();
  // transformers' DeepseekV3 always scores with a sigmoid and picks noaux_tc (the published
  // config names both); DeepseekV2 scores with a softmax and reads topk_method.
  if (const auto scoring = c.get_string("scoring_func")) {
    const char* expected = v3 ? "sigmoid" : "softmax";
    if (*scoring != expected) {
      r.unsupported("scoring_func", fmt::format("\"{}\"", *scoring),
                    fmt::format("\"{}\" for {}", expected, c.model_type));
    }
  }
  const std::string method =
      c.get_string("topk_method").value_or(v3 ? std::string("noaux_tc") : std::string("greedy"));
  if (v3) {
    if (method != "noaux_tc") {
      r.unsupported("topk_method", fmt::format("\"{}\"", method),
                    "\"noaux_tc\" for deepseek_v3 (sigmoid scores plus e_score_correction_bias, "
                    "group-limited)");
    }
    return TopkMethod::NoAuxTc;
  }
  if (method == "greedy") return TopkMethod::Greedy;
  if (method == "group_limited_greedy") return TopkMethod::GroupLimitedGreedy;
  r.unsupported("topk_method", fmt::format("\"{}\"", method),
                "\"greedy\" and \"group_limited_greedy\" for deepseek_v2");
}

void parse_routing(const DeepseekReader& r, bool v3, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  const DeepseekDefaults& d = v3 ? kV3 : kV2;
  DeepseekConfig& ds = *t.deepseek;
  t.num_experts = r.size("n_routed_experts");
  t.num_experts_per_tok = r.size("num_experts_per_tok");
  t.moe_intermediate_size = r.size("moe_intermediate_size");
  if (t.num_experts_per_tok > t.num_experts) {
    r.fail(fmt::format("num_experts_per_tok {} exceeds n_routed_experts {}", t.num_experts_per_tok,
                       t.num_experts));
  }
  ds.topk_method = parse_topk_method(r, v3);
  // DeepseekV2Moe never renormalises its top-k weights (transformers 5.17 reads no
  // norm_topk_prob there); DeepseekV3 does when norm_topk_prob.
  t.norm_topk_prob = v3 && c.get_bool("norm_topk_prob").value_or(d.norm_topk_prob);
  ds.routed_scaling_factor =
      c.get_double("routed_scaling_factor").value_or(d.routed_scaling_factor);
  if (!std::isfinite(ds.routed_scaling_factor) || ds.routed_scaling_factor <= 0.0) {
    r.fail(fmt::format("routed_scaling_factor is {}; it must be a positive number",
                       ds.routed_scaling_factor));
  }
  // DeepseekV2Moe always calls its shared experts (n_shared_experts null would fail there).
  ds.n_shared_experts = r.count("n_shared_experts", d.n_shared_experts, v3 ? 0 : 1);
  if (ds.topk_method != TopkMethod::Greedy) {
    const auto need = [&](std::string_view key, const std::optional<std::int64_t>& fallback) {
      const std::optional<std::int64_t> v = c.get_int(key) ? c.get_int(key) : fallback;
      if (!v) {
        r.fail(
            fmt::format("'{}' is missing; the group-limited top-k needs it, add it to "
                        "config.json",
                        key));
      }
      return r.size(v, key);
    };
    ds.n_group = need("n_group", d.n_group);
    ds.topk_group = need("topk_group", d.topk_group);
    if (t.num_experts % ds.n_group != 0) {
      r.fail(
          fmt::format("n_routed_experts {} is not a multiple of n_group {}; the groups must "
                      "be equal",
                      t.num_experts, ds.n_group));
    }
    if (ds.topk_group > ds.n_group) {
      r.fail(fmt::format("topk_group {} exceeds n_group {}", ds.topk_group, ds.n_group));
    }
    const std::int64_t per_group = t.num_experts / ds.n_group;
    if (v3 && per_group < 2) {
      r.fail(
          fmt::format("n_routed_experts / n_group is {}; noaux_tc scores a group by its two "
                      "best experts, so each group needs at least 2",
                      per_group));
    }
    if (ds.topk_group * per_group < t.num_experts_per_tok) {
      r.fail(
          fmt::format("topk_group {} groups of {} experts hold fewer than num_experts_per_tok "
                      "{}",
                      ds.topk_group, per_group, t.num_experts_per_tok));
    }
  }
  ds.first_k_dense_replace = r.count("first_k_dense_replace", d.first_k_dense_replace, 0);
  if (const std::int64_t freq = c.get_int("moe_layer_freq").value_or(1); freq != 1) {
    // The original DeepSeek code makes only every moe_layer_freq-th layer sparse; transformers
    // ignores the key. Neither is safe to guess for a checkpoint that sets it.
    r.unsupported("moe_layer_freq", std::to_string(freq),
                  "1 (every layer from first_k_dense_replace on is sparse)");
  }
  t.sparse_layers.assign(static_cast<std::size_t>(t.num_layers), false);
  for (std::int64_t i = ds.first_k_dense_replace; i < t.num_layers; ++i) {
    t.sparse_layers[static_cast<std::size_t>(i)] = true;
  }
}

void parse_attention(const DeepseekReader& r, bool v3, TransformerConfig& t) {
  const io::ModelConfig& c = r.config();
  DeepseekConfig& ds = *t.deepseek;
  ds.q_lora_rank = 0;
  if (!r.present("q_lora_rank")) {
    // Absent (not null): the class default; null: q_proj.
    const Json& doc = io::detail::config_document(c.document());
    if (!doc.contains("q_lora_rank")) ds.q_lora_rank = kDefaultQLoraRank;
  } else {
    ds.q_lora_rank = r.size("q_lora_rank");
  }
  ds.kv_lora_rank = r.size("kv_lora_rank");
  ds.qk_nope_head_dim = r.size("qk_nope_head_dim");
  ds.qk_rope_head_dim = r.size("qk_rope_head_dim");
  ds.v_head_dim = r.size("v_head_dim");
  if (ds.qk_rope_head_dim % 2 != 0) {
    r.fail(fmt::format("qk_rope_head_dim {} is odd; rotary embeddings need an even number",
                       ds.qk_rope_head_dim));
  }
  t.head_dim = ds.qk_head_dim();
  if (const auto qk = c.get_int("qk_head_dim"); qk && *qk != t.head_dim) {
    r.fail(fmt::format("qk_head_dim {} is not qk_nope_head_dim + qk_rope_head_dim = {}", *qk,
                       t.head_dim));
  }
  // The rotated part of each head is qk_rope_head_dim wide (the config classes set head_dim to
  // it; rope_parameters apply to it).
  t.rope = detail::rope_from(c, 10000.0, ds.qk_rope_head_dim, t.max_position_embeddings);
  ds.rope_interleave = v3 ? c.get_bool("rope_interleave").value_or(true) : true;
  ds.softmax_scale = 1.0 / std::sqrt(static_cast<double>(t.head_dim));
  // DeepseekV3Attention: with a rope type other than default and a nonzero mscale_all_dim, the
  // scale is multiplied by yarn_get_mscale(factor, mscale_all_dim)^2 (DeepseekV2Attention, in
  // transformers 5.17, never is).
  if (v3 && t.rope->type != "default" && c.rope_scaling && c.rope_scaling->mscale_all_dim &&
      *c.rope_scaling->mscale_all_dim != 0.0) {
    const double factor = t.rope->factor;
    const double m =
        factor <= 1.0 ? 1.0 : 0.1 * *c.rope_scaling->mscale_all_dim * std::log(factor) + 1.0;
    ds.softmax_scale *= m * m;
  }
}

}  // namespace

void parse_deepseek_config(const io::ModelConfig& config, TransformerConfig& t) {
  const DeepseekReader r(config);
  const bool v3 = t.architecture == Architecture::DeepseekV3;
  t.deepseek.emplace();
  t.hidden_size = r.size(config.hidden_size, "hidden_size");
  t.num_layers = r.size(config.num_hidden_layers, "num_hidden_layers");
  t.num_heads = r.size(config.num_attention_heads, "num_attention_heads");
  // Every head has its own keys and values after kv_b_proj (the checkpoint's num_key_value_heads
  // equals the head count; transformers would fail on another value).
  t.num_kv_heads = config.num_key_value_heads.value_or(t.num_heads);
  if (t.num_kv_heads != t.num_heads) {
    r.fail(
        fmt::format("num_key_value_heads {} differs from num_attention_heads {}; multi-head "
                    "latent attention expands one key and value per head",
                    t.num_kv_heads, t.num_heads));
  }
  t.intermediate_size = r.size(config.intermediate_size, "intermediate_size");
  t.vocab_size = r.size(config.vocab_size, "vocab_size");
  t.max_position_embeddings = config.max_position_embeddings.value_or(v3 ? 4096 : 2048);
  t.norm_eps = config.rms_norm_eps.value_or(1e-6);
  t.activation = detail::activation_named(config, "hidden_act", "silu");
  const bool attention_bias = config.get_bool("attention_bias").value_or(false);
  t.qkv_bias = t.o_bias = attention_bias;  // q_a_proj, kv_a_proj_with_mqa and o_proj
  t.mlp_bias = !v3 && config.get_bool("mlp_bias").value_or(false);  // DeepseekV2MLP only
  t.sliding_windows.assign(static_cast<std::size_t>(t.num_layers), 0);
  parse_attention(r, v3, t);
  parse_routing(r, v3, t);
  t.quantization = parse_quantization_config(config);
  if (t.quantization && t.quantization->format != ops::QuantFormat::FP8) {
    STRATA_THROW(NotSupported,
                 "model config '{}': quantization_config.quant_method = \"{}\" is not supported "
                 "for {}; Strata loads DeepSeek checkpoints dense or as \"fp8\" (block scales)",
                 config.source, t.quantization->quant_method, config.model_type);
  }
}

}  // namespace strata::models::detail

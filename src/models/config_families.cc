// config.json rules of Phi-3, OLMo 2 and SmolLM3 (transformers' Phi3Config, Olmo2Config,
// SmolLM3Config and modeling_rope_utils.py), called by parse_transformer_config.

#include "models/config_families.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::models::detail {
namespace {

using Json = nlohmann::json;

[[noreturn]] void fail(const io::ModelConfig& c, std::string_view what) {
  STRATA_THROW(CheckpointError, "model config '{}' ({}): {}", c.source, c.model_type, what);
}

const Json& document(const io::ModelConfig& c) { return io::detail::config_document(c.document()); }

// A positive sliding_window, or nullopt when absent or null.
std::optional<std::int64_t> sliding_window(const io::ModelConfig& c) {
  const std::optional<std::int64_t> window = c.get_int("sliding_window");
  if (window && *window <= 0) {
    fail(c, fmt::format("sliding_window is {}; it must be positive or null", *window));
  }
  return window;
}

}  // namespace

std::int64_t rotary_dim(const io::ModelConfig& c, std::int64_t head_dim, double partial) {
  if (!(partial > 0.0 && partial <= 1.0)) {
    fail(c, fmt::format("partial_rotary_factor is {}; it must be in (0, 1]", partial));
  }
  // Python's int(): truncation of the product.
  const auto dim = static_cast<std::int64_t>(static_cast<double>(head_dim) * partial);
  if (dim <= 0 || dim % 2 != 0) {
    fail(c, fmt::format("partial_rotary_factor {} of head_dim {} rotates {} dimensions; rotary "
                        "embeddings need a positive even number (fix partial_rotary_factor)",
                        partial, head_dim, dim));
  }
  return dim;
}

void parse_longrope(const io::ModelConfig& c, Architecture arch, const io::RopeScaling& s,
                    RopeConfig& rope) {
  const auto expected = static_cast<std::size_t>(rope.dim / 2);
  const auto check_factors = [&](const std::vector<double>& factors, const char* key) {
    if (factors.size() != expected) {
      fail(c, fmt::format("rope type 'longrope' needs '{}' with {} numbers (rotated dimensions {} "
                          "/ 2), found {}; fix rope_parameters/rope_scaling",
                          key, expected, rope.dim, factors.size()));
    }
    for (const double f : factors) {
      if (!(f > 0.0))
        fail(c, fmt::format("longrope '{}' holds {}; factors must be positive", key, f));
    }
  };
  check_factors(s.short_factor, "short_factor");
  check_factors(s.long_factor, "long_factor");
  rope.short_factor = s.short_factor;
  rope.long_factor = s.long_factor;

  // standardize_rope_params: a config attribute original_max_position_embeddings (the top-level
  // key; Phi3Config always has one, 4096 by default) wins over the nested one.
  std::optional<std::int64_t> original = c.get_int("original_max_position_embeddings");
  if (!original && arch == Architecture::Phi3) original = 4096;
  if (!original) original = s.original_max_position_embeddings;
  if (!original) original = rope.max_position_embeddings;
  if (*original <= 0) {
    fail(c, fmt::format("original_max_position_embeddings is {}; it must be positive", *original));
  }
  rope.original_max_position_embeddings = *original;
  const double factor = s.factor.value_or(static_cast<double>(rope.max_position_embeddings) /
                                          static_cast<double>(*original));
  rope.factor = factor;
  if (s.attention_factor) {
    rope.attention_factor = *s.attention_factor;
  } else if (factor <= 1.0) {
    rope.attention_factor = 1.0;
  } else {
    rope.attention_factor =
        std::sqrt(1.0 + std::log(factor) / std::log(static_cast<double>(*original)));
  }
}

std::vector<bool> smollm3_rope_layers(const io::ModelConfig& c, std::int64_t layers) {
  std::vector<bool> out(static_cast<std::size_t>(layers), true);
  const Json& doc = document(c);
  const auto it = doc.find("no_rope_layers");
  if (it != doc.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<std::int64_t>(it->size()) < layers) {
      fail(c, fmt::format("'no_rope_layers' must list 0 or 1 for each of the {} layers (1 = the "
                          "layer uses RoPE), found {}",
                          layers, it->dump().substr(0, 80)));
    }
    for (std::int64_t i = 0; i < layers; ++i) {
      const Json& v = (*it)[static_cast<std::size_t>(i)];
      if (!v.is_number_integer() && !v.is_boolean()) {
        fail(c, fmt::format("'no_rope_layers'[{}] is {}; it must be 0 or 1", i, v.dump()));
      }
      out[static_cast<std::size_t>(i)] =
          v.is_boolean() ? v.get<bool>() : v.get<std::int64_t>() != 0;
    }
    return out;
  }
  const std::int64_t interval = c.get_int("no_rope_layer_interval").value_or(4);
  if (interval <= 0) {
    fail(c, fmt::format("no_rope_layer_interval is {}; it must be positive", interval));
  }
  for (std::int64_t i = 0; i < layers; ++i) {
    out[static_cast<std::size_t>(i)] = (i + 1) % interval != 0;
  }
  return out;
}

std::vector<std::int64_t> family_sliding_windows(const io::ModelConfig& c, Architecture arch,
                                                 std::int64_t layers) {
  std::vector<std::int64_t> windows(static_cast<std::size_t>(layers), 0);
  if (arch == Architecture::Olmo2) return windows;  // Olmo2Model builds a causal mask only
  const std::optional<std::int64_t> window = sliding_window(c);
  if (arch == Architecture::Phi3) {
    // Phi3Model: a sliding-window mask on every layer whenever sliding_window is set.
    if (window) windows.assign(windows.size(), *window);
    return windows;
  }
  // SmolLM3: layer_types, else sliding on the NoPE layers when use_sliding_window.
  const Json& doc = document(c);
  const auto it = doc.find("layer_types");
  if (it != doc.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<std::int64_t>(it->size()) != layers) {
      fail(c, fmt::format("'layer_types' must list the {} layers, found {}", layers,
                          it->dump().substr(0, 80)));
    }
    for (std::int64_t i = 0; i < layers; ++i) {
      const Json& v = (*it)[static_cast<std::size_t>(i)];
      const std::string type = v.is_string() ? v.get<std::string>() : v.dump();
      if (type == "sliding_attention") {
        // The sliding mask is built from sliding_window; null leaves the layer at full attention.
        windows[static_cast<std::size_t>(i)] = window.value_or(0);
      } else if (type != "full_attention") {
        STRATA_THROW(NotSupported,
                     "model config '{}': layer_types[{}] is '{}'; Strata implements "
                     "full_attention and sliding_attention",
                     c.source, i, type);
      }
    }
    return windows;
  }
  if (!window || !c.get_bool("use_sliding_window").value_or(false)) return windows;
  const std::vector<bool> rope = smollm3_rope_layers(c, layers);
  for (std::size_t i = 0; i < windows.size(); ++i) {
    if (!rope[i]) windows[i] = *window;
  }
  return windows;
}

}  // namespace strata::models::detail

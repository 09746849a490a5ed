// parse_quantization_config: config.json's quantization_config -> QuantizationConfig. The keys
// are those the producers write (transformers' FineGrainedFP8Config, AwqConfig, GPTQConfig and
// compressed-tensors' QuantizationConfig); docs/quantization.md lists what each value means.

#include "strata/models/quant_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <regex>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::models {
namespace {

using Json = nlohmann::json;

class Reader {
 public:
  Reader(const Json& object, std::string source, std::string prefix)
      : j_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  std::string key(std::string_view name) const { return prefix_ + std::string(name); }
  [[noreturn]] void unsupported(std::string_view name, const Json& value,
                                std::string_view supported) const {
    STRATA_THROW(NotSupported, "model config '{}': {} = {} is not supported; Strata implements {}",
                 source_, key(name), value.dump(), supported);
  }
  [[noreturn]] void malformed(std::string_view name, std::string_view expected) const {
    STRATA_THROW(CheckpointError, "model config '{}': {} must be {}; fix config.json", source_,
                 key(name), expected);
  }
  const Json* find(std::string_view name) const {
    const auto it = j_.find(std::string(name));
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  // The first of `names` present.
  const Json* find_any(std::initializer_list<std::string_view> names) const {
    for (std::string_view n : names) {
      if (const Json* v = find(n)) return v;
    }
    return nullptr;
  }
  std::int64_t integer(std::string_view name, const Json& v) const {
    if (!v.is_number_integer()) malformed(name, "an integer");
    return v.get<std::int64_t>();
  }
  std::string string(std::string_view name, const Json& v) const {
    if (!v.is_string()) malformed(name, "a string");
    return v.get<std::string>();
  }
  bool boolean(std::string_view name, bool fallback) const {
    const Json* v = find(name);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) malformed(name, "true or false");
    return v->get<bool>();
  }
  std::vector<std::string> strings(std::string_view name) const {
    std::vector<std::string> out;
    const Json* v = find(name);
    if (v == nullptr) return out;
    if (!v->is_array()) malformed(name, "a list of strings");
    for (const Json& s : *v) out.push_back(string(name, s));
    return out;
  }

 private:
  const Json& j_;
  std::string source_, prefix_;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

void parse_fp8(const Reader& r, QuantizationConfig& q) {
  q.format = ops::QuantFormat::FP8;
  q.bits = 8;
  if (const Json* v = r.find("activation_scheme");
      v && r.string("activation_scheme", *v) != "dynamic") {
    r.unsupported("activation_scheme", *v, "\"dynamic\" (activations stay in the compute dtype)");
  }
  if (const Json* v = r.find("fmt"); v && r.string("fmt", *v) != "e4m3") {
    r.unsupported("fmt", *v, "\"e4m3\" (float8_e4m3fn weights)");
  }
  if (const Json* v = r.find("weight_block_size")) {
    if (!v->is_array() || v->size() != 2) r.malformed("weight_block_size", "[rows, cols] or null");
    q.block_out = r.integer("weight_block_size", (*v)[0]);
    q.block_in = r.integer("weight_block_size", (*v)[1]);
    if (q.block_out <= 0 || q.block_in <= 0) {
      r.unsupported("weight_block_size", *v, "positive block sizes such as [128, 128], or null");
    }
  }
  q.not_converted = r.strings("modules_to_not_convert");
}

void parse_awq(const Reader& r, QuantizationConfig& q) {
  q.format = ops::QuantFormat::AWQ;
  const Json* bits = r.find_any({"bits", "w_bit"});
  q.bits = bits ? static_cast<int>(r.integer("bits", *bits)) : 4;
  if (q.bits != 4) r.unsupported("bits", *bits, "4-bit AWQ");
  const Json* group = r.find_any({"group_size", "q_group_size"});
  q.group_size = group ? r.integer("group_size", *group) : 128;
  if (q.group_size != 32 && q.group_size != 64 && q.group_size != 128) {
    r.unsupported("group_size", *group, "group sizes 32, 64 and 128");
  }
  if (const Json* v = r.find("version"); v && lower(r.string("version", *v)) != "gemm") {
    r.unsupported("version", *v, "the GEMM layout (\"gemm\")");
  }
  if (const Json* v = r.find("backend"); v && lower(r.string("backend", *v)) != "autoawq") {
    r.unsupported("backend", *v, "AutoAWQ checkpoints (\"autoawq\")");
  }
  if (!r.boolean("zero_point", true)) {
    r.unsupported("zero_point", Json(false), "AWQ with zero points (zero_point: true)");
  }
  q.symmetric = false;
  q.not_converted = r.strings("modules_to_not_convert");
}

void parse_gptq(const Reader& r, QuantizationConfig& q) {
  q.format = ops::QuantFormat::GPTQ;
  const Json* bits = r.find("bits");
  if (bits == nullptr) r.malformed("bits", "present (4 or 8)");
  q.bits = static_cast<int>(r.integer("bits", *bits));
  if (q.bits != 4 && q.bits != 8) r.unsupported("bits", *bits, "4 and 8 bits");
  const Json* group = r.find("group_size");
  q.group_size = group ? r.integer("group_size", *group) : 128;
  if (q.group_size == -1) {
    q.group_size = 0;
  } else if (q.group_size <= 0) {
    r.unsupported("group_size", *group, "a positive group size or -1 (one group)");
  }
  for (const char* key : {"checkpoint_format", "format"}) {
    if (const Json* v = r.find(key); v && r.string(key, *v) != "gptq") {
      r.unsupported(key, *v, "the v1 layout (\"gptq\": qzeros stored minus one)");
    }
  }
  q.symmetric = r.boolean("sym", true);
  q.not_converted = r.strings("modules_to_not_convert");
}

void parse_compressed(const Reader& r, const std::string& source, QuantizationConfig& q) {
  q.format = ops::QuantFormat::CompressedTensors;
  const Json* format = r.find("format");
  if (format == nullptr || r.string("format", *format) != "pack-quantized") {
    r.unsupported("format", format ? *format : Json(nullptr), "\"pack-quantized\"");
  }
  if (const Json* v = r.find("quantization_status");
      v && r.string("quantization_status", *v) != "compressed") {
    r.unsupported("quantization_status", *v, "compressed checkpoints (\"compressed\")");
  }
  if (const Json* v = r.find("kv_cache_scheme")) {
    r.unsupported("kv_cache_scheme", *v, "an unquantized KV cache (kv_cache_scheme: null)");
  }
  const Json* groups = r.find("config_groups");
  if (groups == nullptr || !groups->is_object() || groups->empty()) {
    r.malformed("config_groups", "an object with one quantization scheme");
  }
  if (groups->size() != 1) {
    r.unsupported("config_groups", Json(groups->size()),
                  "one scheme for all Linear layers (mixed schemes are not implemented)");
  }
  const std::string group_name = groups->begin().key();
  const Reader g(groups->begin().value(), source,
                 fmt::format("quantization_config.config_groups.{}.", group_name));
  if (const Json* v = g.find("format"); v && g.string("format", *v) != "pack-quantized") {
    g.unsupported("format", *v, "\"pack-quantized\"");
  }
  const std::vector<std::string> targets = g.strings("targets");
  if (targets != std::vector<std::string>{"Linear"}) {
    g.unsupported("targets", Json(targets), "[\"Linear\"]");
  }
  for (const char* key : {"input_activations", "output_activations"}) {
    if (const Json* v = g.find(key)) {
      g.unsupported(key, *v, fmt::format("weight-only schemes ({}: null)", key));
    }
  }
  const Json* weights = g.find("weights");
  if (weights == nullptr || !weights->is_object()) g.malformed("weights", "an object");
  const Reader w(*weights, source,
                 fmt::format("quantization_config.config_groups.{}.weights.", group_name));
  const Json* bits = w.find("num_bits");
  if (bits == nullptr) w.malformed("num_bits", "present (4 or 8)");
  q.bits = static_cast<int>(w.integer("num_bits", *bits));
  if (q.bits != 4 && q.bits != 8) w.unsupported("num_bits", *bits, "4 and 8 bits");
  if (const Json* v = w.find("type"); v && w.string("type", *v) != "int") {
    w.unsupported("type", *v, "\"int\"");
  }
  const Json* strategy = w.find("strategy");
  const std::string s = strategy ? w.string("strategy", *strategy) : "tensor";
  if (s == "group") {
    const Json* size = w.find("group_size");
    if (size == nullptr) w.malformed("group_size", "present for strategy \"group\"");
    q.group_size = w.integer("group_size", *size);
    if (q.group_size <= 0) w.unsupported("group_size", *size, "a positive group size");
  } else if (s == "channel") {
    q.group_size = 0;
  } else {
    w.unsupported("strategy", strategy ? *strategy : Json(nullptr), "\"group\" and \"channel\"");
  }
  if (const Json* v = w.find("actorder"); v && !(v->is_boolean() && !v->get<bool>())) {
    w.unsupported("actorder", *v, "no activation ordering (actorder: null)");
  }
  if (w.boolean("dynamic", false)) w.unsupported("dynamic", Json(true), "static weight scales");
  q.symmetric = w.boolean("symmetric", true);
  q.not_converted = r.strings("ignore");
}

bool matches_ignore(std::string_view path, const std::string& entry) {
  if (entry.rfind("re:", 0) == 0) {
    const std::regex re(entry.substr(3));
    const std::string p(path);
    return std::regex_search(p, re, std::regex_constants::match_continuous);
  }
  return path == entry || (path.size() > entry.size() && path.ends_with(entry) &&
                           path[path.size() - entry.size() - 1] == '.');
}

}  // namespace

bool QuantizationConfig::converts(std::string_view module_path) const {
  if (module_path == "lm_head" || module_path.ends_with(".lm_head")) return false;
  for (const std::string& entry : not_converted) {
    const bool match = format == ops::QuantFormat::CompressedTensors
                           ? matches_ignore(module_path, entry)
                           : module_path.find(entry) != std::string_view::npos;
    if (match) return false;
  }
  return true;
}

std::optional<QuantizationConfig> parse_quantization_config(const io::ModelConfig& config) {
  const Json& doc = io::detail::config_document(config.document());
  const auto it = doc.find("quantization_config");
  if (it == doc.end() || it->is_null()) return std::nullopt;
  const Reader r(*it, config.source, "quantization_config.");
  if (!it->is_object()) r.malformed("", "an object");
  QuantizationConfig q;
  q.source = config.source;
  const Json* method = r.find("quant_method");
  if (method == nullptr) r.malformed("quant_method", "present");
  q.quant_method = r.string("quant_method", *method);
  if (q.quant_method == "fp8") {
    parse_fp8(r, q);
  } else if (q.quant_method == "awq") {
    parse_awq(r, q);
  } else if (q.quant_method == "gptq") {
    parse_gptq(r, q);
  } else if (q.quant_method == "compressed-tensors") {
    parse_compressed(r, config.source, q);
  } else {
    r.unsupported("quant_method", *method, "\"fp8\", \"awq\", \"gptq\" and \"compressed-tensors\"");
  }
  for (const std::string& entry : q.not_converted) {
    if (entry.rfind("re:", 0) != 0) continue;
    try {
      const std::regex re(entry.substr(3));
    } catch (const std::regex_error& e) {
      STRATA_THROW(CheckpointError,
                   "model config '{}': quantization_config.ignore entry '{}' is "
                   "not a valid regular expression ({})",
                   config.source, entry, e.what());
    }
  }
  return q;
}

}  // namespace strata::models

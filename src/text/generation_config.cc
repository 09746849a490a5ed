#include "strata/text/generation_config.h"

#include <cmath>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::text {
namespace {

using io::detail::Json;

constexpr std::uint64_t kMaxConfigBytes = 16'000'000;

[[noreturn]] void wrong_type(std::string_view source, std::string_view key, const Json& value,
                             std::string_view expected) {
  STRATA_THROW(CheckpointError, "{}: field \"{}\" is {} ({}); expected {}. Fix or remove the field",
               source, key, io::detail::json_kind(value), io::detail::printable(value.dump(), 60),
               expected);
}

const Json* field(const Json& doc, std::string_view key) {
  const auto it = doc.find(std::string(key));
  if (it == doc.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<std::int64_t> read_token(const Json& doc, std::string_view key,
                                       std::string_view source) {
  const Json* v = field(doc, key);
  if (v == nullptr) return std::nullopt;
  const auto id = io::detail::as_uint(*v);
  if (!id || *id > static_cast<std::uint64_t>(INT64_MAX)) {
    wrong_type(source, key, *v, "a non-negative integer token id");
  }
  return static_cast<std::int64_t>(*id);
}

// eos_token_id: an id or a list of ids (an empty list means none).
std::optional<std::vector<std::int64_t>> read_token_list(const Json& doc, std::string_view key,
                                                         std::string_view source) {
  const Json* v = field(doc, key);
  if (v == nullptr) return std::nullopt;
  std::vector<std::int64_t> ids;
  if (v->is_array()) {
    for (const Json& item : *v) {
      const auto id = io::detail::as_uint(item);
      if (!id || *id > static_cast<std::uint64_t>(INT64_MAX)) {
        wrong_type(source, key, *v, "a token id or a list of non-negative integer token ids");
      }
      ids.push_back(static_cast<std::int64_t>(*id));
    }
    return ids;
  }
  const auto id = io::detail::as_uint(*v);
  if (!id || *id > static_cast<std::uint64_t>(INT64_MAX)) {
    wrong_type(source, key, *v, "a token id or a list of non-negative integer token ids");
  }
  return std::vector<std::int64_t>{static_cast<std::int64_t>(*id)};
}

std::optional<double> read_number(const Json& doc, std::string_view key, std::string_view source) {
  const Json* v = field(doc, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) wrong_type(source, key, *v, "a number");
  return v->get<double>();
}

std::optional<std::int64_t> read_count(const Json& doc, std::string_view key,
                                       std::string_view source) {
  const Json* v = field(doc, key);
  if (v == nullptr) return std::nullopt;
  const auto n = io::detail::as_uint(*v);
  if (!n || *n > static_cast<std::uint64_t>(INT64_MAX)) {
    wrong_type(source, key, *v, "a non-negative integer");
  }
  return static_cast<std::int64_t>(*n);
}

std::optional<bool> read_bool(const Json& doc, std::string_view key, std::string_view source) {
  const Json* v = field(doc, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) wrong_type(source, key, *v, "true or false");
  return v->get<bool>();
}

Json parse_object(std::string_view text, std::string_view source) {
  Json doc = io::detail::parse_json_strict(text, source);
  STRATA_CHECK(doc.is_object(), CheckpointError, "{}: expected a JSON object, found {}", source,
               io::detail::json_kind(doc));
  return doc;
}

// eos / bos / pad from `doc` into `config` where not set yet.
void fill_special_tokens(const Json& doc, std::string_view source, GenerationConfig& config,
                         bool eos_set) {
  if (!eos_set) {
    if (auto eos = read_token_list(doc, "eos_token_id", source)) config.eos_token_ids = *eos;
  }
  if (!config.bos_token_id) config.bos_token_id = read_token(doc, "bos_token_id", source);
  if (!config.pad_token_id) config.pad_token_id = read_token(doc, "pad_token_id", source);
}

GenerationConfig from_document(const Json& doc, std::string_view source) {
  GenerationConfig config;
  config.source = std::string(source);
  fill_special_tokens(doc, source, config, false);
  if (auto v = read_bool(doc, "do_sample", source)) config.do_sample = *v;
  if (auto v = read_number(doc, "temperature", source)) config.temperature = *v;
  if (auto v = read_count(doc, "top_k", source)) config.top_k = *v;
  if (auto v = read_number(doc, "top_p", source)) config.top_p = *v;
  config.min_p = read_number(doc, "min_p", source);
  if (auto v = read_number(doc, "repetition_penalty", source)) config.repetition_penalty = *v;
  config.max_new_tokens = read_count(doc, "max_new_tokens", source);
  config.max_length = read_count(doc, "max_length", source);
  return config;
}

}  // namespace

GenerationConfig parse_generation_config(std::string_view json_text, std::string_view source) {
  return from_document(parse_object(json_text, source), source);
}

GenerationConfig read_generation_config(const std::filesystem::path& model_dir) {
  const std::filesystem::path gen_file = model_dir / "generation_config.json";
  const std::filesystem::path model_file = model_dir / "config.json";
  GenerationConfig config;
  bool eos_set = false;
  if (std::filesystem::exists(gen_file)) {
    const std::string source = gen_file.string();
    const Json doc = parse_object(
        io::detail::read_text_file(gen_file, kMaxConfigBytes, "generation config"), source);
    config = from_document(doc, source);
    eos_set = field(doc, "eos_token_id") != nullptr;
  }
  if (std::filesystem::exists(model_file) &&
      (!eos_set || !config.bos_token_id || !config.pad_token_id)) {
    const std::string source = model_file.string();
    const Json doc = parse_object(
        io::detail::read_text_file(model_file, kMaxConfigBytes, "model config"), source);
    fill_special_tokens(doc, source, config, eos_set);
    config.source = config.source.empty() ? source : config.source + " + " + source;
  }
  return config;
}

}  // namespace strata::text

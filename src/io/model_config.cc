#include "strata/io/model_config.h"

#include <initializer_list>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::io {
namespace {

using detail::Json;
using detail::printable;

constexpr std::uint64_t kMaxConfigBytes = 16'000'000;

// Reads typed values out of one JSON object, naming the file and the key in errors.
class Fields {
 public:
  Fields(const Json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  const Json* find(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  std::optional<std::int64_t> integer(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_integer()) {  // signed or unsigned
      if (v->is_number_unsigned()) {
        STRATA_CHECK(v->get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX),
                     CheckpointError, "{}: {} is too large", source_, name(key));
      }
      return v->get<std::int64_t>();
    }
    STRATA_THROW(CheckpointError, "{}: {} is {}, expected an integer; fix config.json", source_,
                 name(key), detail::json_kind(*v));
  }

  // A size or count: an integer >= 0.
  std::optional<std::int64_t> count(std::string_view key) const {
    const auto v = integer(key);
    STRATA_CHECK(!v || *v >= 0, CheckpointError,
                 "{}: {} is {}, expected a non-negative integer; fix config.json", source_,
                 name(key), *v);
    return v;
  }

  // The first of `keys` present (transformers' attribute_map aliases).
  std::optional<std::int64_t> count_any(std::initializer_list<std::string_view> keys) const {
    for (const auto key : keys) {
      if (auto v = count(key)) return v;
    }
    return std::nullopt;
  }

  std::optional<double> number(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    STRATA_CHECK(v->is_number(), CheckpointError,
                 "{}: {} is {}, expected a number; fix config.json", source_, name(key),
                 detail::json_kind(*v));
    return v->get<double>();
  }

  std::optional<bool> boolean(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    STRATA_CHECK(v->is_boolean(), CheckpointError,
                 "{}: {} is {}, expected true or false; fix config.json", source_, name(key),
                 detail::json_kind(*v));
    return v->get<bool>();
  }

  std::optional<std::string> string(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    STRATA_CHECK(v->is_string(), CheckpointError,
                 "{}: {} is {}, expected a string; fix config.json", source_, name(key),
                 detail::json_kind(*v));
    return v->get<std::string>();
  }

  std::vector<double> numbers(std::string_view key) const {
    std::vector<double> out;
    const Json* v = find(key);
    if (v == nullptr) return out;
    STRATA_CHECK(v->is_array(), CheckpointError,
                 "{}: {} is {}, expected a list of numbers; fix config.json", source_, name(key),
                 detail::json_kind(*v));
    for (const Json& x : *v) {
      STRATA_CHECK(x.is_number(), CheckpointError,
                   "{}: {} holds {}, expected numbers only; fix config.json", source_, name(key),
                   detail::json_kind(x));
      out.push_back(x.get<double>());
    }
    return out;
  }

 private:
  std::string name(std::string_view key) const { return printable(prefix_ + std::string(key)); }

  const Json& object_;
  std::string source_;
  std::string prefix_;
};

std::optional<RopeScaling> parse_rope(const Json& object, const std::string& source,
                                      const std::string& key) {
  STRATA_CHECK(object.is_object(), CheckpointError,
               "{}: {} is {}, expected an object; fix config.json", source, printable(key),
               detail::json_kind(object));
  const Fields f(object, source, key + ".");
  RopeScaling r;
  r.rope_type = f.string("rope_type").value_or(f.string("type").value_or("default"));
  if (r.rope_type == "default") return std::nullopt;
  r.factor = f.number("factor");
  r.original_max_position_embeddings = f.count("original_max_position_embeddings");
  r.low_freq_factor = f.number("low_freq_factor");
  r.high_freq_factor = f.number("high_freq_factor");
  r.beta_fast = f.number("beta_fast");
  r.beta_slow = f.number("beta_slow");
  r.attention_factor = f.number("attention_factor");
  r.mscale = f.number("mscale");
  r.mscale_all_dim = f.number("mscale_all_dim");
  r.short_factor = f.numbers("short_factor");
  r.long_factor = f.numbers("long_factor");
  r.raw_json = object.dump();
  return r;
}

const Json& doc_of(const ModelConfig& c) { return detail::config_document(c.document()); }

}  // namespace

ModelConfig parse_model_config(std::string_view json_text, std::string_view source) {
  const std::string src = fmt::format("model config {}", printable(source, 400));
  auto doc = std::make_shared<const Json>(detail::parse_json_strict(json_text, src));
  STRATA_CHECK(doc->is_object(), CheckpointError,
               "{}: the document is {}, expected an object; fix config.json", src,
               detail::json_kind(*doc));
  const Fields f(*doc, src);

  ModelConfig c;
  c.source = std::string(source);
  c.model_type = f.string("model_type").value_or("");
  if (const Json* archs = f.find("architectures")) {
    STRATA_CHECK(archs->is_array(), CheckpointError,
                 "{}: 'architectures' is {}, expected a list of class names", src,
                 detail::json_kind(*archs));
    for (const Json& a : *archs) {
      STRATA_CHECK(a.is_string(), CheckpointError,
                   "{}: 'architectures' holds {}, expected class names", src, detail::json_kind(a));
      c.architectures.push_back(a.get<std::string>());
    }
  }
  c.hidden_size = f.count_any({"hidden_size", "n_embd", "d_model"});
  c.num_hidden_layers = f.count_any({"num_hidden_layers", "n_layer", "num_layers"});
  c.num_attention_heads = f.count_any({"num_attention_heads", "n_head"});
  c.num_key_value_heads = f.count("num_key_value_heads");
  if (!c.num_key_value_heads) c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = f.count("head_dim");
  c.intermediate_size = f.count_any({"intermediate_size", "n_inner", "ffn_dim"});
  c.vocab_size = f.count("vocab_size");
  c.max_position_embeddings = f.count_any({"max_position_embeddings", "n_positions"});
  c.rms_norm_eps = f.number("rms_norm_eps");
  c.tie_word_embeddings = f.boolean("tie_word_embeddings");

  // v4: rope_theta + rope_scaling; v5: rope_parameters holding both.
  c.rope_theta = f.number("rope_theta");
  if (const Json* scaling = f.find("rope_scaling")) {
    c.rope_scaling = parse_rope(*scaling, src, "rope_scaling");
  } else if (const Json* params = f.find("rope_parameters")) {
    c.rope_scaling = parse_rope(*params, src, "rope_parameters");
    if (!c.rope_theta) c.rope_theta = Fields(*params, src, "rope_parameters.").number("rope_theta");
  }

  auto dtype_text = f.string("torch_dtype");
  if (!dtype_text) dtype_text = f.string("dtype");
  if (dtype_text && *dtype_text != "auto") {
    try {
      c.torch_dtype = parse_dtype(*dtype_text);
    } catch (const InvalidArgument&) {
      STRATA_THROW(CheckpointError,
                   "{}: torch_dtype {} is not a dtype Strata knows; fix "
                   "config.json or pass the dtype explicitly",
                   src, printable(*dtype_text));
    }
  }
  c.document_ = std::move(doc);
  return c;
}

ModelConfig read_model_config(const std::filesystem::path& path) {
  std::error_code ec;
  const auto file = std::filesystem::is_directory(path, ec) ? path / "config.json" : path;
  STRATA_CHECK(std::filesystem::exists(file, ec), CheckpointError,
               "model config '{}' does not exist; pass config.json or the folder holding it",
               file.string());
  return parse_model_config(detail::read_text_file(file, kMaxConfigBytes, "model config"),
                            file.string());
}

std::int64_t ModelConfig::require_int(std::string_view key) const {
  const std::pair<std::string_view, const std::optional<std::int64_t>*> typed[] = {
      {"hidden_size", &hidden_size},
      {"num_hidden_layers", &num_hidden_layers},
      {"num_attention_heads", &num_attention_heads},
      {"num_key_value_heads", &num_key_value_heads},
      {"head_dim", &head_dim},
      {"intermediate_size", &intermediate_size},
      {"vocab_size", &vocab_size},
      {"max_position_embeddings", &max_position_embeddings}};
  std::optional<std::int64_t> value;
  bool is_typed = false;
  for (const auto& [name, field] : typed) {
    if (name == key) {
      value = *field;
      is_typed = true;
    }
  }
  if (!is_typed) value = get_int(key);
  STRATA_CHECK(value.has_value(), CheckpointError,
               "model config '{}' has no {}, which a {} model needs; add it to config.json", source,
               printable(key), model_type.empty() ? "this" : model_type);
  return *value;
}

double ModelConfig::require_double(std::string_view key) const {
  std::optional<double> value;
  if (key == "rms_norm_eps") {
    value = rms_norm_eps;
  } else if (key == "rope_theta") {
    value = rope_theta;
  } else {
    value = get_double(key);
  }
  STRATA_CHECK(value.has_value(), CheckpointError,
               "model config '{}' has no {}, which a {} model needs; add it to config.json", source,
               printable(key), model_type.empty() ? "this" : model_type);
  return *value;
}

bool ModelConfig::has(std::string_view key) const {
  return Fields(doc_of(*this), source).find(key) != nullptr;
}
std::optional<std::int64_t> ModelConfig::get_int(std::string_view key) const {
  return Fields(doc_of(*this), source).integer(key);
}
std::optional<double> ModelConfig::get_double(std::string_view key) const {
  return Fields(doc_of(*this), source).number(key);
}
std::optional<bool> ModelConfig::get_bool(std::string_view key) const {
  return Fields(doc_of(*this), source).boolean(key);
}
std::optional<std::string> ModelConfig::get_string(std::string_view key) const {
  return Fields(doc_of(*this), source).string(key);
}
std::string ModelConfig::get_json(std::string_view key) const {
  const auto& doc = doc_of(*this);
  const auto it = doc.find(key);
  return it == doc.end() ? std::string() : it->dump();
}
std::string ModelConfig::raw_json() const { return doc_of(*this).dump(); }

}  // namespace strata::io

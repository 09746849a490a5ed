// Loading a tokenizer from a model folder: tokenizer.json (model, added tokens, pipeline) and
// the transformers files around it (tokenizer_config.json, special_tokens_map.json) for the
// bos/eos/pad tokens, add_bos_token/add_eos_token and transformers' LlamaTokenizer pipeline.

#include <algorithm>

#include "strata/core/error.h"
#include "strata/text/tokenizer.h"
#include "text/tokenizer_parts.h"

namespace strata::text {
namespace {

using detail::Json;
using detail::JsonRef;

constexpr std::uint64_t kMaxTokenizerJsonBytes = 512ull << 20;
constexpr std::uint64_t kMaxConfigBytes = 64ull << 20;

std::vector<detail::AddedToken> load_added_tokens(const JsonRef& root) {
  std::vector<detail::AddedToken> out;
  auto list = root.get("added_tokens");
  if (!list) return out;
  for (std::size_t i = 0; i < list->size(); ++i) {
    auto t = list->at(i);
    detail::AddedToken a;
    a.id = t.at("id").integer();
    if (a.id < 0 || a.id >= (std::int64_t{1} << 31)) t.at("id").malformed("an id in [0, 2^31)");
    a.content = t.at("content").str();
    a.special = t.bool_or("special", false);
    a.lstrip = t.bool_or("lstrip", false);
    a.rstrip = t.bool_or("rstrip", false);
    a.normalized = t.bool_or("normalized", !a.special);
    a.single_word = t.bool_or("single_word", false);
    out.push_back(std::move(a));
  }
  return out;
}

// A token named in tokenizer_config.json / special_tokens_map.json: a string or
// {"content": ...}; nullopt when absent or null.
std::optional<std::string> token_name(const std::optional<JsonRef>& node) {
  if (!node) return std::nullopt;
  if (node->json().is_string()) return node->str();
  return node->at("content").str();
}

// transformers 5's LlamaTokenizer (the class of Llama 2, Mistral, Phi-3 ... configs) does not
// run tokenizer.json's normaliser/pre-tokenizer/decoder: it takes the vocabulary and merges and
// builds its own pipeline, Metaspace(prepend_scheme from add_prefix_space and legacy,
// split=false) with no normaliser, and Replace/ByteFallback/Fuse(/Strip) to decode. The "▁"
// prefix then goes only where that scheme says (not after every added token) and a text that
// starts with a space gets none. Strata follows it for SentencePiece-style files (byte
// fallback); a byte-level file under that class keeps its own pipeline (transformers would
// break it, see docs/tokenizers.md).
std::optional<Json> llama_pipeline(const JsonRef& root, const JsonRef& cfg) {
  std::string cls = cfg.str_or("tokenizer_class", "");
  if (cls != "LlamaTokenizer" && cls != "LlamaTokenizerFast") return std::nullopt;
  if (!root.at("model").bool_or("byte_fallback", false)) return std::nullopt;
  bool prefix = cfg.bool_or("add_prefix_space", true);
  bool legacy = cfg.bool_or("legacy", false);
  const char* scheme = !prefix ? "never" : legacy ? "always" : "first";
  Json decoders = Json::array();
  decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}});
  decoders.push_back({{"type", "ByteFallback"}});
  decoders.push_back({{"type", "Fuse"}});
  if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  Json out = Json::object();
  out["pre_tokenizer"] = {{"type", "Metaspace"},
                          {"replacement", "\u2581"},
                          {"prepend_scheme", scheme},
                          {"split", false}};
  out["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  return out;
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view tokenizer_config,
                               std::string_view special_tokens_map, std::string_view origin) {
  auto state = std::make_shared<detail::TokenizerState>();
  state->origin = std::string(origin);
  const std::string file(origin);
  Json doc = io::detail::parse_json_strict(tokenizer_json, file);
  JsonRef root(doc, file, "$");
  if (!doc.is_object()) root.malformed("an object");
  if (auto trunc = root.get("truncation")) trunc->not_supported("truncation");
  if (auto pad = root.get("padding")) pad->not_supported("padding");

  // The transformers files: optional, each a JSON object.
  Json config = Json::object(), map = Json::object();
  const std::string config_file = file + " (tokenizer_config.json)";
  const std::string map_file = file + " (special_tokens_map.json)";
  if (!tokenizer_config.empty())
    config = io::detail::parse_json_strict(tokenizer_config, config_file);
  if (!special_tokens_map.empty())
    map = io::detail::parse_json_strict(special_tokens_map, map_file);
  JsonRef cfg(config, config_file, "$"), stm(map, map_file, "$");
  if (!config.is_object()) cfg.malformed("an object");
  if (!map.is_object()) stm.malformed("an object");

  state->model = detail::BpeModel::load(root.at("model"));
  auto added = load_added_tokens(root);
  // The token named by each special-token key (config first; an explicit null wins over the map).
  auto named =
      [&](std::string_view key) -> std::pair<std::optional<std::string>, std::optional<JsonRef>> {
    std::optional<JsonRef> node = cfg.get(key);
    if (!node && !config.contains(key)) node = stm.get(key);
    return {token_name(node), node};
  };
  // transformers adds a named special token that the vocabulary lacks as a new special token
  // (GemmaTokenizer also names "<mask>" by default), in its attribute order.
  {
    std::int64_t next = state->model->size();
    for (const auto& t : added) next = std::max(next, t.id + 1);
    auto known = [&](const std::string& content) {
      if (state->model->token_to_id(content)) return true;
      return std::any_of(added.begin(), added.end(),
                         [&](const detail::AddedToken& t) { return t.content == content; });
    };
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                            "cls_token", "mask_token"}) {
      auto name = named(key).first;
      if (!name && std::string_view(key) == "mask_token" && !config.contains("mask_token") &&
          cfg.str_or("tokenizer_class", "") == "GemmaTokenizer") {
        name = "<mask>";
      }
      if (!name || name->empty() || known(*name)) continue;
      detail::AddedToken t;
      t.id = next++;
      t.content = *name;
      t.special = true;
      added.push_back(std::move(t));
    }
  }
  state->added = std::make_unique<detail::AddedVocabulary>(std::move(added));
  if (auto sp = llama_pipeline(root, cfg)) {
    state->pre_tokenizer = detail::make_pre_tokenizer(
        JsonRef(sp->at("pre_tokenizer"), config_file, "LlamaTokenizer.pre_tokenizer"));
    state->decoder =
        detail::make_decoder(JsonRef(sp->at("decoder"), config_file, "LlamaTokenizer.decoder"));
  } else {
    if (auto n = root.get("normalizer")) state->normalizer = detail::make_normalizer(*n);
    if (auto p = root.get("pre_tokenizer")) state->pre_tokenizer = detail::make_pre_tokenizer(*p);
    if (auto d = root.get("decoder")) state->decoder = detail::make_decoder(*d);
  }
  if (auto p = root.get("post_processor")) {
    state->post = detail::PostProcessor::from_json(*p, *state->added, *state->model);
  }
  std::int64_t size = state->model->size();
  for (const auto& t : state->added->tokens()) size = std::max(size, t.id + 1);
  state->vocab_size = size;

  Tokenizer tok(state);
  auto resolve = [&](std::string_view key) -> std::optional<std::int64_t> {
    auto [name, node] = named(key);
    if (!name || name->empty()) return std::nullopt;
    auto id = tok.token_to_id(*name);
    STRATA_ASSERT(id, "{}: '{}' names '{}', which was added but has no id", node->file(),
                  node->path(), *name);
    return id;
  };
  state->bos = resolve("bos_token");
  state->eos = resolve("eos_token");
  state->pad = resolve("pad_token");

  // transformers rebuilds the template from add_bos_token / add_eos_token when either is given.
  auto add_bos = cfg.get("add_bos_token"), add_eos = cfg.get("add_eos_token");
  if (add_bos || add_eos) {
    bool bos = add_bos && add_bos->boolean(), eos = add_eos && add_eos->boolean();
    state->post = detail::PostProcessor::from_flags(bos ? state->bos : std::nullopt,
                                                    eos ? state->eos : std::nullopt);
  }
  return tok;
}

Tokenizer Tokenizer::from_folder(const std::filesystem::path& dir) {
  auto path = dir / "tokenizer.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    STRATA_THROW(IoError, "'{}' has no tokenizer.json; a model folder needs one to tokenize text",
                 dir.string());
  }
  std::string json = io::detail::read_text_file(path, kMaxTokenizerJsonBytes, "tokenizer.json");
  auto optional_file = [&](const char* name) {
    auto p = dir / name;
    if (!std::filesystem::is_regular_file(p, ec)) return std::string();
    return io::detail::read_text_file(p, kMaxConfigBytes, name);
  };
  return from_json(json, optional_file("tokenizer_config.json"),
                   optional_file("special_tokens_map.json"), path.string());
}

}  // namespace strata::text

#pragma once
// Shared helpers of the tokenizer tests: the fixture tokenizers by name, the fixture JSON, and
// the 1 MB mixed text regenerated from its seed (tests/fixtures/tools/record_tokenizer_corpus.py).

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "strata/text/tokenizer.h"

namespace strata::text::testing {

inline std::filesystem::path fixtures_dir() { return STRATA_TEST_FIXTURES_DIR; }
inline std::filesystem::path text_fixtures() { return fixtures_dir() / "text"; }
inline std::filesystem::path stories_dir() {
  return fixtures_dir().parent_path().parent_path() / "models" / "stories260K";
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
  return nlohmann::json::parse(read_file(p));
}

// "mistral", "phi3", "gpt2" (real files), "stories260K" (the built-in model), or a trained one.
inline Tokenizer load_named(const std::string& name) {
  if (name == "stories260K") return Tokenizer::from_folder(stories_dir());
  auto real = text_fixtures() / "tokenizers";
  if (std::filesystem::exists(real / (name + ".tokenizer.json"))) {
    return Tokenizer::from_json(read_file(real / (name + ".tokenizer.json")),
                                read_file(real / (name + ".tokenizer_config.json")), {},
                                name + ".tokenizer.json");
  }
  // "<family>_hf": the same family trained by the tokenizers library on the device machine.
  if (name.size() > 3 && name.compare(name.size() - 3, 3, "_hf") == 0) {
    return Tokenizer::from_folder(text_fixtures() / "trained_hf" / name.substr(0, name.size() - 3));
  }
  return Tokenizer::from_folder(text_fixtures() / "trained" / name);
}

inline std::uint64_t fnv1a64(const void* data, std::size_t n,
                             std::uint64_t h = 0xCBF29CE484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

inline std::uint64_t ids_hash(const std::vector<std::int64_t>& ids) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (auto id : ids) {
    unsigned char le[4] = {static_cast<unsigned char>(id), static_cast<unsigned char>(id >> 8),
                           static_cast<unsigned char>(id >> 16),
                           static_cast<unsigned char>(id >> 24)};
    h = fnv1a64(le, 4, h);
  }
  return h;
}

inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// record_tokenizer_corpus.mixed_text: xorshift64 over the fragment list.
inline std::string mixed_text(std::uint64_t seed, std::size_t n_bytes) {
  static const auto corpus = read_json(text_fixtures() / "tokenizer_corpus.json");
  const auto& fragments = corpus.at("fragments");
  std::uint64_t state = seed ? seed : 0x9E3779B97F4A7C15ull;
  std::string out;
  while (out.size() < n_bytes) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    out += fragments[state % fragments.size()].get<std::string>();
  }
  return out;
}

inline std::vector<std::int64_t> as_ids(const nlohmann::json& j) {
  return j.get<std::vector<std::int64_t>>();
}

}  // namespace strata::text::testing

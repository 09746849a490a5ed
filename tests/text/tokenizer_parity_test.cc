// Parity with the reference implementations on the fixture tokenizers:
// - expected/<name>.json: transformers' AutoTokenizer (and the tokenizers library) recorded on
//   the device machine by tests/fixtures/tools/record_tokenizer_reference.py;
// - expected_lib/<name>.json: the tokenizers library (Rust) through its Node bindings, recorded
//   here by record_tokenizer_lib.mjs; used where transformers agrees with it (byte-level).
// Streaming: the pieces of a StreamDecoder concatenate to decode() on every case.

#include <gtest/gtest.h>

#include "strata/text/tokenizer.h"
#include "text/tokenizer_testing.h"

namespace strata::text {
namespace {

using testing::as_ids;
using testing::load_named;
using testing::read_json;
using testing::text_fixtures;

std::string streamed(const Tokenizer& tok, const std::vector<std::int64_t>& ids, bool skip) {
  StreamDecoder stream(tok, skip);
  std::string out;
  for (auto id : ids) out += stream.push(id);
  out += stream.finish();
  return out;
}

std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out.size() > 200 ? out.substr(0, 200) + "..." : out;
}

class TransformersParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TransformersParity, EncodeDecodeAndStreamMatchTransformers) {
  auto path = text_fixtures() / "expected" / (GetParam() + ".json");
  auto expected = read_json(path);
  ASSERT_FALSE(expected.contains("error")) << expected.dump();
  Tokenizer tok = load_named(GetParam());
  EXPECT_EQ(tok.vocab_size(), expected.at("vocab_size").get<std::int64_t>());
  auto opt = [](const nlohmann::json& j) -> std::optional<std::int64_t> {
    if (j.is_null()) return std::nullopt;
    return j.get<std::int64_t>();
  };
  EXPECT_EQ(tok.bos_token_id(), opt(expected.at("bos_id")));
  EXPECT_EQ(tok.eos_token_id(), opt(expected.at("eos_id")));
  EXPECT_EQ(tok.pad_token_id(), opt(expected.at("pad_id")));
  for (const auto& c : expected.at("cases")) {
    std::string text = c.at("text");
    SCOPED_TRACE(show(text));
    auto enc = tok.encode_with_pieces(text, true);
    EXPECT_EQ(enc.ids, as_ids(c.at("ids")));
    EXPECT_EQ(enc.pieces, c.at("pieces").get<std::vector<std::string>>());
    EXPECT_EQ(tok.encode(text, false), as_ids(c.at("ids_plain")));
    if (c.contains("ids_split_special")) {
      EXPECT_EQ(tok.encode_plain(text), as_ids(c.at("ids_split_special")));
    }
    auto ids = as_ids(c.at("ids"));
    EXPECT_EQ(tok.decode(ids, false), c.at("decode").get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), c.at("decode_skip").get<std::string>());
    EXPECT_EQ(streamed(tok, ids, false), c.at("decode").get<std::string>());
    EXPECT_EQ(streamed(tok, ids, true), c.at("decode_skip").get<std::string>());
  }
  for (const auto& d : expected.at("decode_cases")) {
    auto ids = as_ids(d.at("ids"));
    SCOPED_TRACE(d.at("ids").dump());
    EXPECT_EQ(tok.decode(ids, false), d.at("decode").get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), d.at("decode_skip").get<std::string>());
    EXPECT_EQ(streamed(tok, ids, false), d.at("decode").get<std::string>());
    EXPECT_EQ(streamed(tok, ids, true), d.at("decode_skip").get<std::string>());
  }
}

// The 1 MB mixed text regenerated from its seed: its hash, then the ids, the decode and the
// streamed decode against the recorded hashes.
void expect_mixed_text_matches(const Tokenizer& tok, const nlohmann::json& expected) {
  std::string text = testing::mixed_text(expected.at("seed"), expected.at("bytes"));
  ASSERT_EQ(testing::hex64(testing::fnv1a64(text.data(), text.size())),
            expected.at("text_hash").get<std::string>());
  auto ids = tok.encode(text, false);
  EXPECT_EQ(ids.size(), expected.at("n_ids").get<std::size_t>());
  EXPECT_EQ(testing::hex64(testing::ids_hash(ids)), expected.at("ids_hash").get<std::string>());
  std::string decoded = tok.decode(ids);
  EXPECT_EQ(testing::hex64(testing::fnv1a64(decoded.data(), decoded.size())),
            expected.at("decode_hash").get<std::string>());
  EXPECT_EQ(streamed(tok, ids, false), decoded);
}

TEST_P(TransformersParity, OneMegabyteOfMixedTextMatchesTransformers) {
  auto path = text_fixtures() / "expected" / (GetParam() + ".json");
  auto expected = read_json(path).at("mixed");
  expect_mixed_text_matches(load_named(GetParam()), expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TransformersParity,
                         ::testing::Values("mistral", "phi3", "gpt2", "stories260K", "llama3",
                                           "qwen2", "gpt2_trained", "gemma3", "metaspace",
                                           "metaspace_split", "llama3_hf", "qwen2_hf",
                                           "gpt2_trained_hf", "gemma3_hf", "metaspace_hf",
                                           "metaspace_split_hf"));

Tokenizer tokenizer_json_alone(const std::string& name) {
  auto path = name == "stories260K" ? testing::stories_dir() / "tokenizer.json"
              : std::filesystem::exists(text_fixtures() / "trained" / name)
                  ? text_fixtures() / "trained" / name / "tokenizer.json"
                  : text_fixtures() / "tokenizers" / (name + ".tokenizer.json");
  return Tokenizer::from_json(testing::read_file(path), {}, {}, path.string());
}

// The tokenizers library's own results on tokenizer.json alone (no tokenizer_config.json, so
// none of transformers' class-specific pipelines): the component semantics, file by file.
class LibParity : public ::testing::TestWithParam<std::string> {};
TEST_P(LibParity, TokenizerJsonAloneMatchesTheRustLibrary) {
  auto expected = read_json(text_fixtures() / "expected_lib" / (GetParam() + ".json"));
  Tokenizer tok = tokenizer_json_alone(GetParam());
  for (const auto& c : expected.at("cases")) {
    std::string text = c.at("text");
    SCOPED_TRACE(show(text));
    EXPECT_EQ(tok.encode(text, false), as_ids(c.at("ids_plain")));
    EXPECT_EQ(tok.encode(text, true), as_ids(c.at("ids")));
    auto ids = as_ids(c.at("ids"));
    EXPECT_EQ(tok.decode(ids, false), c.at("decode").get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), c.at("decode_skip").get<std::string>());
    EXPECT_EQ(streamed(tok, ids, false), tok.decode(ids));
  }
}
TEST_P(LibParity, OneMegabyteOfMixedTextMatchesTheRustLibrary) {
  auto expected = read_json(text_fixtures() / "expected_lib" / (GetParam() + ".json")).at("mixed");
  expect_mixed_text_matches(tokenizer_json_alone(GetParam()), expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LibParity,
                         ::testing::Values("gpt2", "mistral", "phi3", "stories260K", "llama3",
                                           "qwen2", "gpt2_trained", "gemma3", "metaspace",
                                           "metaspace_split"));

// transformers 5 (AutoTokenizer) on the Mistral and Phi-3 files, as measured on the device
// machine and stated in the issue: "   " is "▁▁▁" (Mistral: [2287]; tokenizer.json alone gives
// "▁▁▁▁" [260]): no "▁" prefix in front of a leading space. With legacy=false (Phi-3) the prefix
// goes only at the start of the text, not after an added token.
TEST(TransformersSentencePiece, NoPrefixBeforeLeadingSpaceAndLegacyRule) {
  Tokenizer mistral = load_named("mistral");
  EXPECT_EQ(mistral.encode("   ", false), (std::vector<std::int64_t>{2287}));
  for (const char* name : {"mistral", "phi3"}) {
    SCOPED_TRACE(name);
    Tokenizer tok = load_named(name);
    auto three = tok.token_to_id("\u2581\u2581\u2581");
    ASSERT_TRUE(three);
    EXPECT_EQ(tok.encode("   ", false), (std::vector<std::int64_t>{*three}));
    std::vector<std::int64_t> spaces{*three};
    EXPECT_EQ(tok.decode(spaces), "  ");  // Strip removes the first of the three spaces
  }
  Tokenizer phi3 = load_named("phi3");  // legacy=false: prepend_scheme "first"
  auto hello = phi3.encode("Hello", false);
  auto after = phi3.encode("<s>Hello", false);
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after.front(), 1);
  EXPECT_NE(std::vector<std::int64_t>(after.begin() + 1, after.end()), hello);
  Tokenizer mistral_legacy = load_named("mistral");  // legacy=true: prepend_scheme "always"
  auto m_after = mistral_legacy.encode("<s>Hello", false);
  EXPECT_EQ(std::vector<std::int64_t>(m_after.begin() + 1, m_after.end()),
            mistral_legacy.encode("Hello", false));
}

// llama2.c's own SentencePiece encoding of the built-in model's strings (ids include BOS).
TEST(Stories260K, MatchesLlama2cReferenceEncodings) {
  auto expected = read_json(testing::stories_dir() / "reference_encodings.json");
  Tokenizer tok = load_named("stories260K");
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    if (it.key().rfind("  ", 0) == 0)
      continue;  // leading spaces: transformers differs (PROVENANCE.md)
    SCOPED_TRACE(it.key());
    EXPECT_EQ(tok.encode(it.key(), true), as_ids(it.value()));
  }
}

}  // namespace
}  // namespace strata::text

// Loading: malformed files are CheckpointError naming file, JSON path and value; unknown
// components are NotSupported naming the same; nothing crashes.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "strata/core/error.h"
#include "strata/text/tokenizer.h"
#include "text/tokenizer_testing.h"

namespace strata::text {
namespace {

using nlohmann::json;

// A tiny valid byte-level-free BPE: a b c ab abc.
json tiny() {
  return json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 5, "content": "<s>", "special": true, "lstrip": false,
                      "rstrip": false, "normalized": false, "single_word": false}],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
              "merges": ["a b", ["ab", "c"]]}
  })");
}

template <typename E>
std::string error_of(const json& j, const std::string& config = {}) {
  try {
    Tokenizer::from_json(j.dump(), config, {}, "tiny.json");
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong error type: ") + e.what();
  }
  return "no error";
}

TEST(TokenizerLoading, TinyTokenizerEncodesWithMergesInRankOrder) {
  Tokenizer tok = Tokenizer::from_json(tiny().dump());
  EXPECT_EQ(tok.encode("abc"), (std::vector<std::int64_t>{4}));
  EXPECT_EQ(tok.encode("abca<s>b"), (std::vector<std::int64_t>{4, 0, 5, 1}));
  EXPECT_EQ(tok.encode_plain("a<s>"), (std::vector<std::int64_t>{0}));  // '<', 's', '>' unknown
  EXPECT_EQ(tok.vocab_size(), 6);
  EXPECT_EQ(tok.token_to_id("ab"), 3);
  EXPECT_EQ(tok.token_to_id("<s>"), 5);
  EXPECT_FALSE(tok.token_to_id("zz"));
  EXPECT_EQ(tok.id_to_token(5), "<s>");
  EXPECT_TRUE(tok.is_special(5));
  EXPECT_FALSE(tok.is_special(3));
  EXPECT_THROW(tok.id_to_token(6), InvalidArgument);
  EXPECT_THROW(tok.id_to_token(-1), InvalidArgument);
  std::vector<std::int64_t> bad{0, 99};
  EXPECT_THROW(tok.decode(bad), InvalidArgument);
  // No decoder: tokens joined by spaces, as the reference.
  std::vector<std::int64_t> ids{3, 2, 5};
  EXPECT_EQ(tok.decode(ids), "ab c <s>");
  EXPECT_EQ(tok.decode(ids, true), "ab c");
}

TEST(TokenizerLoading, MalformedFilesNameFileAndPath) {
  EXPECT_NE(error_of<CheckpointError>(json::parse("[1]")).find("tiny.json"), std::string::npos);
  auto j = tiny();
  j.erase("model");
  EXPECT_NE(error_of<CheckpointError>(j).find("'model'"), std::string::npos);
  j = tiny();
  j["model"]["merges"].push_back("a zz");
  std::string e = error_of<CheckpointError>(j);
  EXPECT_NE(e.find("$.model.merges[2]"), std::string::npos) << e;
  EXPECT_NE(e.find("zz"), std::string::npos) << e;
  j = tiny();
  j["model"]["vocab"]["a"] = "zero";
  EXPECT_NE(error_of<CheckpointError>(j).find("should be an integer"), std::string::npos);
  j = tiny();
  j["model"]["vocab"]["a"] = -3;
  EXPECT_NE(error_of<CheckpointError>(j).find("[0, 2^31)"), std::string::npos);
  // A sparse id space would size the id -> token table by its largest id (found by fuzzing).
  j = tiny();
  j["model"]["vocab"]["b"] = 663333369;
  e = error_of<CheckpointError>(j);
  EXPECT_NE(e.find("$.model.vocab"), std::string::npos) << e;
  EXPECT_NE(e.find("663333369"), std::string::npos) << e;
  j = tiny();
  j["added_tokens"][0]["id"] = -1;
  EXPECT_NE(error_of<CheckpointError>(j).find("added_tokens[0].id"), std::string::npos);
  j = tiny();
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(error_of<CheckpointError>(j).find("does not compile"), std::string::npos);
  j = tiny();
  j["decoder"] = {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}};
  EXPECT_NE(error_of<CheckpointError>(j).find("one character"), std::string::npos);
  EXPECT_NE(error_of<CheckpointError>(tiny(), "{not json").find("tokenizer_config.json"),
            std::string::npos);
  j = tiny();
  j["model"]["unk_token"] = "<unk>";
  EXPECT_NE(error_of<CheckpointError>(j).find("<unk>"), std::string::npos);
}

TEST(TokenizerLoading, UnknownComponentsAreNotSupportedWithPathAndValue) {
  auto j = tiny();
  j["model"]["type"] = "Unigram";
  std::string e = error_of<NotSupported>(j);
  EXPECT_NE(e.find("$.model.type"), std::string::npos) << e;
  EXPECT_NE(e.find("Unigram"), std::string::npos) << e;
  j = tiny();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_NE(error_of<NotSupported>(j).find("$.normalizer.type"), std::string::npos);
  j = tiny();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_NE(error_of<NotSupported>(j).find("Whitespace"), std::string::npos);
  j = tiny();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(error_of<NotSupported>(j).find("$.decoder.type"), std::string::npos);
  j = tiny();
  j["post_processor"] = {{"type", "BertProcessing"}};
  EXPECT_NE(error_of<NotSupported>(j).find("BertProcessing"), std::string::npos);
  j = tiny();
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
  EXPECT_NE(error_of<NotSupported>(j).find("Sideways"), std::string::npos);
  j = tiny();
  j["model"]["continuing_subword_prefix"] = "##";
  EXPECT_NE(error_of<NotSupported>(j).find("continuing_subword_prefix"), std::string::npos);
  j = tiny();
  j["truncation"] = {{"max_length", 4}};
  EXPECT_NE(error_of<NotSupported>(j).find("$.truncation"), std::string::npos);
}

// As transformers: a special token named in tokenizer_config.json that the vocabulary lacks is
// added as a new special token (recorded: GemmaTokenizer's default "<mask>" becomes id 1500 of
// the gemma3 fixture, expected/gemma3.json vocab_size 1501).
TEST(TokenizerLoading, NamedSpecialTokenMissingFromTheVocabularyIsAdded) {
  Tokenizer tok =
      Tokenizer::from_json(tiny().dump(), R"({"bos_token": "<new>", "eos_token": "<s>"})");
  EXPECT_EQ(tok.bos_token_id(), 6);
  EXPECT_EQ(tok.eos_token_id(), 5);
  EXPECT_EQ(tok.vocab_size(), 7);
  EXPECT_TRUE(tok.is_special(6));
  EXPECT_EQ(tok.encode("a<new>"), (std::vector<std::int64_t>{0, 6}));
  Tokenizer gemma = testing::load_named("gemma3");
  EXPECT_EQ(gemma.token_to_id("<mask>"), 1500);
}

TEST(TokenizerLoading, FolderWithoutTokenizerJsonIsAnIoError) {
  EXPECT_THROW(Tokenizer::from_folder(testing::text_fixtures()), IoError);
}

TEST(TokenizerLoading, ConfigFilesGiveSpecialIdsAndTemplate) {
  Tokenizer tok = testing::load_named("stories260K");
  EXPECT_EQ(tok.bos_token_id(), 1);
  EXPECT_EQ(tok.eos_token_id(), 2);
  EXPECT_FALSE(tok.pad_token_id());
  auto ids = tok.encode("x");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_NE(tok.encode("x", false).front(), 1);
  // add_eos_token from tokenizer_config.json adds the eos at the end.
  auto folder = testing::stories_dir();
  auto config = nlohmann::json::parse(testing::read_file(folder / "tokenizer_config.json"));
  config["add_eos_token"] = true;
  config["add_bos_token"] = false;
  Tokenizer eos =
      Tokenizer::from_json(testing::read_file(folder / "tokenizer.json"), config.dump());
  auto e = eos.encode("x");
  EXPECT_EQ(e.back(), 2);
  EXPECT_NE(e.front(), 1);
}

TEST(TokenizerLoading, CopiesShareStateAndWorkAcrossThreads) {
  Tokenizer tok = testing::load_named("gpt2");
  Tokenizer moved = std::move(tok);
  std::string text = testing::mixed_text(5, 20000);
  auto expected = moved.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Tokenizer copy = moved;
      ok[static_cast<std::size_t>(t)] =
          copy.encode(text) == expected && copy.decode(expected) == moved.decode(expected);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, (std::vector<int>{1, 1, 1, 1}));
}

}  // namespace
}  // namespace strata::text

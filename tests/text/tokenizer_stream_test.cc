// StreamDecoder: the pieces concatenate to decode() of all ids (random id sequences, encoded
// text, skip_special on and off), each piece is valid UTF-8, and text comes out as soon as it
// is final.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "strata/core/error.h"
#include "strata/text/tokenizer.h"
#include "text/tokenizer_testing.h"
#include "text/utf8.h"

namespace strata::text {
namespace {

std::vector<std::string> stream_pieces(const Tokenizer& tok, const std::vector<std::int64_t>& ids,
                                       bool skip) {
  StreamDecoder stream(tok, skip);
  std::vector<std::string> pieces;
  for (auto id : ids) pieces.push_back(stream.push(id));
  pieces.push_back(stream.finish());
  return pieces;
}

class StreamProperty : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamProperty, PiecesConcatenateToDecodeAndAreValidUtf8) {
  Tokenizer tok = testing::load_named(GetParam());
  std::mt19937_64 rng(11);
  auto n = tok.vocab_size();
  for (int round = 0; round < 300; ++round) {
    std::vector<std::int64_t> ids;
    std::size_t len = 1 + rng() % 40;
    for (std::size_t k = 0; k < len; ++k) {
      // Low ids often: byte-fallback tokens, specials; the rest anywhere.
      ids.push_back(static_cast<std::int64_t>(rng() % 3 == 0
                                                  ? rng() % std::min<std::int64_t>(n, 300)
                                                  : rng() % static_cast<std::uint64_t>(n)));
    }
    for (bool skip : {false, true}) {
      auto pieces = stream_pieces(tok, ids, skip);
      std::string all;
      for (const auto& p : pieces) {
        EXPECT_EQ(detail::valid_utf8_prefix(p), p.size());
        all += p;
      }
      ASSERT_EQ(all, tok.decode(ids, skip)) << "round " << round;
    }
  }
  std::string text = testing::mixed_text(3, 50000);
  auto ids = tok.encode(text);
  std::string all;
  for (const auto& p : stream_pieces(tok, ids, false)) all += p;
  EXPECT_EQ(all, tok.decode(ids));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamProperty,
                         ::testing::Values("gpt2", "mistral", "phi3", "stories260K"));

TEST(StreamDecoder, EmitsWordsAsSoonAsTheyAreFinal) {
  Tokenizer tok = testing::load_named("mistral");
  auto ids = tok.encode("Hello world", true);  // <s> ▁Hello ▁world
  ASSERT_EQ(ids.size(), 3u);
  StreamDecoder stream(tok, true);
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "Hello");
  EXPECT_EQ(stream.push(ids[2]), " world");
  EXPECT_EQ(stream.finish(), "");
}

TEST(StreamDecoder, ByteFallbackCharacterComesOutWhole) {
  Tokenizer tok = testing::load_named("stories260K");
  auto ids = tok.encode("日", false);  // ▁ then three byte tokens
  std::vector<std::string> pieces;
  StreamDecoder stream(tok);
  for (auto id : ids) pieces.push_back(stream.push(id));
  pieces.push_back(stream.finish());
  std::string all;
  for (const auto& p : pieces) all += p;
  EXPECT_EQ(all, tok.decode(ids));
  EXPECT_NE(std::find(pieces.begin(), pieces.end(), "日"), pieces.end())
      << "no whole-character piece";
}

TEST(StreamDecoder, ByteLevelMultiByteCharacterIsNeverSplit) {
  Tokenizer tok = testing::load_named("gpt2");
  auto ids = tok.encode("👨\u200d👩\u200d👧 ok", false);
  std::string all;
  for (const auto& p : stream_pieces(tok, ids, false)) {
    EXPECT_EQ(p.find("\xEF\xBF\xBD"), std::string::npos) << "a replacement character was streamed";
    all += p;
  }
  EXPECT_EQ(all, "👨\u200d👩\u200d👧 ok");
}

TEST(StreamDecoder, NoCleanUpForBpeEvenWhenTheConfigAsks) {
  // GPT-2's tokenizer_config.json sets clean_up_tokenization_spaces, which transformers 5
  // ignores for BPE tokenizers (recorded: its decodes give back the text exactly).
  Tokenizer tok = testing::load_named("gpt2");
  auto ids = tok.encode("Hello . I 'm here , you n't", false);
  std::string all;
  for (const auto& p : stream_pieces(tok, ids, false)) all += p;
  EXPECT_EQ(all, tok.decode(ids));
  EXPECT_EQ(all, "Hello . I 'm here , you n't");
}

TEST(StreamDecoder, OutOfRangeIdIsRefused) {
  Tokenizer tok = testing::load_named("gpt2");
  StreamDecoder stream(tok);
  EXPECT_THROW(stream.push(tok.vocab_size()), InvalidArgument);
  EXPECT_THROW(stream.push(-1), InvalidArgument);
}

}  // namespace
}  // namespace strata::text

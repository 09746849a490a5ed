#include "strata/engine/stopping.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "strata/core/error.h"

namespace strata::engine {
namespace {

TEST(StopCriteria, EosMaxNewTokensAndContextLimit) {
  const StopCriteria stop({2, 7}, 5, 20);
  EXPECT_FALSE(stop.after_token(3, 1, 11).stopped());
  EXPECT_EQ(stop.after_token(7, 1, 11).reason, FinishReason::Stop);
  EXPECT_EQ(stop.after_token(2, 5, 11).reason, FinishReason::Stop);  // eos wins over length
  EXPECT_EQ(stop.after_token(3, 5, 15).reason, FinishReason::Length);
  const StopDecision full = stop.after_token(3, 2, 20);
  EXPECT_EQ(full.reason, FinishReason::Length);
  EXPECT_NE(full.message.find("context limit of 20"), std::string::npos) << full.message;
  EXPECT_FALSE(StopCriteria({}, 5, 0).after_token(3, 1, 1'000'000).stopped());  // no limit
  EXPECT_EQ(to_string(FinishReason::Stop), "stop");
  EXPECT_EQ(to_string(FinishReason::Length), "length");
}

TEST(StopCriteria, RefusesAPromptThatLeavesNoRoom) {
  StopCriteria::check_prompt(19, 20);
  StopCriteria::check_prompt(5000, 0);
  EXPECT_THROW(StopCriteria::check_prompt(20, 20), InvalidArgument);
  EXPECT_THROW(StopCriteria::check_prompt(0, 20), InvalidArgument);
  try {
    StopCriteria::check_prompt(30, 20);
    ADD_FAILURE() << "a 30-token prompt fit a 20-token context";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("30 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("at most 19"), std::string::npos) << e.what();
  }
  EXPECT_THROW(StopCriteria({}, 0, 10), InvalidArgument);
}

// Feeds `chunks` and returns everything emitted (flushed at the end unless stopped).
std::string stream(StopStringMatcher& m, const std::vector<std::string>& chunks) {
  std::string out;
  for (const std::string& c : chunks) {
    const auto piece = m.feed(c);
    out += piece.text;
    if (piece.stopped) return out;
  }
  return out + m.flush();
}

TEST(StopStringMatcher, FindsAStopStringAcrossChunksAndDropsIt) {
  StopStringMatcher m({"###"});
  EXPECT_EQ(m.feed("Hello #").text, "Hello ");  // "#" could start "###"
  EXPECT_EQ(m.feed("#").text, "");
  const auto piece = m.feed("# and more");
  EXPECT_TRUE(piece.stopped);
  EXPECT_EQ(piece.text, "");
  EXPECT_EQ(piece.stop, "###");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.flush(), "");
  EXPECT_TRUE(m.feed("later").stopped);
}

TEST(StopStringMatcher, ReleasesHeldTextThatDidNotMatch) {
  StopStringMatcher m({"</s>", "User:"});
  EXPECT_EQ(m.feed("a <").text, "a ");
  EXPECT_EQ(m.feed("/b").text, "</b");
  EXPECT_EQ(m.feed(" Us").text, " ");
  EXPECT_EQ(m.feed("e").text, "");
  EXPECT_EQ(m.feed("d").text, "Used");
  EXPECT_EQ(m.feed("Use").text, "");
  EXPECT_EQ(m.flush(), "Use");  // the end of the stream releases the tail
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcher, EarliestStopWinsAndTextBeforeItIsKept) {
  StopStringMatcher m({"world", "lo w"});
  EXPECT_EQ(stream(m, {"hel", "lo wor", "ld"}), "hel");
  StopStringMatcher one_chunk({"\n\n"});
  EXPECT_EQ(stream(one_chunk, {"line one\n\nline two"}), "line one");
  StopStringMatcher none({});
  EXPECT_EQ(stream(none, {"a", "b"}), "ab");
  StopStringMatcher utf8({"\xC3\xA9t\xC3\xA9"});  // "été"
  EXPECT_EQ(stream(utf8, {"l'\xC3\xA9", "t\xC3\xA9 !"}), "l'");
  EXPECT_THROW(StopStringMatcher({"ok", ""}), InvalidArgument);
}

}  // namespace
}  // namespace strata::engine

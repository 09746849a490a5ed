// `strata tokenize` / `strata detokenize` on the built-in model's tokenizer, in a folder that holds
// only the tokenizer files (no config.json, no weights). Expected ids: llama2.c's own encoding of
// "Once upon a time" (models/stories260K/reference_encodings.json).

#include "tokenize_command.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "io/io_testing.h"
#include "strata/core/error.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

class TokenizeCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path model =
        fs::path(STRATA_TEST_FIXTURES_DIR).parent_path().parent_path() / "models" / "stories260K";
    for (const char* name :
         {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      fs::copy_file(model / name, dir_.path() / name);
    }
    ASSERT_FALSE(fs::exists(dir_.path() / "config.json"));
  }
  TempDir dir_;
};

TEST_F(TokenizeCommandTest, PrintsTheIdsWithAndWithoutSpecialTokens) {
  TokenizeArgs args;
  args.model_dir = dir_.path().string();
  args.text = "Once upon a time";
  std::ostringstream out;
  EXPECT_EQ(run_tokenize(args, out), 0);
  EXPECT_EQ(out.str(), "1,403,407,261,378\n");

  args.no_special = true;
  args.pieces = true;
  std::ostringstream plain;
  run_tokenize(args, plain);
  EXPECT_EQ(plain.str(), "403,407,261,378\n[\"▁Once\",\"▁upon\",\"▁a\",\"▁time\"]\n");
}

TEST_F(TokenizeCommandTest, EncodesAFile) {
  testing::write_text(dir_.path() / "prompt.txt", "Once upon a time");
  TokenizeArgs args;
  args.model_dir = dir_.path().string();
  args.file = (dir_.path() / "prompt.txt").string();
  std::ostringstream out;
  run_tokenize(args, out);
  EXPECT_EQ(out.str(), "1,403,407,261,378\n");
}

TEST_F(TokenizeCommandTest, DetokenizePrintsTheTextExactly) {
  DetokenizeArgs args;
  args.model_dir = dir_.path().string();
  args.ids = "1,403,407,261,378";
  args.skip_special = true;
  std::ostringstream out;
  EXPECT_EQ(run_detokenize(args, out), 0);
  EXPECT_EQ(out.str(), "Once upon a time");  // nothing added, not even a newline
}

TEST_F(TokenizeCommandTest, BadInputIsAClearError) {
  DetokenizeArgs args;
  args.model_dir = dir_.path().string();
  args.ids = "1,512";
  std::ostringstream out;
  EXPECT_THROW(
      {
        try {
          run_detokenize(args, out);
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("512 is out of range"), std::string::npos)
              << e.what();
          throw;
        }
      },
      InvalidArgument);

  TokenizeArgs missing;
  missing.model_dir = (dir_.path() / "nowhere").string();
  missing.text = "x";
  EXPECT_THROW(run_tokenize(missing, out), Error);
}

}  // namespace
}  // namespace strata::cli

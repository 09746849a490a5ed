// `strata template` on model folders built from the chat template fixtures: the printed prompt is
// what jinja2 with transformers' environment renders (expected.json, recorded by
// tests/fixtures/tools/record_chat_templates.py), wherever the folder keeps its template and
// special tokens; bad input is a clear error naming what is wrong.

#include "template_command.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/io_testing.h"
#include "strata/core/error.h"
#include "strata/text/chat_template.h"

namespace strata::cli {
namespace {

using testing::TempDir;
using testing::write_text;

const std::string kTemplates = std::string(STRATA_TEST_FIXTURES_DIR) + "/text/chat_templates/";

nlohmann::ordered_json load_expected() {
  std::ifstream in(kTemplates + "expected.json");
  return nlohmann::ordered_json::parse(in);
}

const nlohmann::ordered_json& recorded(const std::string& tmpl, const std::string& conversation,
                                       bool agp, bool with_tools,
                                       const nlohmann::ordered_json& extra) {
  static const nlohmann::ordered_json all = load_expected();
  for (const auto& c : all["templates"]) {
    if (c["template"] == tmpl && c["conversation"] == conversation &&
        c["add_generation_prompt"] == agp && c["tools"].is_null() != with_tools &&
        c["extra"] == extra) {
      return c;
    }
  }
  throw std::runtime_error("no recorded case " + tmpl + " / " + conversation);
}

class TemplateCommandTest : public ::testing::Test {
 protected:
  // A model folder whose tokenizer_config.json carries `config` (chat_template added when given).
  void write_config(nlohmann::ordered_json config) {
    write_text(dir_ / "tokenizer_config.json", config.dump(2));
  }
  TemplateArgs args_for(const nlohmann::ordered_json& c) {
    write_text(dir_ / "messages.json", c["messages"].dump());
    TemplateArgs a;
    a.model_dir = dir_.path().string();
    a.messages_file = (dir_ / "messages.json").string();
    a.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    if (!c["tools"].is_null()) {
      write_text(dir_ / "tools.json", c["tools"].dump());
      a.tools_file = (dir_ / "tools.json").string();
    }
    if (!c["extra"].empty()) a.kwargs = c["extra"].dump();
    a.now = "2024-07-26T10:30:00";
    return a;
  }
  static std::string run(const TemplateArgs& a) {
    std::ostringstream out;
    EXPECT_EQ(run_template(a, out), 0);
    return out.str();
  }
  TempDir dir_;
};

TEST_F(TemplateCommandTest, PrintsTheRecordedPromptFromTokenizerConfig) {
  const auto& c =
      recorded("llama3.2.jinja", "tool_round_trip", true, true, nlohmann::ordered_json::object());
  write_config({{"bos_token", "<|begin_of_text|>"},
                {"eos_token", "<|eot_id|>"},
                {"chat_template", testing::read_text(kTemplates + "llama3.2.jinja")}});
  EXPECT_EQ(run(args_for(c)), c["expected"].get<std::string>());
}

TEST_F(TemplateCommandTest, KwargsReachTheTemplate) {
  const auto& c = recorded("qwen3.jinja", "thinking", true, false, {{"enable_thinking", false}});
  write_config({{"eos_token", "<|im_end|>"},
                {"pad_token", "<|endoftext|>"},
                {"chat_template", testing::read_text(kTemplates + "qwen3.jinja")}});
  EXPECT_EQ(run(args_for(c)), c["expected"].get<std::string>());
}

TEST_F(TemplateCommandTest, NamedTemplateListUsesDefaultAndTokensMayBeObjects) {
  const auto& c =
      recorded("mistral-nemo.jinja", "multi_turn", false, false, nlohmann::ordered_json::object());
  write_config({{"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
                {"eos_token", "</s>"},
                {"unk_token", "<unk>"},
                {"chat_template",
                 {{{"name", "tool_use"}, {"template", "unused {{ tools }}"}},
                  {{"name", "default"},
                   {"template", testing::read_text(kTemplates + "mistral-nemo.jinja")}}}}});
  EXPECT_EQ(run(args_for(c)), c["expected"].get<std::string>());
}

TEST_F(TemplateCommandTest, ChatTemplateJinjaFileAndSpecialTokensMap) {
  const auto& c =
      recorded("gemma3.jinja", "multi_turn", true, false, nlohmann::ordered_json::object());
  write_config({{"bos_token", "<wrong>"}, {"chat_template", "ignored: the .jinja file wins"}});
  write_text(dir_ / "chat_template.jinja", testing::read_text(kTemplates + "gemma3.jinja"));
  write_text(
      dir_ / "special_tokens_map.json",
      R"({"bos_token": {"content": "<bos>", "lstrip": false}, "eos_token": "<eos>", "pad_token": "<pad>"})");
  EXPECT_EQ(run(args_for(c)), c["expected"].get<std::string>());
}

TEST_F(TemplateCommandTest, RaiseExceptionIsATypedErrorWithTheTemplatesMessage) {
  const auto& c =
      recorded("gemma3.jinja", "not_alternating", false, false, nlohmann::ordered_json::object());
  ASSERT_TRUE(c.value("raised", false));
  write_text(dir_ / "chat_template.jinja", testing::read_text(kTemplates + "gemma3.jinja"));
  try {
    run(args_for(c));
    FAIL() << "expected TemplateRaisedError";
  } catch (const text::TemplateRaisedError& e) {
    EXPECT_EQ("raised: " + e.message(), c["error"].get<std::string>());
    EXPECT_NE(std::string(e.what()).find("chat_template.jinja:"), std::string::npos) << e.what();
  }
}

TEST_F(TemplateCommandTest, FolderWithoutTemplateIsAnErrorNamingTheFolder) {
  write_config({{"eos_token", "</s>"}});
  write_text(dir_ / "messages.json", "[]");
  TemplateArgs a;
  a.model_dir = dir_.path().string();
  a.messages_file = (dir_ / "messages.json").string();
  EXPECT_FALSE(text::ChatTemplate::folder_has_template(dir_.path()));
  try {
    run(a);
    FAIL() << "expected TemplateError";
  } catch (const text::TemplateError& e) {
    EXPECT_NE(std::string(e.what()).find(dir_.path().string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no chat template"), std::string::npos) << e.what();
  }
}

TEST_F(TemplateCommandTest, BadArgumentsAreClearErrors) {
  write_config({{"chat_template", "{{ messages|length }}"}});
  write_text(dir_ / "messages.json", R"([{"role": "user", "content": "hi"}])");
  TemplateArgs a;
  a.model_dir = dir_.path().string();
  a.messages_file = (dir_ / "messages.json").string();
  EXPECT_EQ(run(a), "1");

  TemplateArgs bad = a;
  bad.kwargs = "{not json";
  EXPECT_THROW(run_template(bad, std::cout), InvalidArgument);
  bad.kwargs = "[1]";
  EXPECT_THROW(run_template(bad, std::cout), InvalidArgument);
  bad = a;
  bad.now = "26 July";
  EXPECT_THROW(run_template(bad, std::cout), InvalidArgument);
  bad = a;
  bad.messages_file = (dir_ / "missing.json").string();
  EXPECT_THROW(run_template(bad, std::cout), IoError);
  write_text(dir_ / "object.json", R"({"role": "user"})");
  bad = a;
  bad.messages_file = (dir_ / "object.json").string();
  EXPECT_THROW(run_template(bad, std::cout), InvalidArgument);
}

}  // namespace
}  // namespace strata::cli

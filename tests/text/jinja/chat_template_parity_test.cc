// Strata's interpreter against jinja2 with transformers' environment, byte for byte: every
// fixture chat template over the recorded conversations, and the one-feature snippets.
// Expected values: tests/fixtures/tools/record_chat_templates.py (expected.json).

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "strata/text/chat_template.h"

namespace strata::text {
namespace {

const std::string kDir = std::string(STRATA_TEST_FIXTURES_DIR) + "/text/chat_templates/";

const nlohmann::ordered_json& expected() {
  static const nlohmann::ordered_json j = [] {
    std::ifstream in(kDir + "expected.json");
    return nlohmann::ordered_json::parse(in);
  }();
  return j;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// 2024-07-26 10:30:00, as the recording script pins strftime_now.
ChatTemplateOptions pinned_options() {
  ChatTemplateOptions o;
  o.now = std::chrono::sys_days{std::chrono::year{2024} / 7 / 26} + std::chrono::hours{10} +
          std::chrono::minutes{30};
  return o;
}

// Renders and compares with the recorded text or error; returns a failure description or "".
std::string check(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                  const ChatTemplateOptions& o, const nlohmann::ordered_json& c) {
  try {
    const std::string got = t.render(messages, o);
    if (c.contains("error"))
      return "expected error '" + c["error"].get<std::string>() + "', got text:\n" + got;
    const std::string want = c["expected"].get<std::string>();
    if (got != want) return "text differs.\n--- expected ---\n" + want + "\n--- got ---\n" + got;
  } catch (const TemplateRaisedError& e) {
    if (!c.contains("error")) return std::string("unexpected raise_exception: ") + e.what();
    if (!c.value("raised", false))
      return std::string("raised, but jinja2 failed otherwise: ") + c["error"].get<std::string>();
    if (c["error"].get<std::string>() != "raised: " + e.message()) {
      return "raise_exception message differs: expected '" + c["error"].get<std::string>() +
             "', got '" + e.message() + "'";
    }
  } catch (const TemplateError& e) {
    if (!c.contains("error")) return std::string("unexpected error: ") + e.what();
    if (c.value("raised", false))
      return std::string("jinja2 raised_exception, Strata failed otherwise: ") + e.what();
  }
  return "";
}

TEST(ChatTemplateParity, EveryFixtureTemplateOverTheRecordedConversations) {
  const auto& cases = expected()["templates"];
  ASSERT_GT(cases.size(), 500u);
  std::map<std::string, ChatTemplate> templates;
  int failures = 0;
  for (const auto& c : cases) {
    const std::string name = c["template"].get<std::string>();
    if (!templates.contains(name)) {
      templates.emplace(
          name, ChatTemplate(read_text(kDir + name),
                             c["special_tokens"].get<std::map<std::string, std::string>>(), name));
    }
    ChatTemplateOptions o = pinned_options();
    o.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    o.tools = c["tools"];
    o.extra = c["extra"];
    const std::string problem = check(templates.at(name), c["messages"], o, c);
    if (!problem.empty() && ++failures <= 15) {
      ADD_FAILURE() << name << " / " << c["conversation"].get<std::string>()
                    << " add_generation_prompt=" << o.add_generation_prompt
                    << " tools=" << o.tools.dump() << " extra=" << o.extra.dump() << ": "
                    << problem;
    }
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " renders";
}

TEST(ChatTemplateParity, Snippets) {
  int failures = 0;
  for (const auto& c : expected()["snippets"]) {
    const std::string name = c["name"].get<std::string>();
    std::string problem;
    try {
      const ChatTemplate t(c["source"].get<std::string>(), {}, name);
      ChatTemplateOptions o = pinned_options();
      o.extra = c["vars"];
      problem = check(t, nlohmann::ordered_json::array(), o, c);
    } catch (const TemplateError& e) {  // a parse error
      if (!c.contains("error")) problem = std::string("unexpected parse error: ") + e.what();
    }
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << name << ": " << problem;
    }
  }
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace strata::text

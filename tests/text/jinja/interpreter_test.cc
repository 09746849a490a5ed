// The interpreter's guarantees beyond parity with jinja2: errors name the template, line and
// column; raise_exception is a typed error carrying the template's message; pathological templates
// end in clear errors (recursion, nesting, output size, loop iterations), never a hang or a crash;
// inputs are checked.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "strata/text/chat_template.h"

namespace strata::text {
namespace {

std::string render(const std::string& source,
                   nlohmann::ordered_json extra = nlohmann::ordered_json::object()) {
  ChatTemplateOptions o;
  o.extra = std::move(extra);
  return ChatTemplate(source, {}, "t.jinja").render(nlohmann::ordered_json::array(), o);
}

// The TemplateError message `source` renders to (fails the test when it renders).
std::string error_of(const std::string& source,
                     nlohmann::ordered_json extra = nlohmann::ordered_json::object()) {
  try {
    render(source, std::move(extra));
  } catch (const TemplateError& e) {
    return e.what();
  }
  ADD_FAILURE() << "rendered without error: " << source.substr(0, 80);
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(JinjaErrors, RenderErrorsNameLineAndColumn) {
  EXPECT_CONTAINS(error_of("line one\n{% for m in x %}\n  {{ m.a.b }}{% endfor %}", {{"x", {1}}}),
                  "t.jinja:3:9: 'int' object has no attribute 'a' (reading its attribute 'b')");
  EXPECT_CONTAINS(error_of("{{ 'a' +\n 1 }}"), "t.jinja:1:8: TypeError: can only concatenate str");
  EXPECT_CONTAINS(error_of("{{ missing() }}"), "t.jinja:1:4: 'missing' is undefined");
  EXPECT_CONTAINS(error_of("{% for x in none %}{% endfor %}"),
                  "t.jinja:1:4: TypeError: 'NoneType'");
}

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  EXPECT_CONTAINS(error_of("{% if x %}\n  {% endfor %}"), "t.jinja:2:6: unexpected 'endfor'");
  EXPECT_CONTAINS(error_of("{% if x %}never closed"),
                  "t.jinja:1:23: unexpected end of template: expected 'elif' or 'else' or 'endif'");
  EXPECT_CONTAINS(error_of("ok\n{{ 'unterminated }}"), "t.jinja:2:4: unterminated string literal");
  EXPECT_CONTAINS(error_of("{{ x "), "t.jinja:1:1: unclosed expression");
  EXPECT_CONTAINS(error_of("{# comment"), "t.jinja:1:1: unclosed comment");
  EXPECT_CONTAINS(error_of("{{ a ! b }}"), "t.jinja:1:6: unexpected character '!'");
  EXPECT_CONTAINS(error_of("{% break %}"), "'break' outside of a loop");
}

TEST(JinjaErrors, UnsupportedConstructsAreNamed) {
  EXPECT_CONTAINS(error_of("\n{% include 'x.jinja' %}"), "t.jinja:2:4: unsupported tag 'include'");
  EXPECT_CONTAINS(error_of("{% extends 'base' %}"), "unsupported tag 'extends'");
  EXPECT_CONTAINS(error_of("{% call m() %}{% endcall %}"), "unsupported tag 'call'");
  EXPECT_CONTAINS(error_of("{% for x in y recursive %}{% endfor %}"),
                  "recursive loops are not supported");
  EXPECT_CONTAINS(error_of("{{ f(*args) }}"), "*args and **kwargs are not supported");
  EXPECT_CONTAINS(error_of("{{ x|nosuch }}", {{"x", 1}}), "t.jinja:1:6: no filter named 'nosuch'");
  EXPECT_CONTAINS(error_of("{{ 'a'.zfill(3) }}"),
                  "t.jinja:1:7: 'str' object has no attribute 'zfill' (calling it as a function)");
}

TEST(JinjaErrors, RaiseExceptionIsTypedAndCarriesTheMessage) {
  try {
    render("{% if true %}\n  {{ raise_exception('Only user and assistant roles') }}{% endif %}");
    FAIL();
  } catch (const TemplateRaisedError& e) {
    EXPECT_EQ(e.message(), "Only user and assistant roles");
    EXPECT_CONTAINS(e.what(),
                    "t.jinja:2:6: the template raised an error: Only user and assistant roles");
  }
}

TEST(JinjaLimits, PathologicalTemplatesEndInClearErrors) {
  EXPECT_CONTAINS(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "RecursionError");
  EXPECT_CONTAINS(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
                  "nested deeper than 100 levels");
  std::string chain = "{{ 1";
  for (int i = 0; i < 30000; ++i) chain += "+1";
  EXPECT_CONTAINS(error_of(chain + " }}"), "expression chain longer than 400 terms");
  std::string attrs = "{{ x";
  for (int i = 0; i < 30000; ++i) attrs += ".a";
  EXPECT_CONTAINS(error_of(attrs + " }}"), "expression chain longer than 400 terms");
  std::string nested_ifs;
  for (int i = 0; i < 300; ++i) nested_ifs += "{% if true %}";
  EXPECT_CONTAINS(error_of(nested_ifs), "nested deeper than 100 levels");
  EXPECT_CONTAINS(error_of("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}"),
                  "the output would exceed 16777216 bytes");
  EXPECT_CONTAINS(error_of("{{ 'x' * 1000000000 }}"), "string repetition would exceed");
  EXPECT_CONTAINS(error_of("{{ [1] * 1000000000 }}"), "list repetition would exceed");
  EXPECT_CONTAINS(
      error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
      "more than 1000000 loop iterations");
  EXPECT_CONTAINS(error_of("{{ range(1000000) }}"), "range too big");
  EXPECT_CONTAINS(error_of("{{ 9223372036854775807 + 1 }}"), "integer overflow");
  EXPECT_CONTAINS(error_of("{{ 2 ** 64 }}"), "integer overflow");
  EXPECT_CONTAINS(error_of("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"),
                  "RecursionError");
  // Quadratic accumulation stops at the budget of bytes one render may create.
  EXPECT_CONTAINS(error_of("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
                           "{% set ns.l = ns.l + [i] %}{% endfor %}"),
                  "built or scanned more than 1024 MiB of strings and lists");
  EXPECT_CONTAINS(error_of("{% set ns = namespace(s='') %}{% for i in range(100000) %}"
                           "{% set ns.s = ns.s ~ ('x' * 1000) %}{% endfor %}"),
                  "built or scanned more than 1024 MiB of strings and lists");
  EXPECT_CONTAINS(error_of("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s[i] }}"
                           "{% endfor %}"),
                  "built or scanned more than 1024 MiB");
  // Builders that could multiply memory stop at the string and list caps.
  const std::string big = "{% set s = 'x' * 1000000 %}";
  EXPECT_CONTAINS(error_of(big + "{{ [s] * 1000000 }}"), "a string would exceed 16777216 bytes");
  EXPECT_CONTAINS(error_of(big + "{{ ([s] * 100)|tojson }}"), "a string would exceed");
  EXPECT_CONTAINS(error_of(big + "{{ [s] * 100 }}"), "a string would exceed");
  EXPECT_CONTAINS(error_of("{{ ('x ' * 4000000).split()|length }}"),
                  "a list would exceed 1000000 items");
  EXPECT_CONTAINS(error_of("{{ ('x,' * 4000000).split(',')|length }}"), "a list would exceed");
  EXPECT_CONTAINS(error_of("{{ ('x' * 2000000)|list|length }}"), "a list would exceed");
  EXPECT_CONTAINS(error_of("{{ 'ab'|replace('', 'x' * 10000000) }}"), "a string would exceed");
  EXPECT_CONTAINS(error_of("{{ ('a\\n' * 1000)|indent(100000) }}"), "a string would exceed");
  // The width alone is too big (found by chat_template_fuzz): no allocation of 5e10 spaces.
  EXPECT_CONTAINS(error_of("{{ 'a0b'|indent(55555555552, true) }}"), "a string would exceed");
  EXPECT_CONTAINS(error_of("{{ ''|indent(55555555552, true) }}"), "a string would exceed");
  EXPECT_CONTAINS(error_of("{{ '{}{}'.format('x' * 10000000, 'y' * 10000000) }}"),
                  "a string would exceed");
}

TEST(JinjaInputs, BadInputsAreTemplateErrors) {
  const ChatTemplate t("{{ messages }}", {}, "t.jinja");
  EXPECT_THROW(t.render(nlohmann::ordered_json::object(), {}), TemplateError);
  ChatTemplateOptions o;
  o.extra = nlohmann::ordered_json::array();
  EXPECT_THROW(t.render(nlohmann::ordered_json::array(), o), TemplateError);
  o.extra = {{"messages", 1}};
  EXPECT_THROW(t.render(nlohmann::ordered_json::array(), o), TemplateError);
  EXPECT_THROW(ChatTemplate(std::string("\xff\xfe"), {}, "bad.jinja"), TemplateError);
  nlohmann::ordered_json deep = nlohmann::ordered_json::array();
  for (int i = 0; i < 1000; ++i) deep = nlohmann::ordered_json::array({deep});
  try {
    t.render(nlohmann::ordered_json::array({deep}), {});
    FAIL();
  } catch (const TemplateError& e) {
    EXPECT_CONTAINS(e.what(), "nested deeper than 256 levels");
  }
}

TEST(JinjaInputs, KeysKeepTheirOrderAndExtraOverridesSpecialTokens) {
  const ChatTemplate t(
      "{{ bos_token }}{% for k in messages[0] %}{{ k }},{% endfor %}{{ tools|tojson }}",
      {{"bos_token", "<s>"}}, "t.jinja");
  ChatTemplateOptions o;
  o.tools = nlohmann::ordered_json::parse(R"([{"z": 1, "a": 2}])");
  EXPECT_EQ(
      t.render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "x", "b": 1}])"), o),
      R"(<s>role,content,b,[{"z": 1, "a": 2}])");
  o.extra = {{"bos_token", "<override>"}};
  EXPECT_EQ(t.render(nlohmann::ordered_json::parse(R"([{}])"), o),
            R"(<override>[{"z": 1, "a": 2}])");
}

TEST(JinjaInputs, StrftimeNowUsesThePinnedTime) {
  const ChatTemplate t("{{ strftime_now('%d %b %Y %H:%M') }}", {}, "t.jinja");
  ChatTemplateOptions o;
  o.now = std::chrono::sys_days{std::chrono::year{2025} / 1 / 2} + std::chrono::hours{3};
  EXPECT_EQ(t.render(nlohmann::ordered_json::array(), o), "02 Jan 2025 03:00");
  o.now.reset();
  EXPECT_EQ(t.render(nlohmann::ordered_json::array(), o).size(),
            std::string("02 Jan 2025 03:00").size());
}

TEST(JinjaInputs, CopiesRenderTheSameFromSeveralThreads) {
  const ChatTemplate original(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content|length %}"
      "{% endfor %}{{ ns.n }}",
      {}, "t.jinja");
  const ChatTemplate copy = original;
  std::vector<std::string> results(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      for (int k = 0; k <= i; ++k) messages.push_back({{"role", "user"}, {"content", "abc"}});
      results[i] = (i % 2 ? copy : original).render(messages, {});
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(results[i], std::to_string(3 * (i + 1)));
}

}  // namespace
}  // namespace strata::text

// libFuzzer target: the chat template interpreter on arbitrary template text and message JSON.
// The input is split at its first NUL byte: the template before it, the JSON after it (a list of
// messages, or anything else, which then goes in as an extra variable `data`). Every input must
// render or fail with strata::text::TemplateError; any other exception, a crash, a hang or a leak
// is a bug (the interpreter's recursion, output and loop limits exist for this). Seeds:
// fuzz/corpus/chat_template/, written by tests/fixtures/tools/record_chat_templates.py
// --fuzz-corpus (every fixture template with a conversation, and the feature snippets).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "strata/text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string source(input.substr(0, nul));
  const std::string_view json_text = nul == std::string_view::npos ? "" : input.substr(nul + 1);

  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  strata::text::ChatTemplateOptions options;
  options.add_generation_prompt = size % 2 == 1;
  options.now = std::chrono::sys_seconds{std::chrono::seconds{1721989800}};
  // Moved, never copied: nlohmann's copy recurses, and the input may nest thousands deep.
  auto parsed = nlohmann::ordered_json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_array()) {
    messages = std::move(parsed);
  } else if (!parsed.is_discarded()) {
    options.extra = nlohmann::ordered_json::object();
    options.extra["data"] = std::move(parsed);
  }
  try {
    const strata::text::ChatTemplate chat_template(source, {{"bos_token", "<s>"}}, "fuzz.jinja");
    const std::string out = chat_template.render(messages, options);
    if (out.size() > (std::size_t{16} << 20)) std::abort();  // the output limit held
  } catch (const strata::text::TemplateError&) {
  }
  return 0;
}

// Chat prompts encoded so that message content can never become control tokens.
#include <fmt/format.h>

#include <algorithm>

#include "strata/serve/model_backend.h"
#include "strata/serve/protocol.h"
#include "strata/text/chat_template.h"
#include "strata/text/tokenizer.h"

namespace strata::serve {
namespace {

// Unit separators around a number: no template adds them and no tokenizer treats them as special.
constexpr std::string_view kOpen = "\x1fstrata-content-";
constexpr char kClose = '\x1f';

}  // namespace

ChatPromptEncoder::ChatPromptEncoder(const text::ChatTemplate& chat_template,
                                     const text::Tokenizer& tokenizer)
    : template_(chat_template), tokenizer_(tokenizer) {
  for (std::int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.is_special(id)) specials_.emplace_back(tokenizer.id_to_token(id), id);
  }
  for (const auto& entry : chat_template.special_tokens()) {
    const std::string& token = entry.second;  // (a lambda cannot capture a structured binding
                                              // in clang before 16)
    if (auto id = tokenizer.token_to_id(token); id && !token.empty()) {
      if (std::none_of(specials_.begin(), specials_.end(),
                       [&](const auto& s) { return s.first == token; })) {
        specials_.emplace_back(token, *id);
      }
    }
  }
  std::erase_if(specials_, [](const auto& s) { return s.first.empty(); });
  std::sort(specials_.begin(), specials_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

std::vector<std::int64_t> ChatPromptEncoder::encode(const nlohmann::json& messages) const {
  nlohmann::json masked = messages;
  std::vector<std::string> contents;
  for (std::size_t i = 0; i < masked.size(); ++i) {
    contents.push_back(masked[i].value("content", std::string()));
    masked[i]["content"] = fmt::format("{}{}{}", kOpen, i, kClose);
  }
  std::string rendered;
  try {
    text::ChatTemplateOptions options;
    options.add_generation_prompt = true;
    rendered = template_.render(masked, options);
  } catch (const text::TemplateRaisedError& e) {
    throw ApiError(400, fmt::format("the chat template refused the messages: {}", e.message()),
                   "messages", "template_error");
  } catch (const text::TemplateError& e) {
    throw ApiError(400, fmt::format("the chat template failed on the messages: {}", e.what()),
                   "messages", "template_error");
  }

  std::vector<std::int64_t> ids;
  std::string plain;  // the text run since the last special token
  // A run after a special token continues the text (as tokenizers encodes each split between
  // added tokens): only a run at the very start gets start-of-text rules.
  auto flush = [&] {
    if (plain.empty()) return;
    const std::vector<std::int64_t> run = tokenizer_.encode_plain(plain, ids.empty());
    ids.insert(ids.end(), run.begin(), run.end());
    plain.clear();
  };
  std::size_t at = 0;
  while (at < rendered.size()) {
    if (rendered.compare(at, kOpen.size(), kOpen) == 0) {
      const std::size_t digits = at + kOpen.size();
      const std::size_t close = rendered.find(kClose, digits);
      std::size_t index = 0;
      const bool number = close != std::string::npos && close > digits &&
                          std::all_of(rendered.begin() + static_cast<std::ptrdiff_t>(digits),
                                      rendered.begin() + static_cast<std::ptrdiff_t>(close),
                                      [](char c) { return c >= '0' && c <= '9'; });
      if (number) index = std::stoul(rendered.substr(digits, close - digits));
      if (number && index < contents.size()) {
        plain += contents[index];  // content: plain text, whatever it holds
        at = close + 1;
        continue;
      }
    }
    bool special = false;
    for (const auto& [token, id] : specials_) {
      if (rendered.compare(at, token.size(), token) == 0) {
        flush();
        ids.push_back(id);
        at += token.size();
        special = true;
        break;
      }
    }
    if (!special) plain += rendered[at++];
  }
  flush();
  return ids;
}

}  // namespace strata::serve

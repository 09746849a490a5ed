#pragma once
// Splits template source into tokens the way jinja2's lexer does with transformers' settings
// (trim_blocks, lstrip_blocks, keep_trailing_newline off): text, tag delimiters and the tokens of
// expressions inside tags, each with its line and column. Whitespace control (`{%-`, `-%}`,
// `{%+`) and comments are resolved here; `{% raw %}` bodies come out as text.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata::text::jinja {

enum class TokenType {
  Text,
  VarBegin,
  VarEnd,
  BlockBegin,
  BlockEnd,
  Name,
  String,
  Int,
  Float,
  Op,
  End
};

struct Token {
  TokenType type = TokenType::End;
  std::string value;  // text, name, operator, or the decoded string literal
  std::int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;
  int column = 1;
};

// Throws TemplateError ("origin:line:col: ...") for an unclosed tag, comment, string or raw block.
std::vector<Token> tokenize(std::string_view source, const std::string& origin);

// Newlines normalised to \n and one trailing newline dropped, as jinja2 does before lexing.
std::string normalize_source(std::string_view source);

}  // namespace strata::text::jinja

#pragma once
// Runs a parsed template: statements write text, expressions evaluate to Values, with jinja2's
// scoping (a for loop's body and a macro's body are scopes of their own; if does not open one).

#include <ctime>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/builtins.h"

namespace strata::text::jinja {

struct RenderInputs {
  std::vector<std::pair<std::string, Value>> variables;  // what render() is called with
  std::optional<std::tm> now;                            // strftime_now's time; unset: local clock
  Limits limits;
};

// Throws TemplateError (TemplateRaisedError for raise_exception) naming the template position.
std::string render_program(const Program& program, const RenderInputs& inputs);

}  // namespace strata::text::jinja

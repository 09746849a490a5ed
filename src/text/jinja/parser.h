#pragma once
// Parses template source into a Program with jinja2's grammar and operator precedence. Anything
// outside the supported subset (include, extends, import, call blocks, with, ...) is a
// TemplateError naming the template, line and column.

#include <memory>
#include <string>
#include <string_view>

#include "text/jinja/ast.h"

namespace strata::text::jinja {

std::shared_ptr<const Program> parse_template(std::string_view source, const std::string& origin);

}  // namespace strata::text::jinja

#pragma once
// `strata template MODEL_DIR --messages FILE.json`: prints the prompt a chat template renders,
// exactly as the model will see it (nothing added), to check a template and for tests.

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>

namespace strata::cli {

struct TemplateArgs {
  std::string model_dir;
  std::string messages_file;  // a JSON list of {"role", "content", ...}
  bool add_generation_prompt = false;
  std::optional<std::string> tools_file;  // a JSON list of tool schemas
  std::optional<std::string> kwargs;      // a JSON object of extra template variables
  std::optional<std::string> now;         // "YYYY-MM-DDTHH:MM:SS": what strftime_now formats
};

CLI::App* add_template_command(CLI::App& app, TemplateArgs& args);

// Writes the rendered prompt to `out`; returns the exit code. Bad input throws strata::Error
// (text::TemplateError for the template's own errors, naming file, line and column).
int run_template(const TemplateArgs& args, std::ostream& out);

}  // namespace strata::cli

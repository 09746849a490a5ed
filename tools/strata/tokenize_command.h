#pragma once
// `strata tokenize MODEL_DIR (TEXT | --file FILE) [--no-special] [--pieces]` and
// `strata detokenize MODEL_DIR --ids 1,2,3 [--skip-special]`: the tokenizer alone, on any folder
// that holds tokenizer.json (no config.json or weights needed).

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>

namespace strata::cli {

struct TokenizeArgs {
  std::string model_dir;
  std::optional<std::string> text;
  std::optional<std::string> file;
  bool no_special = false;  // do not add BOS/EOS (the post-processor's special tokens)
  bool pieces = false;      // also print the pieces, as a JSON array, on a second line
};

struct DetokenizeArgs {
  std::string model_dir;
  std::string ids;  // "1,2,3"
  bool skip_special = false;
};

CLI::App* add_tokenize_command(CLI::App& app, TokenizeArgs& args);
CLI::App* add_detokenize_command(CLI::App& app, DetokenizeArgs& args);

// Prints the ids comma-separated on the first line of `out` (and the pieces on the next).
int run_tokenize(const TokenizeArgs& args, std::ostream& out);
// Prints the decoded text exactly: nothing added, not even a newline.
int run_detokenize(const DetokenizeArgs& args, std::ostream& out);

}  // namespace strata::cli

#pragma once
// `strata generate [MODEL_DIR] --prompt TEXT`: tokenize, load the checkpoint onto its plan, and
// stream the continuation to stdout as it is produced (sampling options as transformers', stop
// strings, the model's context limit); load and speed statistics on stderr. Without MODEL_DIR the
// built-in model runs.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "model_loading.h"
#include "sampling_options.h"

namespace strata::cli {

struct GenerateArgs : PlacementArgs, SamplingArgs {
  std::optional<std::string> model_dir;  // unset: the built-in model
  std::optional<std::string> prompt;
  std::optional<std::string> prompt_file;
  std::optional<std::int64_t> max_new_tokens;  // unset: generation_config.json, else 256
  std::vector<std::string> stop;
  bool no_special = false;  // do not add BOS/EOS to the prompt
  bool echo = false;        // print the prompt before the continuation
  bool show_plan = false;   // print the planner's table before loading
};

CLI::App* add_generate_command(CLI::App& app, GenerateArgs& args);

// Streams the text to `out`; statistics, the plan and the progress to `err`. `in` is read when
// neither --prompt nor --prompt-file is given. Returns the exit code; bad input throws
// strata::Error before any weight is read.
int run_generate(const GenerateArgs& args, std::istream& in, std::ostream& out, std::ostream& err,
                 bool err_is_terminal = false);

}  // namespace strata::cli

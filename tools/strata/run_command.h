#pragma once
// `strata run MODEL_DIR --token-ids ...`: load a checkpoint onto a device map and decode greedily.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "model_loading.h"

namespace strata::cli {

struct RunArgs : PlacementArgs {
  std::string model_dir;
  std::string token_ids;  // "1,2,3"
  std::int64_t max_new_tokens = 16;
  std::optional<std::string> dump_logits;
};

CLI::App* add_run_command(CLI::App& app, RunArgs& args);

// Prints the generated ids on one line to `out` and the timings to `err`; with dump_logits, also
// writes the prompt's float32 logits [sequence, vocab] as tensor "logits". Returns the exit code;
// bad input throws strata::Error.
int run_run(const RunArgs& args, std::ostream& out, std::ostream& err);

}  // namespace strata::cli

#pragma once
// `strata calibrate`: measures the machine constants of the cost model (about 10 s) and caches
// them under $XDG_CACHE_HOME/strata (docs/hybrid-execution.md); prints what it measured or read.

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>

#include "strata/engine/machine_constants.h"

namespace strata::cli {

struct CalibrateArgs {
  bool force = false;                    // measure again even when the cache holds this machine
  bool json = false;                     // print the constants as JSON
  std::optional<std::string> cache_dir;  // default: $XDG_CACHE_HOME/strata, ~/.cache/strata
};

CLI::App* add_calibrate_command(CLI::App& app, CalibrateArgs& args);

// Prints the constants (a table, or JSON with --json) and where they are cached. Returns the
// exit code.
int run_calibrate(const CalibrateArgs& args, std::ostream& out, std::ostream& err);

// The same table for any constants (strata plan prints it too).
std::string constants_table(const engine::MachineConstants& constants);

}  // namespace strata::cli

// The `strata` command. For now: --version and `selfcheck`; `plan` and `run` come with the
// placement and model issues.

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

#include "selfcheck.h"
#include "strata/core/error.h"
#include "strata/version.h"

int main(int argc, char** argv) {
  CLI::App app{"strata: run neural networks whose weights do not fit on one GPU"};
  app.set_version_flag("--version", fmt::format("strata {} (CUDA backend: {})", strata::kVersion,
                                                strata::kBuiltWithCuda ? "built" : "not built"));
  app.require_subcommand(0, 1);

  std::string dtype_text = "bf16";
  CLI::App* selfcheck = app.add_subcommand(
      "selfcheck", "run a small decoder-block forward through the CPU ops and check it");
  selfcheck->add_option("--dtype", dtype_text, "f32, bf16 or f16")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (selfcheck->parsed()) {
      return strata::cli::run_selfcheck(strata::parse_dtype(dtype_text), std::cout) ? 0 : 1;
    }
    std::cout << app.help();
    return 0;
  } catch (const strata::Error& e) {
    std::cerr << "strata: error: " << e.what() << "\n";
    return 1;
  }
}

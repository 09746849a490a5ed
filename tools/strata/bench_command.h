#pragma once
// `strata bench MODEL_DIR`: prompt processing and token generation rates of a checkpoint on a
// placement, in the spirit of llama-bench (pp512, pp2048, tg128), for several batch sizes.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "model_loading.h"

namespace strata::cli {

struct BenchArgs : PlacementArgs {
  std::string model_dir;
  std::string prompt_tokens = "512,2048";  // one pp test per length ("" or "0": none)
  std::int64_t decode_tokens = 128;        // the tg test's new tokens (0: none)
  std::int64_t depth = 0;                  // tokens already in the cache when tg starts
  std::string batch = "1";                 // batch sizes, e.g. 1,4,16,64
  int repetitions = 3;                     // timed runs per test (the median is reported)
  // What each tg step feeds: "greedy" (the last step's argmax, as generation does) or "random"
  // (a fresh pseudo-random token id per step and run, as llama-bench does: a random model's
  // greedy decode repeats a token, and with it the same routed experts, every step).
  std::string decode_input = "greedy";
  bool json = false;
  bool limits = true;  // measure the machine's limits first (device_limits.h)
  bool load = false;   // measure loading instead (load_bench.h)
  bool cold = false;   // ... from the disk too
};

CLI::App* add_bench_command(CLI::App& app, BenchArgs& args);

// Loads the model, runs every test (one untimed warm-up each), prints a table (or JSON with
// --json) to `out`. Returns the exit code; bad input throws strata::Error.
int run_bench(const BenchArgs& args, std::ostream& out, std::ostream& err);

}  // namespace strata::cli

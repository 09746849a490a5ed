#pragma once
// Command-line options the memory-bound benches share (cpu_gemv_bench, quant_linear_bench),
// through CLI11 as the other tools: comma lists, positive numbers, [out, in] matrix shapes.
// A list given on the command line replaces its default.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace strata::bench {

using MatrixShape = std::pair<std::int64_t, std::int64_t>;  // [out, in]

// "NxK" with N, K positive integers -> {N, K}; false when `text` is not of that form.
inline bool parse_matrix_shape(const std::string& text, MatrixShape* shape) {
  const std::size_t x = text.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == text.size()) return false;
  try {
    std::size_t used_n = 0, used_k = 0;
    const std::int64_t n = std::stoll(text.substr(0, x), &used_n);
    const std::int64_t k = std::stoll(text.substr(x + 1), &used_k);
    if (used_n != x || used_k != text.size() - x - 1 || n <= 0 || k <= 0) return false;
    *shape = {n, k};
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// --seconds S (time per case) and --cold-mib N (the cold buffer), both positive.
inline void add_timing_options(CLI::App& app, double& seconds, std::int64_t& cold_mib) {
  app.add_option("--seconds", seconds, "timed seconds per case (median of the calls)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--cold-mib", cold_mib,
                 "MiB of buffer the calls cycle through (far larger than the last-level cache)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30))
      ->capture_default_str();
}

// --batches 1,4,16: rows of x per call, each >= 1.
inline void add_batches_option(CLI::App& app, std::vector<std::int64_t>& batches) {
  app.add_option("--batches", batches, "rows of x per call (comma list)")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->capture_default_str();
}

// --shapes NxK,...: the weight shapes [out, in].
inline void add_shapes_option(CLI::App& app, std::vector<MatrixShape>& shapes) {
  std::string defaults;
  for (const auto& [n, k] : shapes) {
    defaults += (defaults.empty() ? "" : ",") + std::to_string(n) + "x" + std::to_string(k);
  }
  app.add_option_function<std::vector<std::string>>(
         "--shapes",
         [&shapes](const std::vector<std::string>& texts) {
           shapes.clear();
           for (const std::string& text : texts) {
             MatrixShape shape;
             parse_matrix_shape(text, &shape);  // the check below has accepted it
             shapes.push_back(shape);
           }
         },
         "weight shapes [out, in] as NxK (comma list; default " + defaults + ")")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& text) {
            MatrixShape shape;
            return parse_matrix_shape(text, &shape) ? std::string()
                                                    : "'" + text + "' is not NxK (e.g. 4096x11008)";
          },
          "NxK"));
}

}  // namespace strata::bench

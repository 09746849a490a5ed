#pragma once
// The timing rule of every calibration measurement (private to src/engine): the best of `reps`
// runs after one warm-up run, in seconds (at least 1 ns).

#include <algorithm>
#include <chrono>

namespace strata::engine::detail {

template <class Fn>
double best_seconds(int reps, Fn&& fn) {
  using Clock = std::chrono::steady_clock;
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return std::max(best, 1e-9);
}

}  // namespace strata::engine::detail

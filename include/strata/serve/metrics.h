#pragma once
// Counters of the server for GET /metrics, in Prometheus' text exposition format (version 0.0.4):
// requests by route and status, prompt and generated tokens, the generation rate, queue depth,
// running sequences and KV cache bytes (the last ones read from the scheduler at scrape time).

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "strata/engine/scheduler.h"

namespace strata::serve {

class Metrics {
 public:
  using Clock = std::chrono::steady_clock;

  // One answered request (any route, any status).
  void count_request(const std::string& route, int status);
  // `stats` from the scheduler; `cache_capacity_bytes` is the pool the memory plan reserved
  // (0 when unknown); `now` is when the scrape happens (the rate is over the last 10 s).
  std::string render(const engine::SchedulerStats& stats, std::uint64_t cache_capacity_bytes,
                     Clock::time_point now);

 private:
  std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  // (time, generated tokens) at each scrape: the rate is the slope over the last window.
  std::deque<std::pair<Clock::time_point, std::uint64_t>> samples_;
};

}  // namespace strata::serve

#include "strata/serve/metrics.h"

#include <fmt/format.h>

namespace strata::serve {

namespace {
constexpr auto kRateWindow = std::chrono::seconds(10);
}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

std::string Metrics::render(const engine::SchedulerStats& stats, std::uint64_t cache_capacity_bytes,
                            Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  samples_.emplace_back(now, stats.generated_tokens);
  while (samples_.size() > 2 && samples_[1].first <= now - kRateWindow) samples_.pop_front();
  double rate = 0.0;
  const auto& [then, then_tokens] = samples_.front();
  const double seconds = std::chrono::duration<double>(now - then).count();
  if (seconds > 0.0) rate = static_cast<double>(stats.generated_tokens - then_tokens) / seconds;

  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  metric("strata_requests_total", "counter", "HTTP requests answered, by route and status.");
  for (const auto& [key, count] : requests_) {
    out += fmt::format("strata_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, count);
  }
  metric("strata_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  out += fmt::format("strata_prompt_tokens_total {}\n", stats.prompt_tokens);
  metric("strata_generated_tokens_total", "counter", "Tokens generated and sent.");
  out += fmt::format("strata_generated_tokens_total {}\n", stats.generated_tokens);
  metric("strata_generation_tokens_per_second", "gauge",
         "Generated tokens per second over the last 10 s (between scrapes).");
  out += fmt::format("strata_generation_tokens_per_second {:.3f}\n", rate);
  metric("strata_queue_depth", "gauge", "Requests waiting for a KV cache slot.");
  out += fmt::format("strata_queue_depth {}\n", stats.waiting);
  metric("strata_running_sequences", "gauge", "Sequences in the running batch.");
  out += fmt::format("strata_running_sequences {}\n", stats.running);
  metric("strata_kv_cache_bytes", "gauge", "Bytes the KV caches of running sequences hold.");
  out += fmt::format("strata_kv_cache_bytes {}\n", stats.cache_bytes);
  metric("strata_kv_cache_capacity_bytes", "gauge", "Bytes reserved for KV caches by the plan.");
  out += fmt::format("strata_kv_cache_capacity_bytes {}\n", cache_capacity_bytes);
  metric("strata_decode_steps_total", "counter", "Batched forward steps run.");
  out += fmt::format("strata_decode_steps_total {}\n", stats.steps);
  return out;
}

}  // namespace strata::serve

#pragma once
// What `strata plan` predicts before anything loads (docs/hybrid-execution.md): load time,
// prefill tokens/s and decode time per step under the best offload policy and under pure
// streaming, and where each unit of the device map computes, from the cost model and the machine
// constants (measured once, cached; or a constants file).

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli_options.h"
#include "strata/engine/cost_model.h"
#include "strata/placement/auto_device_map.h"

namespace strata::cli {

struct PredictionInput {
  std::int64_t prefill_tokens = 512;
  std::int64_t batch = 1;
  std::int64_t decode_context = 0;  // tokens in the cache at the decode step
  // Machine constants from this file; unset: this machine's (cached, measured when absent).
  std::optional<std::string> machine_file;
  // The GPU expert cache: the share of the offloaded routed experts it can hold is the expected
  // hit rate (uniform routing).
  std::int64_t expert_cache_bytes = 0;
};

struct PlanForecast {
  std::string constants_source;  // the file the constants came from, and whether just measured
  std::string fingerprint;
  std::optional<engine::PlanPrediction> prediction;
  std::string unavailable;  // why there is no prediction (constants without a GPU, ...)
  // Routed experts off the GPU, the expert cache assumed, its expected hit rate.
  std::int64_t offloaded_expert_bytes = 0, expert_cache_bytes = 0;
  double expert_hit_rate = 0.0;
};

// The units are the device map's entries: a unit's bytes are its weights in the plan's dtype, 2
// FLOPs per parameter and token, the input embedding a lookup, hidden_size activations per token.
// Disk units count as page-cached when the cpu and disk weights fit in the available host memory.
PlanForecast forecast_plan(const EmptyModel& model, const placement::DeviceMap& map,
                           const std::filesystem::path& model_dir, const PredictionInput& input);

// The text block run_plan prints, and the "predictions" object of --json.
std::string forecast_text(const PlanForecast& forecast, const PredictionInput& input);
nlohmann::ordered_json forecast_json(const PlanForecast& forecast, const PredictionInput& input);

}  // namespace strata::cli

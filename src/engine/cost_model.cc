#include "strata/engine/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "strata/core/error.h"

namespace strata::engine {
namespace {

constexpr double kGB = 1e9;
constexpr double kGFLOP = 1e9;

// bytes / (rate in GB/s); a missing rate makes the path unusable (infinite time).
double seconds_for(double bytes, double gbps) {
  if (bytes <= 0) return 0.0;
  return gbps > 0 ? bytes / (gbps * kGB) : std::numeric_limits<double>::infinity();
}

double flop_seconds(double flops, double gflops) {
  if (flops <= 0) return 0.0;
  return gflops > 0 ? flops / (gflops * kGFLOP) : std::numeric_limits<double>::infinity();
}

}  // namespace

std::string_view tier_name(Tier tier) {
  switch (tier) {
    case Tier::Gpu:
      return "gpu";
    case Tier::Cpu:
      return "cpu";
    case Tier::Disk:
      return "disk";
  }
  return "?";
}

CostModel::CostModel(MachineConstants constants) : constants_(std::move(constants)) {}

double selected_fraction(const UnitWork& unit, std::int64_t tokens) {
  if (unit.experts <= 0 || unit.top_k <= 0 || unit.top_k >= unit.experts) return 1.0;
  const double miss = 1.0 - static_cast<double>(unit.top_k) / static_cast<double>(unit.experts);
  return 1.0 - std::pow(miss, static_cast<double>(std::max<std::int64_t>(tokens, 1)));
}

namespace {
// Bytes a unit reads to compute a step where its weights are: its weights (a lookup: the rows
// of the step's tokens; routed experts: those its tokens selected) and the KV cache its attention
// reads.
double read_bytes(const UnitWork& unit, std::int64_t tokens) {
  const double kv = static_cast<double>(unit.kv_read_bytes);
  if (unit.lookup) {
    return static_cast<double>(unit.activation_bytes_per_token) * static_cast<double>(tokens) + kv;
  }
  return static_cast<double>(unit.bytes) * selected_fraction(unit, tokens) + kv;
}

// FLOPs of a step: every token goes through top_k of a block's experts.
double step_flops(const UnitWork& unit, std::int64_t tokens) {
  double flops = static_cast<double>(unit.flops_per_token) * static_cast<double>(tokens);
  if (unit.experts > 0 && unit.top_k > 0 && unit.top_k < unit.experts) {
    flops *= static_cast<double>(unit.top_k) / static_cast<double>(unit.experts);
  }
  return flops;
}

double micros(double us, double count) { return us * 1e-6 * count; }

// Ops a step runs: routed experts run only those of the experts its tokens selected.
double step_ops(const UnitWork& unit, std::int64_t tokens) {
  return static_cast<double>(unit.ops) * selected_fraction(unit, tokens);
}
}  // namespace

double CostModel::gpu_seconds(const UnitWork& unit, std::int64_t tokens) const {
  const double flops = step_flops(unit, tokens);
  return std::max(seconds_for(read_bytes(unit, tokens), constants_.gpu_hbm_gbps),
                  flop_seconds(flops, constants_.gpu_gemm_gflops)) +
         micros(constants_.gpu_launch_us, step_ops(unit, tokens));
}

double CostModel::stream_seconds(const UnitWork& unit, std::int64_t tokens) const {
  const double copy = unit.tier == Tier::Gpu
                          ? 0.0
                          : seconds_for(static_cast<double>(unit.bytes) *
                                            (unit.lookup ? 1.0 : selected_fraction(unit, tokens)),
                                        stream_rate(unit));
  return std::max(copy, gpu_seconds(unit, tokens));
}

double CostModel::cpu_seconds(const UnitWork& unit, std::int64_t tokens) const {
  return cpu_seconds(unit, tokens, constants_.has_gpu());
}

double CostModel::cpu_seconds(const UnitWork& unit, std::int64_t tokens,
                              bool activations_cross_pcie) const {
  const double flops = step_flops(unit, tokens);
  // Routed experts at the calibrated expert rate: that measurement runs a step's experts whole
  // (their activations and dispatch included), so no op term; their transfers are the block's
  // (expert_block_seconds) when it was measured.
  const bool experts_rate = unit.experts > 0 && constants_.cpu_expert_gbps > 0;
  double seconds = std::max(seconds_for(read_bytes(unit, tokens), cpu_rate(unit)),
                            flop_seconds(flops, constants_.cpu_gemm_gflops)) +
                   (experts_rate ? 0.0 : micros(constants_.cpu_op_us, step_ops(unit, tokens)));
  if (activations_cross_pcie && !(unit.experts > 0 && constants_.moe_block_us > 0)) {
    const double activations =
        static_cast<double>(unit.activation_bytes_per_token) * static_cast<double>(tokens);
    seconds +=
        2.0 *
        (seconds_for(activations, constants_.h2d_gbps) + constants_.transfer_latency_us * 1e-6) *
        std::clamp(unit.round_trip_share, 0.0, 1.0);
  }
  return seconds;
}

// A disk unit streams through the disk workers, which copy it out of the page cache into pinned
// staging chunks while the copy engine moves the previous chunks: the slower of the two bounds it
// (out of the page cache, the disk's rate). Measured on the H100 host, the disk tier's streamed
// decode ran at the PCIe rate (201 ms/token against 196 from pinned RAM).
double CostModel::stream_rate(const UnitWork& unit) const {
  double rate = constants_.h2d_gbps;
  if (unit.tier == Tier::Disk) {
    rate = std::min(rate,
                    unit.disk_cached ? constants_.page_cache_read_gbps : constants_.disk_read_gbps);
  }
  return rate;
}

double CostModel::cpu_rate(const UnitWork& unit, bool under_copies) const {
  double rate = constants_.cpu_gemv_layer_gbps > 0 ? constants_.cpu_gemv_layer_gbps
                                                   : constants_.cpu_gemv_rate(constants_.threads);
  if (unit.experts > 0 && constants_.cpu_expert_gbps > 0) rate = constants_.cpu_expert_gbps;
  if (under_copies && constants_.split_cpu_gemv_gbps > 0) rate = constants_.split_cpu_gemv_gbps;
  if (unit.tier == Tier::Disk && !unit.disk_cached)
    rate = std::min(rate, constants_.disk_read_gbps);
  return rate;
}

double CostModel::expert_block_seconds(const UnitWork& unit) const {
  if (unit.experts <= 0 || unit.tier == Tier::Gpu || !constants_.has_gpu()) return 0.0;
  return constants_.moe_block_us * 1e-6;
}

double CostModel::split_copy_rate(const UnitWork& unit) const {
  double rate = stream_rate(unit);
  if (constants_.split_h2d_gbps > 0) rate = std::min(rate, constants_.split_h2d_gbps);
  return rate;
}

double CostModel::split_fraction(const UnitWork& unit) const {
  if (!constants_.has_gpu()) return 0.0;
  const double cpu = cpu_rate(unit, true), copy = split_copy_rate(unit);
  return cpu + copy > 0 ? cpu / (cpu + copy) : 0.0;
}

double CostModel::split_seconds(const UnitWork& unit, std::int64_t tokens, double fraction) const {
  if (!constants_.has_gpu() || unit.split_linears <= 0 || unit.tier == Tier::Gpu || unit.lookup ||
      fraction <= 0.0 || fraction >= 1.0) {
    return std::numeric_limits<double>::infinity();
  }
  const double bytes = static_cast<double>(unit.bytes);
  const double flops = static_cast<double>(unit.flops_per_token) * static_cast<double>(tokens);
  const double activations =
      static_cast<double>(unit.activation_bytes_per_token) * static_cast<double>(tokens);
  const double round_trips =
      static_cast<double>(unit.split_linears) * 2.0 *
      (seconds_for(activations, constants_.h2d_gbps) + constants_.transfer_latency_us * 1e-6);
  // One host thread runs, in order, the transfers, the GPU launches and the cpu's rows; the copy
  // engine streams the device's rows meanwhile, and the GPU computes them.
  const double host = std::max(seconds_for(fraction * bytes, cpu_rate(unit, true)),
                               flop_seconds(fraction * flops, constants_.cpu_gemm_gflops)) +
                      round_trips +
                      micros(constants_.cpu_op_us, static_cast<double>(unit.split_linears)) +
                      micros(constants_.gpu_launch_us, step_ops(unit, tokens));
  const double copied = seconds_for((1.0 - fraction) * bytes, split_copy_rate(unit));
  return std::max({host, copied, gpu_seconds(unit, tokens)});
}

namespace {
// Whether auto may split a unit. Not a disk unit: its streamed rows go through the disk workers'
// copy out of the page cache, a third stream over host memory that the split rates (measured
// with pinned copies) leave out; forced (--offload-policy split) it still splits.
bool auto_may_split(const UnitWork& unit) { return unit.tier != Tier::Disk; }

// A block's routed experts (more experts than a token selects).
bool routed_block(const UnitWork& unit) {
  return unit.experts > 0 && unit.top_k > 0 && unit.top_k < unit.experts;
}
}  // namespace

double tokens_per_selected_expert(const UnitWork& unit, std::int64_t tokens) {
  if (!routed_block(unit)) return static_cast<double>(tokens);
  const double selected = static_cast<double>(unit.experts) * selected_fraction(unit, tokens);
  return static_cast<double>(tokens) * static_cast<double>(unit.top_k) / selected;
}

placement::ExecutionPolicy CostModel::best_policy(const UnitWork& unit, std::int64_t tokens) const {
  if (!constants_.has_gpu()) return placement::ExecutionPolicy::Cpu;
  const double stream = stream_seconds(unit, tokens);
  const double cpu = cpu_seconds(unit, tokens);
  if (routed_block(unit)) {
    // What the block does (MoeBlock::run_experts): each selected expert by its own tokens, never
    // split, and on the cpu only up to kCpuExpertQueueRows of them (cost_model_planner's cap):
    // a prefill's experts stream, whatever the cpu's rate.
    const bool cpu_sized = tokens_per_selected_expert(unit, tokens) <=
                           static_cast<double>(placement::kCpuExpertQueueRows);
    return cpu_sized && cpu < stream ? placement::ExecutionPolicy::Cpu
                                     : placement::ExecutionPolicy::Stream;
  }
  const double split = auto_may_split(unit) ? split_seconds(unit, tokens, split_fraction(unit))
                                            : std::numeric_limits<double>::infinity();
  if (split < stream && split < cpu) return placement::ExecutionPolicy::Split;
  return cpu < stream ? placement::ExecutionPolicy::Cpu : placement::ExecutionPolicy::Stream;
}

double CostModel::best_seconds(const UnitWork& unit, std::int64_t tokens) const {
  switch (best_policy(unit, tokens)) {
    case placement::ExecutionPolicy::Cpu:
      return cpu_seconds(unit, tokens);
    case placement::ExecutionPolicy::Split:
      return split_seconds(unit, tokens, split_fraction(unit));
    case placement::ExecutionPolicy::Stream:
      break;
  }
  return stream_seconds(unit, tokens);
}

std::int64_t CostModel::cpu_token_threshold(const UnitWork& unit) const {
  if (!constants_.has_gpu()) return kAlwaysCpu;
  const auto cpu_wins = [&](std::int64_t n) {
    return cpu_seconds(unit, n) <= stream_seconds(unit, n);
  };
  if (!cpu_wins(1)) return 0;
  std::int64_t lo = 1, hi = std::int64_t{1} << 20;  // cpu_wins(lo) holds
  if (cpu_wins(hi)) return hi;
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    (cpu_wins(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::int64_t CostModel::split_token_threshold(const UnitWork& unit) const {
  const double fraction = split_fraction(unit);
  const auto split_wins = [&](std::int64_t n) {
    const double split = split_seconds(unit, n, fraction);
    return split <= stream_seconds(unit, n) && split <= cpu_seconds(unit, n);
  };
  if (!constants_.has_gpu() || unit.split_linears <= 0 || !auto_may_split(unit) || !split_wins(1)) {
    return 0;
  }
  std::int64_t lo = 1, hi = std::int64_t{1} << 20;  // split_wins(lo) holds
  if (split_wins(hi)) return hi;
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    (split_wins(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::int64_t ops_of_modules(std::int64_t modules) { return (3 * modules + 1) / 2; }

UnitWork unit_work_of(const placement::UnitProfile& profile) {
  UnitWork work;
  work.bytes = profile.bytes;
  const auto element = static_cast<std::int64_t>(dtype_size(profile.dtype));
  work.flops_per_token = element > 0 ? 2 * (profile.bytes / element) : 0;
  work.activation_bytes_per_token = profile.activation_bytes_per_token;
  work.tier = profile.file_bytes * 2 > profile.bytes ? Tier::Disk : Tier::Cpu;
  work.split_linears = profile.split_linears;
  work.ops = ops_of_modules(profile.modules);
  if (profile.block_projections > 0) {
    // A routed expert's projection its block runs: read whole when selected, at the calibrated
    // rate of a step's cpu experts, with the block's one round trip shared by the step's
    // projections (moe_block_us, when measured, stands for it: cpu_seconds then charges none).
    work.experts = work.top_k = 1;
    work.round_trip_share = 1.0 / static_cast<double>(profile.block_projections);
  }
  return work;
}

placement::UnitPlanner cost_model_planner(CostModel model) {
  return [model = std::move(model)](const placement::UnitProfile& profile) {
    const UnitWork work = unit_work_of(profile);
    placement::UnitPlan plan;
    plan.cpu_max_tokens = model.cpu_token_threshold(work);
    if (profile.block_projections > 0 && model.constants().has_gpu()) {
      plan.cpu_max_tokens = std::min(plan.cpu_max_tokens, placement::kCpuExpertQueueRows);
    }
    plan.split_max_tokens = model.split_token_threshold(work);
    const double fraction = model.split_fraction(work);
    if (fraction > 0.0 && fraction < 1.0) plan.split_fraction = fraction;
    return plan;
  };
}

placement::CpuTokenThreshold cost_model_threshold(CostModel model) {
  return [model = std::move(model)](const placement::UnitProfile& profile) {
    return model.cpu_token_threshold(unit_work_of(profile));
  };
}

// ---- plan predictions ----------------------------------------------------------------------

double PlanPrediction::prefill_tokens_per_second(bool best) const {
  const double seconds = best ? prefill_seconds_best : prefill_seconds_stream;
  return seconds > 0 ? static_cast<double>(prefill_tokens) / seconds : 0.0;
}

PlanPrediction predict_plan(const CostModel& model, const std::vector<PlannedUnit>& units,
                            const PredictOptions& options) {
  STRATA_CHECK_ARG(options.prefill_tokens >= 1 && options.batch >= 1,
                   "predict_plan: prefill tokens ({}) and batch ({}) must be at least 1",
                   options.prefill_tokens, options.batch);
  const MachineConstants& c = model.constants();
  const bool gpu = options.gpu_main;
  STRATA_CHECK_ARG(!gpu || c.has_gpu(),
                   "predict_plan: the plan runs on a GPU but the machine constants have no GPU "
                   "rates ({}); calibrate on a machine with the GPU, or pass its constants file",
                   c.fingerprint.empty() ? "no fingerprint" : c.fingerprint);
  PlanPrediction out;
  const std::int64_t prefill = options.prefill_tokens * options.batch;
  const std::int64_t decode = options.batch;
  out.prefill_tokens = prefill;
  std::int64_t gpu_bytes = 0, cpu_bytes = 0;
  for (const PlannedUnit& unit : units) {
    const UnitWork& w = unit.work;
    // A decode step also reads the KV cache of its context (the prompt) where the layer computes.
    UnitWork d = w;
    d.kv_read_bytes = w.kv_bytes_per_context_token * options.decode_context * options.batch;
    UnitPrediction row{unit.name, w.tier, w.bytes, "gpu", "gpu", 0};
    if (w.tier == Tier::Gpu) gpu_bytes += w.bytes;
    if (w.tier == Tier::Cpu) cpu_bytes += w.bytes;
    if (!gpu) {  // everything computes on the cpu, where the weights are
      row.prefill = row.decode = "cpu";
      row.cpu_max_tokens = kAlwaysCpu;
      UnitWork on_cpu = w;
      if (on_cpu.tier == Tier::Gpu) on_cpu.tier = Tier::Cpu;
      for (auto* best : {&out.prefill_seconds_best, &out.prefill_seconds_stream}) {
        *best += model.cpu_seconds(on_cpu, prefill, false);
      }
      on_cpu.kv_read_bytes = d.kv_read_bytes;
      for (auto* best : {&out.decode_seconds_best, &out.decode_seconds_stream,
                         &out.decode_seconds_cpu, &out.decode_seconds_split}) {
        *best += model.cpu_seconds(on_cpu, decode, false);
      }
    } else if (w.tier == Tier::Gpu) {
      out.prefill_seconds_best += model.gpu_seconds(w, prefill);
      out.prefill_seconds_stream += model.gpu_seconds(w, prefill);
      for (auto* sum : {&out.decode_seconds_best, &out.decode_seconds_stream,
                        &out.decode_seconds_cpu, &out.decode_seconds_split}) {
        *sum += model.gpu_seconds(d, decode);
      }
    } else {
      row.cpu_max_tokens = model.cpu_token_threshold(w);
      row.split_max_tokens = model.split_token_threshold(w);
      row.prefill = std::string(placement::execution_policy_name(model.best_policy(w, prefill)));
      row.decode = std::string(placement::execution_policy_name(model.best_policy(d, decode)));
      // Routed experts found in the expert cache compute on the GPU; the others as the unit.
      const double hit = std::clamp(w.experts > 0 ? w.cache_hit_rate : 0.0, 0.0, 1.0);
      const auto cached = [&](const UnitWork& u, double seconds, std::int64_t tokens) {
        return hit * model.gpu_seconds(u, tokens) + (1.0 - hit) * seconds;
      };
      // A block of offloaded experts also pays its fixed cost once per step, whatever the
      // share of its experts the cache serves.
      const double block = model.expert_block_seconds(w);
      out.expert_block_seconds += block;
      out.prefill_seconds_best += cached(w, model.best_seconds(w, prefill), prefill) + block;
      out.prefill_seconds_stream += cached(w, model.stream_seconds(w, prefill), prefill) + block;
      out.decode_seconds_best += cached(d, model.best_seconds(d, decode), decode) + block;
      out.decode_seconds_stream += cached(d, model.stream_seconds(d, decode), decode) + block;
      out.decode_seconds_cpu += cached(d, model.cpu_seconds(d, decode), decode) + block;
      const double split = model.split_seconds(d, decode, model.split_fraction(d));
      out.decode_seconds_split +=
          cached(d, std::isfinite(split) ? split : model.stream_seconds(d, decode), decode) + block;
      if (w.experts > 0) {
        row.decode_expert_bytes = static_cast<std::int64_t>(
            static_cast<double>(w.bytes) * selected_fraction(w, decode) * (1.0 - hit));
      }
    }
    out.units.push_back(std::move(row));
  }
  const double read_rate = options.checkpoint_cached ? c.page_cache_read_gbps : c.disk_read_gbps;
  out.load_seconds = seconds_for(static_cast<double>(options.checkpoint_bytes), read_rate) +
                     (gpu ? seconds_for(static_cast<double>(gpu_bytes), c.h2d_gbps) : 0.0) +
                     seconds_for(static_cast<double>(cpu_bytes), c.host_read_gbps);
  return out;
}

}  // namespace strata::engine

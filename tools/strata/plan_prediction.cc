#include "plan_prediction.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "strata/core/error.h"
#include "strata/io/checkpoint.h"
#include "strata/nn/layers.h"
#include "strata/placement/memory.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

engine::Tier tier_of(const placement::MapDevice& device) {
  if (device.is_disk()) return engine::Tier::Disk;
  if (device.is_cpu()) return engine::Tier::Cpu;
  return engine::Tier::Gpu;
}

// The checkpoint's shards as the loader finds them; a folder with only config.json (planning
// ahead of a download) counts the model's size.
std::int64_t checkpoint_file_bytes(const std::filesystem::path& dir, std::int64_t fallback) {
  std::int64_t total = 0;
  try {
    for (const auto& shard : io::discover_checkpoint(dir).shards) {
      total += static_cast<std::int64_t>(std::filesystem::file_size(shard));
    }
  } catch (const Error&) {
    return fallback;
  }
  return total > 0 ? total : fallback;
}

std::string name_of(models::CausalLM& model, const nn::Module* target) {
  for (const auto& [name, module] : model.named_modules()) {
    if (module == target) return name;
  }
  return "";
}

}  // namespace

PlanForecast forecast_plan(const EmptyModel& empty, const placement::DeviceMap& map,
                           const std::filesystem::path& model_dir, const PredictionInput& input) {
  PlanForecast out;
  engine::MachineConstants constants;
  if (input.machine_file) {
    constants = engine::read_machine_constants(*input.machine_file);
    out.constants_source = *input.machine_file;
  } else {
    const engine::Calibration calibration = engine::load_or_measure();
    constants = calibration.constants;
    out.constants_source =
        calibration.file.string() + (calibration.measured ? " (measured now)" : "");
  }
  out.fingerprint = constants.fingerprint;

  models::CausalLM& model = *empty.model;
  const placement::ModuleSizes sizes = placement::compute_module_sizes(model, {empty.dtype, {}});
  const auto element = static_cast<std::int64_t>(dtype_size(empty.dtype));
  const std::string embedding = name_of(model, &model.input_embeddings());
  const auto kv_per_layer = static_cast<std::int64_t>(
      empty.config.kv_cache_bytes_per_token(empty.dtype) /
      static_cast<std::uint64_t>(std::max<std::int64_t>(empty.config.num_layers, 1)));
  std::vector<engine::PlannedUnit> units;
  std::int64_t host_bytes = 0, total = 0, offloaded_experts = 0;
  bool gpu_main = false;
  // Map entries nest (`--experts cpu`: a layer on the GPU, its experts on the cpu): a unit is its
  // entry less the entries directly inside it, in bytes and in modules. Each entry's enclosing
  // entry is found by walking up its dotted name.
  std::map<std::string, std::vector<std::string>> nested_in;
  {
    std::set<std::string> names;
    for (const auto& [name, device] : map) names.insert(name);
    for (const auto& [name, device] : map) {
      std::string up = name;
      while (!up.empty()) {
        const std::size_t dot = up.rfind('.');
        up = dot == std::string::npos ? std::string() : up.substr(0, dot);
        if (names.contains(up)) {
          nested_in[up].push_back(name);
          break;
        }
      }
    }
  }
  const auto is_experts = [](const std::string& n) {
    return n == "experts" || n.ends_with(".experts");
  };
  const auto in_list = [](const std::vector<std::string>& list, const std::string& full) {
    return std::any_of(list.begin(), list.end(), [&](const std::string& n) {
      return full == n || full.starts_with(n + ".");
    });
  };
  std::vector<std::pair<std::string, placement::MapDevice>> entries(map.begin(), map.end());
  for (std::size_t at = 0; at < entries.size(); ++at) {
    const std::string name = entries[at].first;  // copies: `entries` grows below
    const placement::MapDevice device = entries[at].second;
    std::vector<std::string>& nested = nested_in[name];
    // Routed experts inside a unit that are no entry of their own (they share their block's
    // device) become a unit of their own, next to it: a step reads and runs only the selected.
    if (!is_experts(name) && empty.config.num_experts > 0) {
      std::vector<std::string> inner;
      for (const auto& [child_name, child] : model.get_submodule(name).named_modules()) {
        if (child_name.empty()) continue;
        const std::string full = name.empty() ? child_name : name + "." + child_name;
        if (is_experts(full) && !in_list(nested, full) && !in_list(inner, full)) {
          inner.push_back(full);
        }
      }
      for (std::size_t i = 0; i < inner.size(); ++i) {
        nested.push_back(inner[i]);
        entries.insert(entries.begin() + static_cast<std::ptrdiff_t>(at + 1 + i),
                       {inner[i], device});
      }
    }
    const auto in_nested = [&](const std::string& full) { return in_list(nested, full); };
    engine::UnitWork work;
    work.bytes = sizes[name];
    for (const std::string& n : nested) work.bytes -= sizes[n];
    work.tier = tier_of(device);
    work.flops_per_token = 2 * (work.bytes / element);
    work.activation_bytes_per_token = empty.config.hidden_size * element;
    work.lookup = name == embedding;
    if (work.lookup) work.flops_per_token = 0;
    // Per module of the unit: its ops, the linears a split step would divide (offloaded units)
    // and the KV cache an attention module reads per token of context.
    std::int64_t modules = 0;
    for (const auto& [child_name, child] : model.get_submodule(name).named_modules()) {
      const std::string full =
          child_name.empty() ? name : (name.empty() ? child_name : name + "." + child_name);
      if (in_nested(full)) continue;
      ++modules;
      const bool offloaded = work.tier != engine::Tier::Gpu && !work.lookup;
      if (offloaded && dynamic_cast<const nn::Linear*>(child) != nullptr) ++work.split_linears;
      if (child->class_name().find("Attention") != std::string::npos) {
        work.kv_bytes_per_context_token += kv_per_layer;
      }
    }
    work.ops = engine::ops_of_modules(modules);
    // A block's routed experts (moe-execution.md): a step reads only those its tokens selected.
    if ((name == "experts" || name.ends_with(".experts")) && empty.config.num_experts > 0) {
      work.experts = empty.config.num_experts;
      work.top_k = empty.config.num_experts_per_tok;
      if (work.tier != engine::Tier::Gpu) offloaded_experts += work.bytes;
    }
    if (work.tier != engine::Tier::Gpu) host_bytes += work.bytes;
    gpu_main = gpu_main || work.tier == engine::Tier::Gpu;
    total += work.bytes;
    units.push_back({name, work});
  }
  const placement::MaxMemory measured = placement::get_max_memory();
  const std::int64_t available = measured.find(placement::MapDevice::cpu()).value_or(0);
  for (auto& unit : units) unit.work.disk_cached = host_bytes <= available;
  // The expert cache holds its share of the offloaded experts; routing spread over them (a
  // random router; a trained one repeats itself more) hits in that proportion.
  out.expert_cache_bytes = gpu_main ? input.expert_cache_bytes : 0;
  out.offloaded_expert_bytes = offloaded_experts;
  if (offloaded_experts > 0 && out.expert_cache_bytes > 0) {
    out.expert_hit_rate = std::min(
        1.0, static_cast<double>(out.expert_cache_bytes) / static_cast<double>(offloaded_experts));
  }
  for (auto& unit : units) {
    if (unit.work.experts > 0 && unit.work.tier != engine::Tier::Gpu) {
      unit.work.cache_hit_rate = out.expert_hit_rate;
    }
  }

  engine::PredictOptions options;
  options.prefill_tokens = input.prefill_tokens;
  options.batch = input.batch;
  options.decode_context = input.decode_context;
  options.checkpoint_bytes = checkpoint_file_bytes(model_dir, total);
  options.checkpoint_cached = options.checkpoint_bytes <= available;
  options.gpu_main = gpu_main;
  try {
    out.prediction = engine::predict_plan(engine::CostModel(constants), units, options);
  } catch (const InvalidArgument& e) {
    out.unavailable = e.what();
  }
  return out;
}

std::string forecast_text(const PlanForecast& f, const PredictionInput& input) {
  std::string out = fmt::format("\npredictions (machine constants {}):\n", f.constants_source);
  if (!f.prediction) return out + "  none: " + f.unavailable + "\n";
  const engine::PlanPrediction& p = *f.prediction;
  out += fmt::format("  load                      {:10.2f} s\n", p.load_seconds);
  out += fmt::format(
      "  prefill {:>5} tokens       {:10.1f} tokens/s best, {:.1f} tokens/s streaming\n",
      p.prefill_tokens, p.prefill_tokens_per_second(true), p.prefill_tokens_per_second(false));
  out += fmt::format(
      "  decode (batch {:>3})         {:10.2f} ms/step best, {:.2f} ms/step streaming, {:.2f} "
      "cpu, {:.2f} split\n",
      input.batch, p.decode_seconds_best * 1e3, p.decode_seconds_stream * 1e3,
      p.decode_seconds_cpu * 1e3, p.decode_seconds_split * 1e3);
  if (f.offloaded_expert_bytes > 0) {
    std::int64_t read = 0;
    for (const engine::UnitPrediction& u : p.units) read += u.decode_expert_bytes;
    out += fmt::format(
        "  routed experts offloaded  {:>10}, expert cache {} (expected hit rate {:.1f}%): a "
        "decode step reads {} of experts outside the cache; the blocks' fixed cost {:.2f} ms "
        "per step\n",
        placement::format_bytes(f.offloaded_expert_bytes),
        placement::format_bytes(f.expert_cache_bytes), 100.0 * f.expert_hit_rate,
        placement::format_bytes(read), p.expert_block_seconds * 1e3);
  }
  out +=
      "\nunit                                      tier          bytes  prefill  decode  cpu up "
      "to  split up to\n";
  for (const engine::UnitPrediction& u : p.units) {
    std::string threshold = "-", split = "-";
    if (u.tier != engine::Tier::Gpu || u.decode == "cpu") {
      threshold = u.cpu_max_tokens >= engine::kAlwaysCpu ? "any" : std::to_string(u.cpu_max_tokens);
    }
    if (u.tier != engine::Tier::Gpu && u.split_max_tokens > 0) {
      split = std::to_string(u.split_max_tokens);
    }
    out += fmt::format("{:<40}  {:<5} {:>12}  {:<7}  {:<6}  {:<9}  {}\n", u.name,
                       engine::tier_name(u.tier), placement::format_bytes(u.bytes), u.prefill,
                       u.decode, threshold, split);
  }
  return out;
}

nlohmann::ordered_json forecast_json(const PlanForecast& f, const PredictionInput& input) {
  nlohmann::ordered_json out;
  out["machine_constants"] = f.constants_source;
  out["fingerprint"] = f.fingerprint;
  if (!f.prediction) {
    out["available"] = false;
    out["reason"] = f.unavailable;
    return out;
  }
  const engine::PlanPrediction& p = *f.prediction;
  out["available"] = true;
  out["load_seconds"] = p.load_seconds;
  out["prefill"] = {{"tokens", p.prefill_tokens},
                    {"best_tokens_per_second", p.prefill_tokens_per_second(true)},
                    {"stream_tokens_per_second", p.prefill_tokens_per_second(false)},
                    {"best_seconds", p.prefill_seconds_best},
                    {"stream_seconds", p.prefill_seconds_stream}};
  out["decode"] = {{"batch", input.batch},
                   {"best_ms_per_step", p.decode_seconds_best * 1e3},
                   {"stream_ms_per_step", p.decode_seconds_stream * 1e3},
                   {"cpu_ms_per_step", p.decode_seconds_cpu * 1e3},
                   {"split_ms_per_step", p.decode_seconds_split * 1e3}};
  std::int64_t expert_read = 0;
  for (const engine::UnitPrediction& u : p.units) expert_read += u.decode_expert_bytes;
  out["experts"] = {{"offloaded_bytes", f.offloaded_expert_bytes},
                    {"cache_bytes", f.expert_cache_bytes},
                    {"expected_hit_rate", f.expert_hit_rate},
                    {"decode_bytes_outside_cache", expert_read},
                    {"block_ms_per_step", p.expert_block_seconds * 1e3}};
  nlohmann::ordered_json units = nlohmann::ordered_json::array();
  for (const engine::UnitPrediction& u : p.units) {
    units.push_back({{"name", u.name},
                     {"tier", engine::tier_name(u.tier)},
                     {"bytes", u.bytes},
                     {"prefill", u.prefill},
                     {"decode", u.decode},
                     {"cpu_max_tokens", u.cpu_max_tokens},
                     {"split_max_tokens", u.split_max_tokens}});
  }
  out["units"] = std::move(units);
  return out;
}

}  // namespace strata::cli

#include "plan_command.h"

#include <fmt/format.h>

#include <map>
#include <ostream>

#include "cli_options.h"
#include "serve_command.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

struct Planned {
  EmptyModel empty;
  placement::InferOptions options;
  placement::DevicePlan plan;
  std::string kv_note;  // the serve KV cache reserve, when asked
};

Planned plan_model(const PlanArgs& args) {
  // Parse every option before building anything, so a typo fails fast.
  const auto strategy = placement::parse_device_map_strategy(args.strategy);
  std::optional<placement::MaxMemory> max_memory;
  if (args.max_memory) max_memory = parse_max_memory(*args.max_memory);
  Planned out{build_empty_model(args.model_dir, args.dtype), {}, {}, {}};
  out.options.max_memory = std::move(max_memory);
  out.options.no_split_module_classes = no_split_classes(*out.empty.model, args.no_split);
  out.options.dtype = out.empty.dtype;
  if (args.max_sequences || args.ctx_size) {
    const ServeArgs defaults;
    const std::int64_t sequences = args.max_sequences.value_or(defaults.max_sequences);
    std::int64_t ctx = args.ctx_size.value_or(defaults.ctx_size);
    STRATA_CHECK_ARG(sequences >= 1 && ctx >= 2,
                     "--max-sequences {} and --ctx-size {}: need at least 1 sequence of 2 tokens",
                     sequences, ctx);
    const std::int64_t limit = out.empty.config.max_position_embeddings;
    if (limit > 0) ctx = std::min(ctx, limit);
    out.options.reserve.per_gpu = static_cast<std::int64_t>(
        serve_kv_cache_bytes(out.empty.config, out.empty.dtype, sequences, ctx));
    out.kv_note = fmt::format(
        "KV cache pool (strata serve): {} sequences x {} tokens = {} held back on every GPU\n",
        sequences, ctx, placement::format_bytes(out.options.reserve.per_gpu));
  }
  out.plan = placement::plan_device_map(*out.empty.model, strategy, out.options);
  return out;
}

// Bytes per device of the final map, from the model's own sizes (not the planner's bookkeeping):
// the cleaned map's entries are disjoint and cover every tensor, so the totals add up to the model
// size. A tied parameter counts once, under its first name.
std::vector<DeviceTotal> device_totals(const Planned& planned) {
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(*planned.empty.model, {planned.empty.dtype, {}});
  std::map<placement::MapDevice, std::int64_t> bytes;
  for (const auto& [name, device] : planned.plan.device_map) bytes[device] += sizes[name];
  std::vector<DeviceTotal> out;
  for (const auto& [device, total] : bytes) out.push_back({device, total});
  return out;
}

}  // namespace

CLI::App* add_plan_command(CLI::App& app, PlanArgs& args) {
  CLI::App* cmd = app.add_subcommand("plan",
                                     "print where every module of a checkpoint "
                                     "would go (no weights are loaded)");
  cmd->add_option("model_dir", args.model_dir, "folder with config.json")->required();
  cmd->add_option("--max-memory", args.max_memory,
                  "budgets per device, e.g. cuda:0=10GiB,cpu=30GiB or in bytes, cuda:1=1347683123 "
                  "(default: measured); GPUs this machine lacks are planned for all the same");
  cmd->add_option("--dtype", args.dtype, "weight dtype (default: the checkpoint's, else f32)");
  cmd->add_option("--strategy", args.strategy, "auto, balanced, balanced_low_0 or sequential")
      ->capture_default_str();
  cmd->add_option("--no-split", args.no_split,
                  "module classes never split over devices, comma-separated, \"\" for none "
                  "(default: the model's decoder layer)");
  cmd->add_option("--max-sequences", args.max_sequences,
                  "plan for strata serve: hold back its KV cache pool of this many sequences "
                  "on every GPU");
  cmd->add_option("--ctx-size", args.ctx_size,
                  "plan for strata serve: tokens per sequence of that pool");
  cmd->add_option("--output", args.output,
                  "also write the device map to this JSON file, {\"module\": device, ...}, for "
                  "strata run --device-map");
  return cmd;
}

placement::DevicePlan plan_checkpoint(const PlanArgs& args) { return plan_model(args).plan; }

std::vector<DeviceTotal> device_totals(const PlanArgs& args) {
  return device_totals(plan_model(args));
}

int run_plan(const PlanArgs& args, std::ostream& out) {
  const Planned planned = plan_model(args);
  const placement::DevicePlan& plan = planned.plan;
  const std::vector<std::string>& no_split = planned.options.no_split_module_classes;
  out << fmt::format("{} ({}), {}, strategy {}, no split: {}\n\n", args.model_dir,
                     planned.empty.model->class_name(), planned.empty.dtype, args.strategy,
                     no_split.empty() ? "none" : fmt::format("{}", fmt::join(no_split, ", ")));
  out << placement::explain_table(plan) << "\n";
  out << planned.kv_note;
  const std::vector<DeviceTotal> totals = device_totals(planned);
  out << "device     weights  budget\n";
  std::int64_t total = 0;
  for (const DeviceTotal& row : totals) {
    const auto budget = plan.max_memory.find(row.device);
    out << fmt::format("{:<6}  {:>10}  {}\n", row.device.str(), placement::format_bytes(row.bytes),
                       budget ? placement::format_bytes(*budget) : "-");
    total += row.bytes;
  }
  out << fmt::format("total   {:>10}  ({} bytes)\n", placement::format_bytes(total), total);
  if (args.output) {
    write_device_map_file(*args.output, plan.device_map);
    out << fmt::format("\ndevice map written to {} (strata run --device-map {})\n", *args.output,
                       *args.output);
  }
  return 0;
}

}  // namespace strata::cli

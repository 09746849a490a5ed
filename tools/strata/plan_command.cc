#include "plan_command.h"

#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli_options.h"
#include "plan_prediction.h"
#include "serve_command.h"
#include "strata/core/error.h"
#include "strata/placement/expert_cache.h"
#include "strata/placement/memory.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

// What --batch and --ctx-size hold back: the KV cache of every sequence at full context, and the
// activations of a prompt that fills it (docs/hybrid-execution.md: an estimate, not a measure).
struct RuntimeNeed {
  std::int64_t sequences = 0, ctx = 0;
  std::int64_t kv_bytes = 0, activation_bytes = 0;
  std::int64_t total() const { return kv_bytes + activation_bytes; }
};

struct Planned {
  EmptyModel empty;
  placement::InferOptions options;
  placement::DevicePlan plan;
  std::string kv_note;  // the KV cache and activation reserve, when asked
  std::optional<RuntimeNeed> need;
};

// Per token of a prefill: the residual stream and its normalised copy, q/k/v/o and the MLP's
// gate, up and product, in the model's dtype, plus the float32 logits row.
std::int64_t activation_bytes(const models::TransformerConfig& config, DType dtype,
                              std::int64_t tokens) {
  const auto element = static_cast<std::int64_t>(dtype_size(dtype));
  const std::int64_t per_token =
      (6 * config.hidden_size + 3 * config.intermediate_size) * element + config.vocab_size * 4;
  return per_token * tokens;
}

std::optional<RuntimeNeed> runtime_need(const PlanArgs& args, const EmptyModel& empty) {
  if (!args.max_sequences && !args.ctx_size && !args.batch) return std::nullopt;
  STRATA_CHECK_ARG(!args.batch || !args.max_sequences || *args.batch == *args.max_sequences,
                   "--batch {} and --max-sequences {} name the same thing; give one",
                   args.batch.value_or(0), args.max_sequences.value_or(0));
  const ServeArgs defaults;
  RuntimeNeed need;
  need.sequences = args.batch.value_or(args.max_sequences.value_or(defaults.max_sequences));
  need.ctx = args.ctx_size.value_or(defaults.ctx_size);
  STRATA_CHECK_ARG(need.sequences >= 1 && need.ctx >= 2,
                   "--batch/--max-sequences {} and --ctx-size {}: need at least 1 sequence of 2 "
                   "tokens",
                   need.sequences, need.ctx);
  const std::int64_t limit = empty.config.max_position_embeddings;
  if (limit > 0) need.ctx = std::min(need.ctx, limit);
  // Under tensor parallelism a rank caches its own KV heads only.
  const models::TensorParallel& tp = empty.model->tensor_parallel();
  const models::TransformerConfig kv_config =
      tp.active() ? models::rank_config(empty.config, tp.size) : empty.config;
  need.kv_bytes = static_cast<std::int64_t>(
      serve_kv_cache_bytes(kv_config, empty.dtype, need.sequences, need.ctx));
  need.activation_bytes = activation_bytes(empty.config, empty.dtype, need.sequences * need.ctx);
  return need;
}

// The KV cache and activations live on the main device: every GPU of the budgets holds them back
// (as serve's pool), or the cpu when there is no GPU. A budget smaller than that is an error now,
// not an out-of-memory at token 3000.
void hold_back(const RuntimeNeed& need, const placement::MaxMemory& budgets,
               placement::InferOptions& options) {
  bool any_gpu = false;
  for (const auto& [device, bytes] : budgets) {
    if (!device.is_gpu()) continue;
    any_gpu = true;
    STRATA_CHECK(bytes >= need.total(), OutOfMemory,
                 "{} has {} but the KV cache of {} sequences x {} tokens ({}) and the "
                 "activations of their prompts ({}) need {} there; lower --ctx-size or --batch, "
                 "or give that GPU more (--max-memory)",
                 device.device()->str(), placement::format_bytes(bytes), need.sequences, need.ctx,
                 placement::format_bytes(need.kv_bytes),
                 placement::format_bytes(need.activation_bytes),
                 placement::format_bytes(need.total()));
  }
  if (any_gpu) {
    options.reserve.per_gpu = need.total();
    return;
  }
  const auto cpu = budgets.find(placement::MapDevice::cpu());
  STRATA_CHECK(!cpu || *cpu >= need.total(), OutOfMemory,
               "cpu has {} but the KV cache of {} sequences x {} tokens ({}) and the "
               "activations of their prompts ({}) need {} there (no GPU: the model runs on the "
               "cpu); lower --ctx-size or --batch, or raise the cpu budget (--max-memory)",
               placement::format_bytes(*cpu), need.sequences, need.ctx,
               placement::format_bytes(need.kv_bytes),
               placement::format_bytes(need.activation_bytes),
               placement::format_bytes(need.total()));
  if (cpu) options.reserve.per_device.set(placement::MapDevice::cpu(), need.total());
}

Planned plan_model(const PlanArgs& args) {
  // Parse every option before building anything, so a typo fails fast.
  const auto strategy = placement::parse_device_map_strategy(args.strategy);
  std::optional<placement::MaxMemory> max_memory;
  if (args.max_memory) max_memory = parse_max_memory(*args.max_memory);
  STRATA_CHECK_ARG(args.prefill_tokens >= 1, "--prefill-tokens {}: must be at least 1",
                   args.prefill_tokens);
  STRATA_CHECK_ARG(args.decode_context >= 0, "--decode-context {}: must not be negative",
                   args.decode_context);
  STRATA_CHECK_ARG(args.tensor_parallel >= 1, "--tensor-parallel {}: it must be at least 1",
                   args.tensor_parallel);
  // Rank 0 holds the largest shards (an uneven vocabulary gives the first ranks one more row).
  const models::TensorParallel rank0{0, args.tensor_parallel, nullptr};
  Planned out{build_empty_model(args.model_dir, args.dtype, rank0), {}, {}, {}, {}};
  out.options.max_memory = max_memory;
  out.options.no_split_module_classes = no_split_classes(*out.empty.model, args.no_split);
  out.options.dtype = out.empty.dtype;
  out.options.experts = parse_expert_placement(args.experts, args.n_cpu_moe);
  out.need = runtime_need(args, out.empty);
  if (out.need) {
    hold_back(*out.need, max_memory ? *max_memory : placement::get_max_memory(), out.options);
    out.kv_note =
        fmt::format("KV cache {} sequences x {} tokens = {}, activations {}: {} held back on {}\n",
                    out.need->sequences, out.need->ctx, placement::format_bytes(out.need->kv_bytes),
                    placement::format_bytes(out.need->activation_bytes),
                    placement::format_bytes(out.need->total()),
                    out.options.reserve.per_gpu > 0 ? "every GPU" : "the cpu");
  }
  out.plan = placement::plan_device_map(*out.empty.model, strategy, out.options);
  return out;
}

// Bytes per device of the final map, from the model's own sizes (not the planner's bookkeeping):
// each tensor counts on the device the map gives it (entries may nest: a block on a GPU, its
// experts on the cpu), so the totals add up to the model size. A tied parameter counts once.
std::vector<DeviceTotal> device_totals(const Planned& planned) {
  nn::Module& model = *planned.empty.model;
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(model, {planned.empty.dtype, {}});
  std::map<placement::MapDevice, std::int64_t> bytes;
  const auto add = [&](const std::string& name) {
    const auto device = placement::device_for(planned.plan.device_map, name);
    if (device) bytes[*device] += sizes[name];
  };
  for (const auto& [name, t] : model.named_parameters()) add(name);
  for (const auto& [name, t] : model.named_buffers()) add(name);
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
                  "plan for strata serve: hold back the KV cache and activations of this many "
                  "sequences on every GPU (the same as --batch)");
  cmd->add_option("--batch", args.batch,
                  "sequences decoded together: their KV cache and activations are held back on "
                  "every GPU (the cpu without GPUs), and predictions are per step of that batch");
  cmd->add_option("--ctx-size", args.ctx_size, "tokens per sequence of that reserve");
  cmd->add_option("--prefill-tokens", args.prefill_tokens,
                  "prompt length the prefill prediction is for")
      ->capture_default_str();
  cmd->add_option("--decode-context", args.decode_context,
                  "tokens already in the cache at the decode step predicted (their KV is read); "
                  "0: right after a short prompt, as strata bench's tg test measures")
      ->capture_default_str();
  cmd->add_option("--machine", args.machine,
                  "machine constants file (strata calibrate --json) to predict for (default: "
                  "this machine's, measured on first use)");
  cmd->add_flag("!--no-predict", args.predict, "print no predictions (no machine constants)");
  cmd->add_flag("--json", args.json, "print the plan and the predictions as JSON");
  cmd->add_option("--experts", args.experts,
                  "mixture of experts: auto (routed experts placed after the rest of the model, "
                  "on the GPU where room is left) or cpu (never on a GPU)");
  cmd->add_option("--n-cpu-moe", args.n_cpu_moe,
                  "mixture of experts: keep the routed experts of the first N MoE blocks off the "
                  "GPUs (the rest as --experts auto)");
  cmd->add_option("--expert-cache", args.expert_cache,
                  "mixture of experts: the GPU expert cache the predictions assume, a size, off, "
                  "or auto (the GPU budget left by the weights, as strata run sizes it)")
      ->capture_default_str();
  cmd->add_option("--tensor-parallel", args.tensor_parallel,
                  "plan one rank of the model split over N tensor-parallel ranks (each rank "
                  "plans its shard under the budgets given)")
      ->capture_default_str();
  cmd->add_option("--output", args.output,
                  "also write the device map to this JSON file, {\"module\": device, ...}, for "
                  "strata run --device-map");
  return cmd;
}

placement::DevicePlan plan_checkpoint(const PlanArgs& args) { return plan_model(args).plan; }

std::vector<DeviceTotal> device_totals(const PlanArgs& args) {
  return device_totals(plan_model(args));
}

namespace {

PredictionInput prediction_input(const PlanArgs& args, const Planned& planned) {
  PredictionInput input;
  input.prefill_tokens = args.prefill_tokens;
  input.decode_context = args.decode_context;
  input.batch = planned.need ? planned.need->sequences : 1;
  input.machine_file = args.machine;
  if (args.expert_cache == "off") {
    input.expert_cache_bytes = 0;
  } else if (args.expert_cache != "auto") {
    input.expert_cache_bytes = placement::parse_memory_size(args.expert_cache);
  } else {
    // The first GPU's budget less the weights the plan puts there.
    const placement::DevicePlan& plan = planned.plan;
    for (const auto& [device, budget] : plan.max_memory) {
      if (!device.is_gpu()) continue;
      const auto used = plan.used.find(device);
      input.expert_cache_bytes = placement::spare_for_expert_cache(budget, used.value_or(0));
      break;
    }
  }
  return input;
}

nlohmann::ordered_json plan_json(const PlanArgs& args, const Planned& planned,
                                 const std::vector<DeviceTotal>& totals,
                                 const std::optional<PlanForecast>& forecast) {
  const placement::DevicePlan& plan = planned.plan;
  nlohmann::ordered_json json;
  json["schema"] = "strata-plan/1";
  json["model_dir"] = args.model_dir;
  json["model_class"] = planned.empty.model->class_name();
  json["dtype"] = std::string(dtype_name(planned.empty.dtype));
  json["strategy"] = args.strategy;
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  for (const auto& [name, device] : plan.device_map) map[name] = device.str();
  json["device_map"] = std::move(map);
  nlohmann::ordered_json devices = nlohmann::ordered_json::array();
  std::int64_t total = 0;
  for (const DeviceTotal& row : totals) {
    const auto budget = plan.max_memory.find(row.device);
    devices.push_back({{"device", row.device.str()},
                       {"weights_bytes", row.bytes},
                       {"budget_bytes", budget ? nlohmann::ordered_json(*budget) : nullptr}});
    total += row.bytes;
  }
  json["devices"] = std::move(devices);
  json["total_bytes"] = total;
  if (planned.need) {
    json["runtime_reserve"] = {
        {"sequences", planned.need->sequences},
        {"ctx_size", planned.need->ctx},
        {"kv_cache_bytes", planned.need->kv_bytes},
        {"activation_bytes", planned.need->activation_bytes},
        {"held_back_on", planned.options.reserve.per_gpu > 0 ? "gpu" : "cpu"}};
  } else {
    json["runtime_reserve"] = nullptr;
  }
  json["predictions"] =
      forecast ? forecast_json(*forecast, prediction_input(args, planned)) : nullptr;
  return json;
}

}  // namespace

int run_plan(const PlanArgs& args, std::ostream& out) {
  const Planned planned = plan_model(args);
  const placement::DevicePlan& plan = planned.plan;
  const std::vector<DeviceTotal> totals = device_totals(planned);
  std::optional<PlanForecast> forecast;
  if (args.predict) {
    forecast = forecast_plan(planned.empty, plan.device_map, args.model_dir,
                             prediction_input(args, planned));
  }
  if (args.output) write_device_map_file(*args.output, plan.device_map);
  if (args.json) {
    out << plan_json(args, planned, totals, forecast).dump(2) << "\n";
    return 0;
  }
  const std::vector<std::string>& no_split = planned.options.no_split_module_classes;
  out << fmt::format("{} ({}), {}, strategy {}, no split: {}\n\n", args.model_dir,
                     planned.empty.model->class_name(), planned.empty.dtype, args.strategy,
                     no_split.empty() ? "none" : fmt::format("{}", fmt::join(no_split, ", ")));
  if (args.tensor_parallel > 1) {
    const EmptyModel whole = build_empty_model(args.model_dir, args.dtype);
    const std::int64_t whole_bytes =
        placement::compute_module_sizes(*whole.model, {whole.dtype, {}}).total();
    const std::int64_t rank_bytes =
        placement::compute_module_sizes(*planned.empty.model, {planned.empty.dtype, {}}).total();
    out << fmt::format(
        "tensor parallel over {} ranks (mpirun -np {}): the plan of rank 0, whose shard is the "
        "largest: {} of the model's {} (embeddings and norms are on every rank); each rank plans "
        "its shard alike under these budgets\n",
        args.tensor_parallel, args.tensor_parallel, placement::format_bytes(rank_bytes),
        placement::format_bytes(whole_bytes));
    // Predicted decode speed: a decode step is bound by the weight bytes read, and the embedding
    // is only looked up (unless it is the tied head of the whole model).
    const models::TransformerConfig& c = whole.config;
    const auto element = static_cast<std::int64_t>(dtype_size(whole.dtype));
    const std::int64_t embed = c.vocab_size * c.hidden_size * element;
    const std::int64_t rank_read = rank_bytes - embed;
    const std::int64_t whole_read = whole_bytes - (c.tie_word_embeddings ? 0 : embed);
    const std::int64_t reduce = c.hidden_size * element;
    out << fmt::format(
        "predicted decode: a rank reads {} of weights per token against {} on one device, so "
        "about {:.2f}x the single-device time per token at the same memory bandwidth, plus {} "
        "all-reduces of {} per token (2 per layer) and one all-gather of the logits\n\n",
        placement::format_bytes(rank_read), placement::format_bytes(whole_read),
        static_cast<double>(rank_read) / static_cast<double>(whole_read), 2 * c.num_layers,
        placement::format_bytes(reduce));
  }
  out << placement::explain_table(plan) << "\n";
  out << planned.kv_note;
  out << "device     weights  budget\n";
  std::int64_t total = 0;
  for (const DeviceTotal& row : totals) {
    const auto budget = plan.max_memory.find(row.device);
    out << fmt::format("{:<6}  {:>10}  {}\n", row.device.str(), placement::format_bytes(row.bytes),
                       budget ? placement::format_bytes(*budget) : "-");
    total += row.bytes;
  }
  out << fmt::format("total   {:>10}  ({} bytes){}\n", placement::format_bytes(total), total,
                     args.tensor_parallel > 1 ? " per rank" : "");
  if (forecast) out << forecast_text(*forecast, prediction_input(args, planned));
  if (args.output) {
    out << fmt::format("\ndevice map written to {} (strata run --device-map {})\n", *args.output,
                       *args.output);
  }
  return 0;
}

}  // namespace strata::cli

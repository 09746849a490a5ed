#include "model_loading.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <ostream>
#include <variant>
#include <vector>

#include "progress_bar.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/dist/communicator.h"
#include "strata/engine/cost_model.h"
#include "strata/models/moe.h"
#include "strata/placement/memory.h"

namespace strata::cli {
namespace {

// A strategy name, else a JSON file; anything else names both forms.
std::variant<placement::DeviceMapStrategy, placement::DeviceMap> parse_device_map_arg(
    const std::string& text) {
  for (const char* name : {"auto", "balanced", "balanced_low_0", "sequential"}) {
    if (text == name) return placement::parse_device_map_strategy(text);
  }
  STRATA_CHECK_ARG(std::filesystem::is_regular_file(text),
                   "--device-map {}: not a strategy (auto, balanced, balanced_low_0, sequential) "
                   "nor an existing JSON file",
                   text);
  return read_device_map_file(text);
}

// NVIDIA GPUs of this host, counted without starting CUDA (which would fix the visible devices
// before each rank picks its own): the driver lists one folder per GPU.
int host_gpu_count() {
  std::error_code error;
  int count = 0;
  for (std::filesystem::directory_iterator it("/proc/driver/nvidia/gpus", error), end;
       !error && it != end; it.increment(error)) {
    ++count;
  }
  return count;
}

}  // namespace

std::string offload_unit_for(const std::string& option, const models::TransformerConfig& config) {
  STRATA_CHECK_ARG(option == "auto" || option == "module" || option == "layer",
                   "--offload-unit {}: expected auto (layer, or module for a model with routed "
                   "experts), module (each module with weights) or layer (each decoder layer)",
                   option);
  if (option != "auto") return option;
  return config.num_experts > 0 ? "module" : "layer";
}

void add_placement_options(CLI::App* cmd, PlacementArgs& args) {
  cmd->add_option("--device-map", args.device_map,
                  "auto, balanced, balanced_low_0, sequential, or a JSON file")
      ->capture_default_str();
  cmd->add_option("--max-memory", args.max_memory,
                  "budgets per device, e.g. cuda:0=10GiB,cpu=30GiB (default: measured)");
  cmd->add_option("--offload-folder", args.offload_folder, "where disk-offloaded weights go");
  cmd->add_option("--dtype", args.dtype, "f32, bf16 or f16 (default: the checkpoint's)");
  cmd->add_option("--offload-policy", args.offload_policy,
                  "where offloaded layers compute: auto (per step, from the cost model of this "
                  "machine), stream (copied to the GPU), cpu (computed where they are) or split "
                  "(each linear's rows divided: the cpu computes its share while the rest streams "
                  "to the GPU)")
      ->capture_default_str();
  cmd->add_option("--offload-unit", args.offload_unit,
                  "what an offloaded unit is: module (each module with weights), layer (each "
                  "decoder layer: one activation round trip per layer under the cpu policy) or "
                  "auto (layer; module for a model with routed experts)")
      ->capture_default_str();
  cmd->add_option("--split-fraction", args.split_fraction,
                  "the cpu's share of each split linear's rows, in (0, 1) (default: from the cost "
                  "model of this machine, per unit)");
  cmd->add_option("--experts", args.experts,
                  "mixture of experts: auto (routed experts placed after the rest, on the GPU "
                  "where room is left) or cpu (never on a GPU)");
  cmd->add_option("--n-cpu-moe", args.n_cpu_moe,
                  "mixture of experts: the routed experts of the first N MoE blocks off the GPUs");
  cmd->add_option("--expert-cache", args.expert_cache,
                  "mixture of experts: GPU cache of recently used routed experts, a size "
                  "(e.g. 8GiB), off, or auto (the GPU budget left by the weights)")
      ->capture_default_str();
  cmd->add_option("--expert-cache-policy", args.expert_cache_policy,
                  "lru or lfu (least frequently used, with aging)")
      ->capture_default_str();
  cmd->add_option("--tensor-parallel", args.tensor_parallel,
                  "split the model over N ranks started with mpirun -np N (decoder family); "
                  "each rank loads its shard under the budgets above")
      ->capture_default_str();
}

void apply_offload_policy(const placement::LoadAndDispatchResult& loaded,
                          placement::OffloadPolicy policy, double split_fraction) {
  if (!loaded.dispatch || !loaded.dispatch->scheduler) return;
  placement::PrefetchScheduler& scheduler = *loaded.dispatch->scheduler;
  const bool planned =
      policy == placement::OffloadPolicy::Auto || policy == placement::OffloadPolicy::Split;
  if (!planned) {
    scheduler.set_offload_policy(policy);
  } else if (scheduler.execution_device().is_cpu()) {
    // Nothing to balance on the cpu alone: auto streams (the same work), split halves the rows.
    if (policy == placement::OffloadPolicy::Auto) {
      scheduler.set_offload_policy(placement::OffloadPolicy::Stream);
    } else {
      const double fraction = split_fraction > 0 ? split_fraction : 0.5;
      scheduler.set_offload_planner(policy, [fraction](const placement::UnitProfile&) {
        return placement::UnitPlan{.split_fraction = fraction};
      });
    }
  } else {
    // The cost model's thresholds and each unit's split fraction (from this machine's rates).
    const engine::Calibration calibration = engine::load_or_measure();
    placement::UnitPlanner planner =
        engine::cost_model_planner(engine::CostModel(calibration.constants));
    if (split_fraction > 0) {
      planner = [planner = std::move(planner), split_fraction](const placement::UnitProfile& p) {
        placement::UnitPlan plan = planner(p);
        plan.split_fraction = split_fraction;
        return plan;
      };
    }
    scheduler.set_offload_planner(policy, std::move(planner));
  }
}

models::TensorParallel tensor_parallel_for(const PlacementArgs& args) {
  STRATA_CHECK_ARG(args.tensor_parallel >= 1, "--tensor-parallel {}: it must be at least 1",
                   args.tensor_parallel);
  if (args.tensor_parallel == 1 && !dist::launched_by_mpirun()) return {};
  // One GPU per rank: the rank's index on its host picks it, before CUDA starts; a rank beyond
  // the host's GPUs sees none (set CUDA_VISIBLE_DEVICES per rank to choose otherwise).
  if (std::getenv("CUDA_VISIBLE_DEVICES") == nullptr) {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
      if (const char* local = std::getenv(name)) {
        const bool has_gpu = std::atoi(local) < host_gpu_count();
        setenv("CUDA_VISIBLE_DEVICES", has_gpu ? local : "", 0);
        break;
      }
    }
  }
  // NCCL only when every rank has a GPU (all ranks must pick the same back end); otherwise MPI,
  // which stages GPU tensors through the host.
  bool gpus = dist::nccl_built() && find_backend(DeviceType::CUDA) != nullptr;
  if (dist::mpi_built() && dist::launched_by_mpirun()) {
    const Tensor all = dist::mpi_communicator()->all_gather(
        Tensor::from_vector(std::vector<std::int64_t>{gpus ? 1 : 0}));
    for (const std::int64_t flag : all.to_vector<std::int64_t>()) gpus = gpus && flag == 1;
  }
  return models::TensorParallel::over(dist::communicator_for(args.tensor_parallel, gpus));
}

bool prints_results(const models::CausalLM& model) { return model.tensor_parallel().rank == 0; }

Device input_device_of(const models::CausalLM& model) {
  const Tensor& weight = model.input_embeddings().weight();
  return weight.is_meta() ? Device::cpu() : weight.device();
}

std::filesystem::path builtin_model_dir() {
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  std::vector<std::filesystem::path> candidates;
  if (!error) {
    candidates.push_back(exe.parent_path().parent_path() / "share" / "strata" / "models" /
                         "stories260K");
  }
  candidates.emplace_back(STRATA_SOURCE_MODEL_DIR);
  std::vector<std::string> looked;
  for (const auto& dir : candidates) {
    if (std::filesystem::is_regular_file(dir / "config.json", error)) return dir;
    looked.push_back(dir.string());
  }
  STRATA_THROW(InvalidArgument,
               "the built-in model is not installed (looked in {}); pass a model folder",
               fmt::join(looked, ", "));
}

std::string weights_per_device(const io::LoadSummary& summary) {
  std::vector<std::string> parts;
  for (const auto& [destination, bytes] : summary.bytes_per_destination) {
    parts.push_back(fmt::format("{} {}", destination,
                                placement::format_bytes(static_cast<std::int64_t>(bytes))));
  }
  return parts.empty() ? std::string("no weights") : fmt::format("{}", fmt::join(parts, ", "));
}

LoadedModel load_model(const std::filesystem::path& model_dir, const PlacementArgs& args,
                       const LoadReporting& reporting) {
  return load_model(build_empty_model(model_dir, args.dtype, tensor_parallel_for(args)), model_dir,
                    args, reporting);
}

LoadedModel load_model(EmptyModel empty, const std::filesystem::path& model_dir,
                       const PlacementArgs& args, const LoadReporting& reporting) {
  // Every option is checked before the first weight is read.
  placement::LoadAndDispatchOptions options;
  options.device_map = parse_device_map_arg(args.device_map);
  if (args.max_memory) options.max_memory = parse_max_memory(*args.max_memory);
  if (args.offload_folder) options.offload_folder = *args.offload_folder;
  // Ranks hold different shards under the same names: each offloads into its own folder.
  if (const models::TensorParallel& tp = empty.model->tensor_parallel();
      tp.active() && options.offload_folder) {
    options.offload_folder = *options.offload_folder / fmt::format("rank{}", tp.rank);
  }
  options.reserve_per_gpu = args.reserve_per_gpu;
  const placement::OffloadPolicy policy = placement::parse_offload_policy(args.offload_policy);
  STRATA_CHECK_ARG(args.split_fraction == 0 || (args.split_fraction > 0 && args.split_fraction < 1),
                   "--split-fraction {}: the cpu's share of a split linear's rows must be "
                   "strictly between 0 and 1 (or 0: from the cost model)",
                   args.split_fraction);
  options.experts = parse_expert_placement(args.experts, args.n_cpu_moe);
  STRATA_CHECK_ARG(
      !options.experts || std::holds_alternative<placement::DeviceMapStrategy>(*options.device_map),
      "--experts and --n-cpu-moe plan with a strategy; with a device map file, "
      "place the experts in the file (e.g. \"model.layers.*.mlp.experts\": \"cpu\")");

  const placement::ExpertCachePolicy cache_policy =
      placement::parse_expert_cache_policy(args.expert_cache_policy);
  if (args.expert_cache != "auto" && args.expert_cache != "off") {
    try {
      STRATA_CHECK_ARG(placement::parse_memory_size(args.expert_cache) >= 0, "negative");
    } catch (const InvalidArgument& e) {
      STRATA_THROW(InvalidArgument,
                   "--expert-cache {}: expected a size (e.g. 8GiB), off or auto ({})",
                   args.expert_cache, e.what());
    }
  }

  LoadedModel out;
  out.empty = std::move(empty);
  const DType dtype = out.empty.dtype;
  STRATA_CHECK_ARG(dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16,
                   "--dtype {}: models run in f32, bf16 or f16", dtype);
  options.dtype = dtype;
  options.no_split_module_classes = out.empty.model->no_split_module_classes();
  if (offload_unit_for(args.offload_unit, out.empty.config) == "layer")
    options.preload_module_classes = options.no_split_module_classes;
  // Tensor parallelism: this rank reads its rows/columns of each split tensor, nothing more.
  options.shards =
      models::tensor_parallel_shards(out.empty.config, out.empty.model->tensor_parallel());

  // Under tensor parallelism only rank 0 reports (every rank plans and loads alike).
  const bool reports = prints_results(*out.empty.model);
  std::optional<ProgressBar> bar;
  if (reporting.progress != nullptr && reports) {
    bar.emplace(*reporting.progress, reporting.progress_is_terminal);
    options.progress = bar->callback();
  }
  // The plan is made (and shown) before any weight is read.
  if (reporting.plan_table != nullptr) {
    if (const auto* strategy = std::get_if<placement::DeviceMapStrategy>(&*options.device_map)) {
      const placement::DevicePlan plan =
          placement::plan_for_dispatch(*out.empty.model, *strategy, options);
      if (reports) *reporting.plan_table << placement::explain_table(plan) << "\n";
      options.device_map = plan.device_map;
    } else if (reports) {
      *reporting.plan_table << "device map: "
                            << placement::device_map_str(
                                   std::get<placement::DeviceMap>(*options.device_map))
                            << "\n";
    }
  }

  const auto start = std::chrono::steady_clock::now();
  out.loaded = placement::load_checkpoint_and_dispatch(*out.empty.model, model_dir, options);
  out.load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (bar) bar->finish();
  apply_offload_policy(out.loaded, policy, args.split_fraction);
  out.input_device = input_device_of(*out.empty.model);
  const std::int64_t cache_bytes = expert_cache_bytes(args, out);
  if (cache_bytes > 0) {
    out.expert_cache = models::attach_expert_cache(*out.empty.model, cache_bytes, cache_policy);
  }
  return out;
}

std::int64_t expert_cache_bytes(const PlacementArgs& args, const LoadedModel& loaded) {
  const std::string& text = args.expert_cache;
  if (text == "off" || text == "0") return 0;
  if (text != "auto") {
    const std::int64_t bytes = placement::parse_memory_size(text);
    STRATA_CHECK_ARG(bytes >= 0, "--expert-cache {}: must not be negative", text);
    return bytes;
  }
  // auto: only where routed experts are offloaded behind a GPU.
  const auto& dispatch = loaded.loaded.dispatch;
  if (!dispatch || !dispatch->scheduler || !dispatch->main_device.is_cuda()) return 0;
  bool offloaded_experts = false;
  for (const auto& [name, device] : dispatch->device_map) {
    const bool experts = name.ends_with(".experts") || name.find(".experts.") != std::string::npos;
    if (experts && (device.is_cpu() || device.is_disk())) offloaded_experts = true;
  }
  if (!offloaded_experts) return 0;
  const Device gpu = dispatch->main_device;
  const std::string key = fmt::format("cuda:{}", gpu.index());
  std::int64_t used = 0;
  for (const auto& [destination, bytes] : loaded.loaded.load.summary.bytes_per_destination) {
    if (destination == key) used += static_cast<std::int64_t>(bytes);
  }
  // The user's budget holds the weights; without one, the memory free now (after loading) does
  // not.
  const std::optional<placement::MaxMemory> given =
      args.max_memory ? std::optional(parse_max_memory(*args.max_memory)) : std::nullopt;
  for (const auto& [device, bytes] : given ? *given : placement::get_max_memory()) {
    if (device.is_gpu() && *device.device() == gpu) {
      return given ? placement::spare_for_expert_cache(bytes, used)
                   : placement::spare_for_expert_cache(bytes + used, used);
    }
  }
  return 0;
}

std::string expert_summary(models::CausalLM& model, const placement::ExpertCache* cache) {
  const models::ExpertExecutionStats s = models::expert_execution_stats(model);
  if (s.block_steps == 0) return "";  // no mixture-of-experts block ran
  std::string text = fmt::format(
      "experts: {} cpu, {} streamed, {} cached, {} resident, {:.1f} distinct per block", s.cpu,
      s.streamed, s.cached, s.resident,
      s.blocks > 0 ? static_cast<double>(s.distinct_experts) / static_cast<double>(s.blocks) : 0.0);
  if (cache != nullptr) {
    const placement::ExpertCacheStats c = cache->stats();
    text +=
        fmt::format(" (cache hit rate {:.1f}%, {} of {})", 100.0 * c.hit_rate(),
                    placement::format_bytes(c.bytes), placement::format_bytes(c.capacity_bytes));
  }
  // Where the blocks' time went (host clock): routing includes waiting for the GPU's attention.
  text += fmt::format(
      "; blocks: routing {:.1f} ms, experts {:.1f} ms (cpu products {:.1f} ms, device experts' "
      "calls {:.1f} ms) over {} block steps",
      static_cast<double>(s.route_ns) / 1e6, static_cast<double>(s.experts_ns) / 1e6,
      static_cast<double>(s.cpu_ns) / 1e6, static_cast<double>(s.device_ns) / 1e6, s.block_steps);
  return text;
}

}  // namespace strata::cli

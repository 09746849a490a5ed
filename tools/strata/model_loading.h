#pragma once
// What every command that runs a model shares: the placement options (--device-map,
// --max-memory, --offload-folder, --dtype), checking them before any weight is read, loading the
// checkpoint onto the plan with a progress display, and where inputs must go.

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>

#include "cli_options.h"
#include "strata/placement/expert_cache.h"
#include "strata/placement/load_and_dispatch.h"

namespace strata::cli {

struct PlacementArgs {
  std::string device_map = "auto";  // a strategy, or a JSON file {"module": device}
  std::optional<std::string> max_memory;
  std::optional<std::string> offload_folder;
  std::optional<std::string> dtype;  // unset: the checkpoint's torch_dtype, else float32
  // auto (the cost model chooses per unit and step), stream, cpu or split: where offloaded units
  // compute (strata/placement/execution_policy.h).
  std::string offload_policy = "auto";
  // The cpu's share of a split linear's rows, in (0, 1); 0: each unit's from the cost model.
  double split_fraction = 0;
  // What an offloaded unit is: "module" (every module holding weights: each linear and norm of an
  // offloaded layer is its own unit), "layer" (each decoder layer, the model's no-split class,
  // is one unit: one activation round trip per layer under the cpu policy, attention and its KV
  // cache on the cpu with it) or "auto" (offload_unit_for).
  std::string offload_unit = "auto";
  // Mixture of experts with a strategy: --experts auto|cpu, --n-cpu-moe N.
  std::optional<std::string> experts;
  std::optional<std::int64_t> n_cpu_moe;
  // Mixture of experts: the GPU expert cache's budget (auto: the GPU budget the weights leave,
  // less a margin; off or 0: none; else a size such as 8GiB) and its policy (lru or lfu).
  std::string expert_cache = "auto";
  std::string expert_cache_policy = "lru";
  // Ranks the model is split over (tensor parallelism): one process each, started by
  // `mpirun -np N`; every rank plans and loads its shard under the budgets above.
  int tensor_parallel = 1;
  // Set by commands, not an option: bytes held back on every GPU for the runtime (strata serve's
  // KV cache pool) when the map comes from a strategy.
  std::int64_t reserve_per_gpu = 0;
};

void add_placement_options(CLI::App* cmd, PlacementArgs& args);

// The unit --offload-unit names for a model: "module" or "layer" as given; "auto" is "layer"
// (faster under every policy on the 7B benchmark: one round trip per layer under cpu, whole
// layers per prefetch slot when streamed) except for a model with routed experts, which keeps
// "module" (its experts stay units of their own: only the selected ones compute on the cpu or
// stream, moe-execution.md). InvalidArgument for anything else.
std::string offload_unit_for(const std::string& option, const models::TransformerConfig& config);

// The split --tensor-parallel asks for, with its communicator: local for 1, else the MPI job
// (NCCL when this build has it and a GPU is present; each rank is first pinned to the GPU of its
// local index through CUDA_VISIBLE_DEVICES unless that is set). Throws InvalidArgument when the
// job's size differs from N (naming the mpirun command).
models::TensorParallel tensor_parallel_for(const PlacementArgs& args);

// True on the rank that prints results (rank 0, or the only one).
bool prints_results(const models::CausalLM& model);

struct LoadReporting {
  std::ostream* progress = nullptr;    // progress bar / lines while loading (none when null)
  bool progress_is_terminal = false;   // redraw one line in place instead of printing lines
  std::ostream* plan_table = nullptr;  // the planner's table before loading (none when null)
};

struct LoadedModel {
  EmptyModel empty;  // the model, now loaded and dispatched
  placement::LoadAndDispatchResult loaded;
  double load_seconds = 0.0;
  Device input_device = Device::cpu();  // where input ids go: the input embedding's device
  // The routed experts' cache (--expert-cache), null when none (nothing offloaded, no room, off).
  std::shared_ptr<placement::ExpertCache> expert_cache;
};

// The --expert-cache budget for a loaded model: 0 for off, the size given, or for auto the GPU
// budget of the execution device (--max-memory, else measured) less its weights and a margin
// (max(1 GiB, 5%) for activations and the runtime), when routed experts are offloaded.
std::int64_t expert_cache_bytes(const PlacementArgs& args, const LoadedModel& loaded);

// "experts: 12 cpu, 3 streamed, 40 cached (cache hit rate 72.7%, 1.20 GiB of 8.00 GiB)", or ""
// when no routed expert is offloaded.
std::string expert_summary(models::CausalLM& model, const placement::ExpertCache* cache);

// Parses and checks every option, builds the model on meta, plans, prints the plan table when
// asked, loads the checkpoint straight onto the plan and dispatches it.
LoadedModel load_model(const std::filesystem::path& model_dir, const PlacementArgs& args,
                       const LoadReporting& reporting = {});
// The same for a model the caller already built on meta from `model_dir` with `args.dtype` (to
// check its config against other input first without building it twice).
LoadedModel load_model(EmptyModel empty, const std::filesystem::path& model_dir,
                       const PlacementArgs& args, const LoadReporting& reporting = {});

// Applies --offload-policy to a dispatched model's scheduler (nothing to do without one). auto on
// a GPU asks the cost model, from this machine's constants (cached; measured on first use); on a
// cpu execution device every unit already computes where its weights are, so it streams (binds
// them in place).
// split_fraction > 0 replaces the cost model's fraction of every unit (--split-fraction).
void apply_offload_policy(const placement::LoadAndDispatchResult& loaded,
                          placement::OffloadPolicy policy, double split_fraction = 0);

// Where a model's input ids must be placed: its input embedding's device (the cpu while the
// weight is still on meta, when hooks move inputs themselves).
Device input_device_of(const models::CausalLM& model);

// The built-in model (stories260K): beside an installed command,
// `<executable's folder>/../share/strata/models/stories260K`, else the source tree's
// `models/stories260K`. Throws InvalidArgument when neither exists.
std::filesystem::path builtin_model_dir();

// "cuda:0 3.00 GiB, cpu 9.48 GiB, disk 1.02 GiB" from a load summary.
std::string weights_per_device(const io::LoadSummary& summary);

}  // namespace strata::cli

#pragma once
// `strata plan MODEL_DIR`: where every module of a checkpoint would go, without loading a weight.

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "strata/placement/auto_device_map.h"

namespace strata::cli {

struct PlanArgs {
  std::string model_dir;
  std::optional<std::string> max_memory;  // "cuda:0=10GiB,cpu=30GiB"; unset: measured
  std::optional<std::string> dtype;       // unset: the checkpoint's torch_dtype, else float32
  std::string strategy = "auto";
  std::optional<std::string> no_split;  // "A,B", "" for none; unset: the model's decoder block
  std::optional<std::string> output;    // write the device map here as JSON (strata run reads it)
  // strata serve's KV cache pool (--max-sequences x --ctx-size tokens), held back on every GPU
  // when either is given (the other takes serve's default).
  std::optional<std::int64_t> max_sequences;
  std::optional<std::int64_t> ctx_size;
  // Sequences decoded together (--batch; the same as --max-sequences, which serve calls it).
  // With --ctx-size, their KV cache and activations are held back on every GPU (on the cpu
  // without GPUs) and a budget that cannot hold them is an error.
  std::optional<std::int64_t> batch;
  // Predictions (plan_prediction.h): tokens of the prompt, machine constants file (unset: this
  // machine's, cached), or none at all.
  std::int64_t prefill_tokens = 512;
  std::int64_t decode_context = 0;  // tokens in the cache at the decode step predicted
  std::optional<std::string> machine;
  bool predict = true;
  bool json = false;  // print the plan as JSON (schema "strata-plan/1")
  // Mixture of experts: --experts auto|cpu, --n-cpu-moe N (parse_expert_placement).
  std::optional<std::string> experts;
  std::optional<std::int64_t> n_cpu_moe;
  // The GPU expert cache the prediction assumes (--expert-cache: auto = the first GPU's budget
  // left by its weights, off, or a size), as the loading commands size it.
  std::string expert_cache = "auto";
  // Plan one rank of a model split over this many tensor-parallel ranks (rank 0, whose
  // vocabulary shard is the largest): the memory each rank needs under the budgets above.
  int tensor_parallel = 1;
};

CLI::App* add_plan_command(CLI::App& app, PlanArgs& args);

// The plan behind what run_plan prints: the map, and in max_memory the budgets planned against
// (after balancing for every strategy but sequential).
placement::DevicePlan plan_checkpoint(const PlanArgs& args);

struct DeviceTotal {
  placement::MapDevice device;
  std::int64_t bytes = 0;
};
// Bytes of weights per device under the planned map, in planning order (what run_plan prints).
std::vector<DeviceTotal> device_totals(const PlanArgs& args);

// Prints the explain table, the bytes per device, the model size, the KV cache and activation
// reserve, and the predictions (or all of it as JSON); with `output`, writes the device map there
// too. Returns the exit code.
int run_plan(const PlanArgs& args, std::ostream& out);

}  // namespace strata::cli

#include "run_command.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <numeric>
#include <ostream>

#include "cli_options.h"
#include "strata/core/error.h"
#include "strata/io/safetensors.h"
#include "strata/placement/load_and_dispatch.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A strategy name, else a JSON file; anything else names both forms.
std::variant<placement::DeviceMapStrategy, placement::DeviceMap> parse_device_map_arg(
    const std::string& text) {
  for (const char* name : {"auto", "balanced", "balanced_low_0", "sequential"}) {
    if (text == name) return placement::parse_device_map_strategy(text);
  }
  STRATA_CHECK_ARG(std::filesystem::is_regular_file(text),
                   "--device-map {}: not a strategy (auto, balanced, "
                   "balanced_low_0, sequential) "
                   "nor an existing JSON file",
                   text);
  return read_device_map_file(text);
}

void dump_logits(models::CausalLM& model, const Tensor& prompt, const std::string& path) {
  const Tensor logits = model.run(prompt).logits;  // [1, sequence, vocab]
  const Tensor rows = logits.to(Device::cpu(), DType::Float32).select(0, 0).contiguous();
  io::save_safetensors(path, {{"logits", rows}});
}

}  // namespace

CLI::App* add_run_command(CLI::App& app, RunArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "run", "load a checkpoint onto a device map and continue a prompt greedily");
  cmd->add_option("model_dir", args.model_dir, "folder with config.json and *.safetensors")
      ->required();
  cmd->add_option("--token-ids", args.token_ids, "prompt token ids, e.g. 1,2,3")->required();
  cmd->add_option("--max-new-tokens", args.max_new_tokens, "tokens to generate")
      ->capture_default_str();
  cmd->add_option("--device-map", args.device_map,
                  "auto, balanced, balanced_low_0, sequential, or a JSON file")
      ->capture_default_str();
  cmd->add_option("--max-memory", args.max_memory,
                  "budgets per device, e.g. cuda:0=10GiB,cpu=30GiB (default: measured)");
  cmd->add_option("--offload-folder", args.offload_folder, "where disk-offloaded weights go");
  cmd->add_option("--dtype", args.dtype, "f32, bf16 or f16 (default: the checkpoint's)");
  cmd->add_option("--dump-logits", args.dump_logits,
                  "write the prompt's float32 logits [sequence, vocab] to this "
                  "safetensors file");
  return cmd;
}

int run_run(const RunArgs& args, std::ostream& out, std::ostream& err) {
  // Every option is checked before the first weight is read.
  const std::vector<std::int64_t> ids = parse_token_ids(args.token_ids);
  STRATA_CHECK_ARG(args.max_new_tokens >= 1, "--max-new-tokens {}: must be at least 1",
                   args.max_new_tokens);
  placement::LoadAndDispatchOptions options;
  options.device_map = parse_device_map_arg(args.device_map);
  if (args.max_memory) options.max_memory = parse_max_memory(*args.max_memory);
  if (args.offload_folder) options.offload_folder = *args.offload_folder;

  EmptyModel empty = build_empty_model(args.model_dir, args.dtype);
  const DType dtype = empty.dtype;
  STRATA_CHECK_ARG(dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16,
                   "--dtype {}: run supports f32, bf16 and f16", dtype);
  for (const std::int64_t id : ids) {
    STRATA_CHECK_ARG(id < empty.config.vocab_size,
                     "--token-ids: {} is out of range (the vocabulary has {} tokens)", id,
                     empty.config.vocab_size);
  }
  options.dtype = dtype;
  options.no_split_module_classes = empty.model->no_split_module_classes();

  const auto load_start = Clock::now();
  const auto loaded =
      placement::load_checkpoint_and_dispatch(*empty.model, args.model_dir, options);
  const double load_seconds = seconds_since(load_start);

  models::CausalLM& model = *empty.model;
  const Tensor prompt =
      Tensor::from_vector<std::int64_t>(ids, {1, static_cast<std::int64_t>(ids.size())});
  if (args.dump_logits) dump_logits(model, prompt, *args.dump_logits);

  models::GenerationOptions generation;
  generation.max_new_tokens = args.max_new_tokens;
  const auto result = models::generate_greedy(model, prompt, generation);
  out << fmt::format("{}\n", fmt::join(result.tokens.to_vector<std::int64_t>(), ","));

  const auto& steps = result.step_seconds;
  const double per_token =
      steps.empty() ? 0.0 : std::accumulate(steps.begin(), steps.end(), 0.0) / steps.size();
  err << fmt::format("load {:.1f} ms ({}), {}\n", load_seconds * 1e3, loaded.load.summary.str(),
                     loaded.dispatch ? placement::device_map_str(loaded.dispatch->device_map)
                                     : std::string("not dispatched"));
  err << fmt::format("prefill {:.2f} ms ({} tokens), per token {:.2f} ms ({} steps), {}\n",
                     result.prefill_seconds * 1e3, ids.size(), per_token * 1e3, steps.size(),
                     dtype);
  return 0;
}

}  // namespace strata::cli

#include "run_command.h"

#include <fmt/format.h>

#include <filesystem>
#include <numeric>
#include <ostream>

#include "cli_options.h"
#include "strata/core/error.h"
#include "strata/io/safetensors.h"
#include "strata/placement/load_and_dispatch.h"

namespace strata::cli {
namespace {

void dump_logits(models::CausalLM& model, const Tensor& prompt, const std::string& path) {
  const Tensor logits = model.run(prompt.to(input_device_of(model))).logits;  // [1, seq, vocab]
  if (!prints_results(model)) return;  // every rank runs the forward; rank 0 writes
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
  add_placement_options(cmd, args);
  cmd->add_option("--dump-logits", args.dump_logits,
                  "write the prompt's float32 logits [sequence, vocab] to this "
                  "safetensors file");
  return cmd;
}

int run_run(const RunArgs& args, std::ostream& out, std::ostream& err) {
  const std::vector<std::int64_t> ids = parse_token_ids(args.token_ids);
  STRATA_CHECK_ARG(args.max_new_tokens >= 1, "--max-new-tokens {}: must be at least 1",
                   args.max_new_tokens);
  // The ids are checked against the config before any weight is read.
  EmptyModel empty = build_empty_model(args.model_dir, args.dtype, tensor_parallel_for(args));
  for (const std::int64_t id : ids) {
    STRATA_CHECK_ARG(id < empty.config.vocab_size,
                     "--token-ids: {} is out of range (the vocabulary has {} tokens)", id,
                     empty.config.vocab_size);
  }
  LoadedModel loaded_model = load_model(std::move(empty), args.model_dir, args);
  const auto& loaded = loaded_model.loaded;
  const double load_seconds = loaded_model.load_seconds;
  const DType dtype = loaded_model.empty.dtype;
  models::CausalLM& model = *loaded_model.empty.model;
  const Tensor prompt =
      Tensor::from_vector<std::int64_t>(ids, {1, static_cast<std::int64_t>(ids.size())});
  if (args.dump_logits) dump_logits(model, prompt, *args.dump_logits);

  models::GenerationOptions generation;
  generation.max_new_tokens = args.max_new_tokens;
  const auto result = models::generate_greedy(model, prompt, generation);
  if (!prints_results(model)) return 0;  // tensor parallelism: rank 0 reports
  out << fmt::format("{}\n", fmt::join(result.tokens.to_vector<std::int64_t>(), ","));

  const auto& steps = result.step_seconds;
  const double per_token =
      steps.empty() ? 0.0 : std::accumulate(steps.begin(), steps.end(), 0.0) / steps.size();
  err << fmt::format("load {:.1f} ms ({}), {}\n", load_seconds * 1e3, loaded.load.summary.str(),
                     loaded.dispatch ? placement::device_map_str(loaded.dispatch->device_map)
                                     : std::string("not dispatched"));
  err << fmt::format(
      "prefill {:.2f} ms ({} tokens), per token {:.2f} ms ({} steps), {}{}\n",
      result.prefill_seconds * 1e3, ids.size(), per_token * 1e3, steps.size(), dtype,
      model.tensor_parallel().active()
          ? fmt::format(", tensor parallel over {} ranks", model.tensor_parallel().size)
          : std::string());
  return 0;
}

}  // namespace strata::cli

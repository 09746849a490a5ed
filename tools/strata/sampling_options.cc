#include "sampling_options.h"

#include "strata/engine/generate.h"

namespace strata::cli {

void add_sampling_options(CLI::App* cmd, SamplingArgs& args) {
  cmd->add_option("--temperature", args.temperature,
                  "0 is greedy (unset sampling options: generation_config.json's)");
  cmd->add_option("--top-k", args.top_k, "keep the k most likely tokens (0: off)");
  cmd->add_option("--top-p", args.top_p, "nucleus sampling: keep the top tokens up to p");
  cmd->add_option("--min-p", args.min_p, "keep tokens at least p times as likely as the top one");
  cmd->add_option("--repetition-penalty", args.repetition_penalty,
                  "divide the logits of tokens already seen (transformers; 1: off)");
  cmd->add_option("--presence-penalty", args.presence_penalty, "OpenAI's presence penalty");
  cmd->add_option("--frequency-penalty", args.frequency_penalty, "OpenAI's frequency penalty");
  cmd->add_option("--seed", args.seed, "makes sampled runs reproducible");
}

engine::SamplingParams sampling_params(const SamplingArgs& args,
                                       const text::GenerationConfig& config) {
  engine::SamplingParams params = engine::sampling_params_from(config);
  if (args.temperature || args.top_k || args.top_p || args.min_p) params.do_sample = true;
  if (args.temperature) params.temperature = *args.temperature;
  if (args.top_k) params.top_k = *args.top_k;
  if (args.top_p) params.top_p = *args.top_p;
  if (args.min_p) params.min_p = *args.min_p;
  if (args.repetition_penalty) params.repetition_penalty = *args.repetition_penalty;
  if (args.presence_penalty) params.presence_penalty = *args.presence_penalty;
  if (args.frequency_penalty) params.frequency_penalty = *args.frequency_penalty;
  params.seed = args.seed;
  params.validate();
  return params;
}

}  // namespace strata::cli

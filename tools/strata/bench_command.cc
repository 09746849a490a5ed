#include "bench_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <ostream>

#include "cli_options.h"
#include "load_bench.h"
#include "strata/core/error.h"
#include "strata/models/causal_lm.h"
#include "strata/placement/memory.h"

namespace strata::cli {
namespace {

struct TestResult {
  std::string name;  // pp512, tg128
  std::int64_t batch = 0;
  std::int64_t tokens = 0;  // tokens per row the test processes or generates
  double seconds = 0.0;     // median over the repetitions
  double min_seconds = 0.0;
  double max_seconds = 0.0;

  double tokens_per_second() const { return static_cast<double>(batch * tokens) / seconds; }
};

std::vector<std::int64_t> parse_counts(const std::string& text, std::string_view option,
                                       std::int64_t at_least) {
  std::vector<std::int64_t> counts;
  for (const std::string& item : split_list(text, option)) {
    std::int64_t value = 0;
    try {
      std::size_t used = 0;
      value = std::stoll(item, &used);
      STRATA_CHECK_ARG(used == item.size(), "{} {}: '{}' is not a whole number", option, text,
                       item);
    } catch (const std::logic_error&) {
      throw InvalidArgument(fmt::format("{} {}: '{}' is not a whole number", option, text, item));
    }
    if (value == 0 && at_least == 0) continue;
    STRATA_CHECK_ARG(value >= std::max<std::int64_t>(at_least, 1), "{} {}: {} must be at least {}",
                     option, text, value, std::max<std::int64_t>(at_least, 1));
    counts.push_back(value);
  }
  return counts;
}

// Token ids that do not depend on the model's output (a fixed pseudo-random sequence), so every
// repetition does the same work.
Tensor random_ids(std::int64_t batch, std::int64_t length, std::int64_t vocab, std::uint64_t seed) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * length));
  std::uint64_t state = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& id : ids) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    id = static_cast<std::int64_t>((state >> 33) % static_cast<std::uint64_t>(vocab));
  }
  return Tensor::from_vector<std::int64_t>(ids, {batch, length});
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// One test, repeated: `measure` returns the seconds of one run.
template <typename Measure>
TestResult repeat(std::string name, std::int64_t batch, std::int64_t tokens, int repetitions,
                  Measure measure) {
  measure();  // warm-up: first-use allocations, kernels' lazy set-up, the page cache
  std::vector<double> seconds;
  for (int i = 0; i < repetitions; ++i) seconds.push_back(measure());
  return {std::move(name),
          batch,
          tokens,
          median(seconds),
          *std::min_element(seconds.begin(), seconds.end()),
          *std::max_element(seconds.begin(), seconds.end())};
}

std::string json_report(const std::string& model_dir, const LoadedModel& loaded, DType dtype,
                        std::uint64_t weight_bytes, const std::vector<TestResult>& results) {
  nlohmann::ordered_json report;
  report["model"] = model_dir;
  report["dtype"] = std::string(dtype_name(dtype));
  report["weights"] = weights_per_device(loaded.loaded.load.summary);
  report["weight_bytes"] = weight_bytes;
  report["load_seconds"] = loaded.load_seconds;
  report["tests"] = nlohmann::ordered_json::array();
  for (const TestResult& r : results) {
    nlohmann::ordered_json test;
    test["test"] = r.name;
    test["batch"] = r.batch;
    test["tokens"] = r.tokens;
    test["seconds"] = r.seconds;
    test["min_seconds"] = r.min_seconds;
    test["max_seconds"] = r.max_seconds;
    test["tokens_per_second"] = r.tokens_per_second();
    if (r.name.starts_with("tg")) {
      const double step = r.seconds / static_cast<double>(r.tokens);
      test["ms_per_step"] = step * 1e3;
      test["weight_read_gb_per_s"] = static_cast<double>(weight_bytes) / step / 1e9;
    }
    report["tests"].push_back(std::move(test));
  }
  return report.dump(2);
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "bench", "measure prompt processing and generation rates of a checkpoint on a placement");
  cmd->add_option("model_dir", args.model_dir, "folder with config.json and *.safetensors")
      ->required();
  cmd->add_option("-p,--prompt-tokens", args.prompt_tokens,
                  "prompt lengths of the prompt-processing tests (pp), e.g. 512,2048; 0: none")
      ->capture_default_str();
  cmd->add_option("-n,--decode-tokens", args.decode_tokens,
                  "tokens generated one at a time in the generation test (tg); 0: none")
      ->capture_default_str();
  cmd->add_option("-b,--batch", args.batch, "batch sizes, e.g. 1,4,16,64")->capture_default_str();
  cmd->add_option("-r,--repetitions", args.repetitions,
                  "timed runs of each test after one warm-up; the median is reported")
      ->capture_default_str();
  cmd->add_flag("--json", args.json, "print the results as JSON");
  cmd->add_flag("--load", args.load,
                "measure loading the checkpoint onto the placement against the pinned PCIe and "
                "page-cache read rates measured in the same run");
  cmd->add_flag("--cold", args.cold,
                "with --load: also load from the disk (the shards' pages dropped from the page "
                "cache first) against the disk's O_DIRECT read rate");
  add_placement_options(cmd, args);
  return cmd;
}

int run_bench(const BenchArgs& args, std::ostream& out, std::ostream& err) {
  STRATA_CHECK_ARG(!args.cold || args.load, "--cold needs --load");
  if (args.load) return run_load_bench(args.model_dir, args, args.cold, args.json, out, err);
  const std::vector<std::int64_t> prompts = parse_counts(args.prompt_tokens, "--prompt-tokens", 0);
  const std::vector<std::int64_t> batches = parse_counts(args.batch, "--batch", 1);
  STRATA_CHECK_ARG(args.decode_tokens >= 0, "--decode-tokens {}: must not be negative",
                   args.decode_tokens);
  STRATA_CHECK_ARG(args.repetitions >= 1, "--repetitions {}: must be at least 1", args.repetitions);
  STRATA_CHECK_ARG(!prompts.empty() || args.decode_tokens > 0,
                   "nothing to measure: --prompt-tokens and --decode-tokens are both 0");
  EmptyModel empty = build_empty_model(args.model_dir, args.dtype);
  const std::int64_t longest =
      std::max(prompts.empty() ? 0 : *std::max_element(prompts.begin(), prompts.end()),
               args.decode_tokens + 1);
  STRATA_CHECK_ARG(
      longest <= empty.config.max_position_embeddings || empty.config.max_position_embeddings <= 0,
      "a test needs {} positions but the model has max_position_embeddings {}; "
      "lower --prompt-tokens or --decode-tokens",
      longest, empty.config.max_position_embeddings);
  const std::int64_t vocab = empty.config.vocab_size;
  LoadedModel loaded = load_model(std::move(empty), args.model_dir, args);
  models::CausalLM& model = *loaded.empty.model;
  const std::uint64_t weight_bytes = loaded.loaded.load.summary.total_bytes();
  err << fmt::format("loaded in {:.2f} s: {}\n", loaded.load_seconds,
                     weights_per_device(loaded.loaded.load.summary));

  models::GenerationOptions options;
  options.input_device = loaded.input_device;
  std::vector<TestResult> results;
  for (const std::int64_t batch : batches) {
    for (const std::int64_t length : prompts) {
      // Prompt processing: one forward over [batch, length] (the prefill of generate_greedy,
      // which keeps only the last position's logits).
      options.max_new_tokens = 1;
      const Tensor ids = random_ids(batch, length, vocab, static_cast<std::uint64_t>(length));
      results.push_back(repeat(fmt::format("pp{}", length), batch, length, args.repetitions, [&] {
        return models::generate_greedy(model, ids, options).prefill_seconds;
      }));
      err << fmt::format("  pp{} batch {}: {:.1f} tokens/s\n", length, batch,
                         results.back().tokens_per_second());
    }
    if (args.decode_tokens > 0) {
      // Token generation: one token of context, then decode_tokens single-token steps, each
      // waiting for its argmax as generation does.
      options.max_new_tokens = args.decode_tokens + 1;
      const Tensor ids = random_ids(batch, 1, vocab, 1);
      results.push_back(repeat(fmt::format("tg{}", args.decode_tokens), batch, args.decode_tokens,
                               args.repetitions, [&] {
                                 const auto steps =
                                     models::generate_greedy(model, ids, options).step_seconds;
                                 return std::accumulate(steps.begin(), steps.end(), 0.0);
                               }));
      err << fmt::format("  tg{} batch {}: {:.1f} tokens/s\n", args.decode_tokens, batch,
                         results.back().tokens_per_second());
    }
  }

  if (args.json) {
    out << json_report(args.model_dir, loaded, loaded.empty.dtype, weight_bytes, results) << "\n";
    return 0;
  }
  out << fmt::format("model {} ({}), weights {}\n", args.model_dir, dtype_name(loaded.empty.dtype),
                     weights_per_device(loaded.loaded.load.summary));
  out << fmt::format("| {:>7} | {:>5} | {:>10} | {:>12} | {:>10} | {:>14} |\n", "test", "batch",
                     "seconds", "tokens/s", "ms/step", "weights GB/s");
  out << "|---------|-------|------------|--------------|------------|----------------|\n";
  for (const TestResult& r : results) {
    const bool generation = r.name.starts_with("tg");
    const double step = r.seconds / static_cast<double>(r.tokens);
    out << fmt::format(
        "| {:>7} | {:>5} | {:>10.4f} | {:>12.1f} | {:>10} | {:>14} |\n", r.name, r.batch, r.seconds,
        r.tokens_per_second(), generation ? fmt::format("{:.3f}", step * 1e3) : std::string("-"),
        generation ? fmt::format("{:.1f}", static_cast<double>(weight_bytes) / step / 1e9)
                   : std::string("-"));
  }
  return 0;
}

}  // namespace strata::cli

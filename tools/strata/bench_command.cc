#include "bench_command.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <ostream>

#include "cli_options.h"
#include "device_limits.h"
#include "load_bench.h"
#include "model_loading.h"
#include "strata/core/error.h"
#include "strata/models/causal_lm.h"
#include "strata/models/moe.h"
#include "strata/placement/memory.h"
#include "strata/placement/prefetch.h"

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
  // Routed experts offloaded (moe-execution.md): where they computed during the test (warm-up
  // included) and the expert cache's counters over the same runs.
  std::optional<models::ExpertExecutionStats> experts;
  std::optional<placement::ExpertCacheStats> expert_cache;
  // Offloaded units (hybrid-execution.md): where they computed and how their copies were issued
  // during the test (warm-up included), when the model has offloaded units.
  std::optional<placement::PrefetchStats> prefetch;
  std::int64_t minor_faults = 0;  // during the timed runs (minor_faults())
};

// `after` minus `before`, counter by counter (max_in_flight: the later value).
placement::PrefetchStats prefetch_delta(const placement::PrefetchStats& after,
                                        const placement::PrefetchStats& before) {
  placement::PrefetchStats d = after;
  d.onloads -= before.onloads;
  d.prefetched -= before.prefetched;
  d.issued -= before.issued;
  d.bytes_copied -= before.bytes_copied;
  d.bytes_read -= before.bytes_read;
  d.staged_chunks -= before.staged_chunks;
  d.casts -= before.casts;
  d.cpu_computes -= before.cpu_computes;
  d.evicted_for_cpu -= before.evicted_for_cpu;
  d.split_computes -= before.split_computes;
  d.split_linears -= before.split_linears;
  d.split_inputs_copied -= before.split_inputs_copied;
  d.cpu_inputs_reused -= before.cpu_inputs_reused;
  return d;
}

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

// Page faults this process took without reading the disk (a mapped weight touched for the first
// time, or again after the kernel unmapped it): the timed runs of a test should take none.
std::int64_t minor_faults() {
  rusage usage{};
  return ::getrusage(RUSAGE_SELF, &usage) == 0 ? static_cast<std::int64_t>(usage.ru_minflt) : 0;
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
  const std::int64_t faults_before = minor_faults();
  std::vector<double> seconds;
  for (int i = 0; i < repetitions; ++i) seconds.push_back(measure());
  TestResult result{std::move(name),
                    batch,
                    tokens,
                    median(seconds),
                    *std::min_element(seconds.begin(), seconds.end()),
                    *std::max_element(seconds.begin(), seconds.end())};
  result.minor_faults = minor_faults() - faults_before;
  return result;
}

// The routed experts of a mixture of experts: a generation step reads only the experts its tokens
// selected, and each token's products run top_k of a block's experts.
struct RoutedExperts {
  double bytes = 0;             // every routed expert's weights
  double params = 0;            // their elements
  double params_per_token = 0;  // sum over blocks of the block's params x top_k / num_experts
  std::int64_t experts = 0;     // summed over blocks
};

RoutedExperts routed_experts(models::CausalLM& model) {
  RoutedExperts r;
  for (models::MoeBlock* block : models::moe_blocks(model)) {
    double bytes = 0, params = 0;
    for (const auto& [name, t] : block->get_submodule("experts").state_dict()) {
      bytes += static_cast<double>(t.nbytes());
      params += static_cast<double>(t.numel());
    }
    r.bytes += bytes;
    r.params += params;
    r.params_per_token +=
        params * static_cast<double>(block->top_k()) / static_cast<double>(block->num_experts());
    r.experts += block->num_experts();
  }
  return r;
}

// What a run's rates are compared with.
struct BenchContext {
  std::uint64_t weight_bytes = 0;  // every weight
  double lookup_bytes = 0;         // of weight_bytes, the input embedding's table when a step
                                   // reads only its tokens' rows (not tied to the head)
  RoutedExperts routed;            // of weight_bytes, the routed experts (none: dense)
  double linear_params = 0;        // weights of the decoder's matrix products per token (no
                                   // embedding, no head: prefill computes the head for one
                                   // position; routed experts: the top_k a token runs)
  bool all_on_gpu = false;         // the HBM limit applies to the weights' reads
  bool all_on_cpu = false;         // the host's read limit does
  std::optional<DeviceLimits> limits;
  std::string decode_input = "greedy";  // --decode-input
};

// A test's rates and their shares of the limits.
struct Derived {
  std::optional<double> ms_per_step, weight_gb_s, read_share;  // tg: of HBM or host read
  std::optional<double> step_bytes;                            // tg: weights read a step
  std::optional<double> linear_tflops, gemm_share;             // pp
};

// Weight bytes a generation step reads: every weight but the input embedding's table (a row a
// token, unless the head reads it whole) and the routed experts, and of those the ones the
// test's steps ran (counted by the blocks: warm-up included, every block step one forward of
// each block).
double step_weight_bytes(const TestResult& r, const BenchContext& c) {
  const double total = static_cast<double>(c.weight_bytes) - c.lookup_bytes;
  if (c.routed.experts == 0 || !r.experts || r.experts->block_steps == 0 ||
      r.experts->blocks == 0) {
    return total;
  }
  const models::ExpertExecutionStats& e = *r.experts;
  const double steps = static_cast<double>(e.block_steps) / static_cast<double>(e.blocks);
  const auto ran = static_cast<double>(e.resident + e.cpu + e.streamed + e.cached);
  return total - c.routed.bytes +
         ran / steps * c.routed.bytes / static_cast<double>(c.routed.experts);
}

Derived derive(const TestResult& r, const BenchContext& c) {
  Derived d;
  if (r.name.starts_with("tg")) {
    const double step = r.seconds / static_cast<double>(r.tokens);
    d.ms_per_step = step * 1e3;
    d.step_bytes = step_weight_bytes(r, c);
    d.weight_gb_s = *d.step_bytes / step / 1e9;
    if (c.all_on_gpu && c.limits && c.limits->hbm_gb_s) {
      d.read_share = *d.weight_gb_s / *c.limits->hbm_gb_s;
    } else if (c.all_on_cpu && c.limits) {
      d.read_share = *d.weight_gb_s / c.limits->host_read_gb_s;
    }
  } else {
    d.linear_tflops =
        2.0 * c.linear_params * static_cast<double>(r.batch * r.tokens) / r.seconds / 1e12;
    if (c.all_on_gpu && c.limits && c.limits->gemm_tflops) {
      d.gemm_share = *d.linear_tflops / *c.limits->gemm_tflops;
    }
  }
  return d;
}

nlohmann::ordered_json optional_json(const std::optional<double>& value) {
  return value ? nlohmann::ordered_json(*value) : nlohmann::ordered_json(nullptr);
}

std::string json_report(const std::string& model_dir, const LoadedModel& loaded,
                        const BenchContext& context, const std::vector<TestResult>& results) {
  nlohmann::ordered_json report;
  report["model"] = model_dir;
  report["dtype"] = std::string(dtype_name(loaded.empty.dtype));
  report["weights"] = weights_per_device(loaded.loaded.load.summary);
  report["weight_bytes"] = context.weight_bytes;
  report["lookup_bytes"] = context.lookup_bytes;
  report["routed_expert_bytes"] = context.routed.bytes;
  report["load_seconds"] = loaded.load_seconds;
  report["decode_input"] = context.decode_input;
  if (context.limits) {
    report["limits"] = {{"hbm_gb_s", optional_json(context.limits->hbm_gb_s)},
                        {"gemm_bf16_tflops", optional_json(context.limits->gemm_tflops)},
                        {"host_read_gb_s", context.limits->host_read_gb_s}};
  }
  report["tests"] = nlohmann::ordered_json::array();
  for (const TestResult& r : results) {
    const Derived d = derive(r, context);
    nlohmann::ordered_json test;
    test["test"] = r.name;
    test["batch"] = r.batch;
    test["tokens"] = r.tokens;
    test["seconds"] = r.seconds;
    test["min_seconds"] = r.min_seconds;
    test["max_seconds"] = r.max_seconds;
    test["tokens_per_second"] = r.tokens_per_second();
    test["minor_faults"] = r.minor_faults;
    if (r.experts) {
      const models::ExpertExecutionStats& e = *r.experts;
      test["experts"] = {
          {"cpu", e.cpu},
          {"streamed", e.streamed},
          {"copy_streamed", e.copy_streamed},
          {"grouped", e.grouped},
          {"cached", e.cached},
          {"resident", e.resident},
          {"cpu_bytes", e.cpu_bytes},
          {"streamed_bytes", e.streamed_bytes},
          {"cpu_batches", e.cpu_batches},
          {"route_ms", static_cast<double>(e.route_ns) / 1e6},
          {"cpu_ms", static_cast<double>(e.cpu_ns) / 1e6},
          {"experts_ms", static_cast<double>(e.experts_ns) / 1e6},
          {"device_ms", static_cast<double>(e.device_ns) / 1e6},
          {"decide_ms", static_cast<double>(e.decide_ns) / 1e6},
          {"tail_ms", static_cast<double>(e.tail_ns) / 1e6},
          {"block_steps", e.block_steps},
          {"staged_batches", e.staged_batches},
          {"blocks", e.blocks},
          {"distinct_experts", e.distinct_experts},
          {"distinct_per_block",
           e.blocks > 0 ? static_cast<double>(e.distinct_experts) / static_cast<double>(e.blocks)
                        : 0.0}};
      if (r.expert_cache) {
        const placement::ExpertCacheStats& c = *r.expert_cache;
        test["experts"]["cache"] = {
            {"hit_rate", c.hit_rate()},           {"hits", c.hits},        {"misses", c.misses},
            {"evictions", c.evictions},           {"bytes", c.bytes},      {"entries", c.entries},
            {"capacity_bytes", c.capacity_bytes}, {"bypassed", c.bypassed}};
      } else {
        test["experts"]["cache"] = nullptr;
      }
    }
    if (r.prefetch) {
      const placement::PrefetchStats& p = *r.prefetch;
      test["offloaded_units"] = {{"onloads", p.onloads},
                                 {"prefetched", p.prefetched},
                                 {"issued", p.issued},
                                 {"bytes_copied", p.bytes_copied},
                                 {"bytes_read", p.bytes_read},
                                 {"cpu_computes", p.cpu_computes},
                                 {"evicted_for_cpu", p.evicted_for_cpu},
                                 {"split_computes", p.split_computes},
                                 {"casts", p.casts}};
    }
    if (d.ms_per_step) {
      test["ms_per_step"] = *d.ms_per_step;
      test["weight_bytes_per_step"] = *d.step_bytes;
      test["weight_read_gb_per_s"] = *d.weight_gb_s;
      // Of the GPU memory bandwidth (all weights on GPUs) or the host's read rate (all on the cpu).
      test["share_of_memory_limit"] = optional_json(d.read_share);
    } else {
      test["linear_tflops"] = *d.linear_tflops;
      test["share_of_gemm_peak"] = optional_json(d.gemm_share);
    }
    report["tests"].push_back(std::move(test));
  }
  return report.dump(2);
}

std::string percent(const std::optional<double>& share) {
  return share ? fmt::format(" ({:.0f}%)", 100.0 * *share) : std::string();
}

void print_table(const std::string& model_dir, const LoadedModel& loaded,
                 const BenchContext& context, const std::vector<TestResult>& results,
                 std::ostream& out) {
  out << fmt::format("model {} ({}), weights {}\n", model_dir, dtype_name(loaded.empty.dtype),
                     weights_per_device(loaded.loaded.load.summary));
  if (context.limits) {
    const DeviceLimits& l = *context.limits;
    out << fmt::format("limits measured now: GPU memory {}, bf16 GEMM {}, host read {:.1f} GB/s\n",
                       l.hbm_gb_s ? fmt::format("{:.0f} GB/s", *l.hbm_gb_s) : "n/a",
                       l.gemm_tflops ? fmt::format("{:.0f} TFLOP/s", *l.gemm_tflops) : "n/a",
                       l.host_read_gb_s);
  }
  out << fmt::format("| {:>11} | {:>5} | {:>10} | {:>12} | {:>9} | {:>20} |\n", "test", "batch",
                     "seconds", "tokens/s", "ms/step", "rate (of the limit)");
  out << "|-------------|-------|------------|--------------|-----------|----------------------|\n";
  for (const TestResult& r : results) {
    const Derived d = derive(r, context);
    const std::string rate =
        d.weight_gb_s ? fmt::format("{:.1f} GB/s{}", *d.weight_gb_s, percent(d.read_share))
                      : fmt::format("{:.1f} TFLOP/s{}", *d.linear_tflops, percent(d.gemm_share));
    out << fmt::format("| {:>11} | {:>5} | {:>10.4f} | {:>12.1f} | {:>9} | {:>20} |\n", r.name,
                       r.batch, r.seconds, r.tokens_per_second(),
                       d.ms_per_step ? fmt::format("{:.3f}", *d.ms_per_step) : std::string("-"),
                       rate);
  }
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
  cmd->add_option("-d,--depth", args.depth,
                  "context tokens in the KV cache before the generation test starts (prefilled, "
                  "not timed), e.g. 1024 for decode over a 1k-token context")
      ->capture_default_str();
  cmd->add_option("-b,--batch", args.batch, "batch sizes, e.g. 1,4,16,64")->capture_default_str();
  cmd->add_option("--decode-input", args.decode_input,
                  "what each generation step feeds: greedy (the previous step's argmax) or random "
                  "(a pseudo-random token id per step, as llama-bench; a random checkpoint's "
                  "greedy decode repeats one token and, in a mixture of experts, the same experts)")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", args.repetitions,
                  "timed runs of each test after one warm-up; the median is reported")
      ->capture_default_str();
  cmd->add_flag("--json", args.json, "print the results as JSON");
  cmd->add_flag("!--no-limits", args.limits,
                "do not measure the GPU memory, GEMM and host read limits the rates are compared "
                "with");
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
  STRATA_CHECK_ARG(args.depth >= 0, "--depth {}: must not be negative", args.depth);
  STRATA_CHECK_ARG(args.repetitions >= 1, "--repetitions {}: must be at least 1", args.repetitions);
  STRATA_CHECK_ARG(args.decode_input == "greedy" || args.decode_input == "random",
                   "--decode-input {}: expected greedy (each step feeds the last argmax) or "
                   "random (a pseudo-random token id per step)",
                   args.decode_input);
  STRATA_CHECK_ARG(!prompts.empty() || args.decode_tokens > 0,
                   "nothing to measure: --prompt-tokens and --decode-tokens are both 0");
  EmptyModel empty = build_empty_model(args.model_dir, args.dtype);
  const std::int64_t longest =
      std::max(prompts.empty() ? 0 : *std::max_element(prompts.begin(), prompts.end()),
               std::max<std::int64_t>(args.depth, 1) + args.decode_tokens);
  STRATA_CHECK_ARG(
      longest <= empty.config.max_position_embeddings || empty.config.max_position_embeddings <= 0,
      "a test needs {} positions but the model has max_position_embeddings {}; "
      "lower --prompt-tokens, --decode-tokens or --depth",
      longest, empty.config.max_position_embeddings);
  const std::int64_t vocab = empty.config.vocab_size;
  LoadedModel loaded = load_model(std::move(empty), args.model_dir, args);
  models::CausalLM& model = *loaded.empty.model;
  BenchContext context;
  context.weight_bytes = loaded.loaded.load.summary.total_bytes();
  {
    const auto& c = model.config();
    const double embedding = static_cast<double>(c.vocab_size * c.hidden_size);
    double params = 0;
    for (const auto& [name, t] : model.state_dict()) params += static_cast<double>(t.numel());
    context.routed = routed_experts(model);
    if (!c.tie_word_embeddings) {
      context.lookup_bytes = static_cast<double>(model.input_embeddings().weight().nbytes());
    }
    context.linear_params = params - (c.tie_word_embeddings ? 1 : 2) * embedding -
                            context.routed.params + context.routed.params_per_token;
    const auto& destinations = loaded.loaded.load.summary.bytes_per_destination;
    context.all_on_gpu = std::all_of(destinations.begin(), destinations.end(),
                                     [](const auto& d) { return d.first.starts_with("cuda"); });
    context.all_on_cpu = std::all_of(destinations.begin(), destinations.end(),
                                     [](const auto& d) { return d.first == "cpu"; });
  }
  context.decode_input = args.decode_input;
  if (args.limits) context.limits = measure_device_limits();
  err << fmt::format("loaded in {:.2f} s: {}\n", loaded.load_seconds,
                     weights_per_device(loaded.loaded.load.summary));

  models::GenerationOptions options;
  options.input_device = loaded.input_device;
  std::vector<TestResult> results;
  // Each test's expert counts start from zero (the cache keeps its contents).
  const std::shared_ptr<placement::PrefetchScheduler> scheduler = placement::find_scheduler(model);
  placement::PrefetchStats prefetch_before;
  const auto start_test = [&] {
    models::reset_expert_execution_stats(model);
    if (loaded.expert_cache) loaded.expert_cache->reset_counters();
    if (scheduler) prefetch_before = scheduler->stats();
  };
  const auto finish_test = [&](TestResult result) {
    if (scheduler) result.prefetch = prefetch_delta(scheduler->stats(), prefetch_before);
    const models::ExpertExecutionStats e = models::expert_execution_stats(model);
    if (e.block_steps > 0) {  // a mixture of experts ran, wherever its experts live
      result.experts = e;
      if (loaded.expert_cache) result.expert_cache = loaded.expert_cache->stats();
      err << "    " << expert_summary(model, loaded.expert_cache.get()) << "\n";
    }
    results.push_back(std::move(result));
  };
  for (const std::int64_t batch : batches) {
    for (const std::int64_t length : prompts) {
      // Prompt processing: one forward over [batch, length] (the prefill of generate_greedy,
      // which keeps only the last position's logits).
      options.max_new_tokens = 1;
      const Tensor ids = random_ids(batch, length, vocab, static_cast<std::uint64_t>(length));
      start_test();
      finish_test(repeat(fmt::format("pp{}", length), batch, length, args.repetitions, [&] {
        return models::generate_greedy(model, ids, options).prefill_seconds;
      }));
      err << fmt::format("  pp{} batch {}: {:.1f} tokens/s\n", length, batch,
                         results.back().tokens_per_second());
    }
    if (args.decode_tokens > 0) {
      // Token generation: a prompt of `depth` tokens (at least one; its prefill is not timed),
      // then decode_tokens single-token steps, each waiting for its argmax as generation does.
      options.max_new_tokens = args.decode_tokens + 1;
      // Random inputs: every step of every run (warm-up included) draws new ids, so repeated
      // runs do not replay one routing stream.
      std::uint64_t draws = 0;
      if (args.decode_input == "random") {
        options.next_input = [&draws, vocab](std::int64_t, const Tensor& argmax) {
          return random_ids(argmax.size(0), 1, vocab, 0x5eed0000ULL + draws++);
        };
      }
      const Tensor ids = random_ids(batch, std::max<std::int64_t>(args.depth, 1), vocab, 1);
      const std::string name = args.depth > 0
                                   ? fmt::format("tg{}@d{}", args.decode_tokens, args.depth)
                                   : fmt::format("tg{}", args.decode_tokens);
      start_test();
      finish_test(repeat(name, batch, args.decode_tokens, args.repetitions, [&] {
        const auto steps = models::generate_greedy(model, ids, options).step_seconds;
        return std::accumulate(steps.begin(), steps.end(), 0.0);
      }));
      err << fmt::format("  {} batch {}: {:.1f} tokens/s\n", name, batch,
                         results.back().tokens_per_second());
      options.next_input = nullptr;
    }
  }

  if (args.json) {
    out << json_report(args.model_dir, loaded, context, results) << "\n";
  } else {
    print_table(args.model_dir, loaded, context, results, out);
  }
  return 0;
}

}  // namespace strata::cli

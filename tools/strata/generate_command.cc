#include "generate_command.h"

#include <fmt/format.h>

#include <istream>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>

#include "strata/core/error.h"
#include "strata/engine/generate.h"
#include "strata/engine/stopping.h"
#include "strata/io/model_config.h"
#include "strata/models/config.h"
#include "strata/text/generation_config.h"
#include "strata/text/tokenizer.h"

namespace strata::cli {
namespace {

// When neither the command line nor generation_config.json says how many tokens to generate.
constexpr std::int64_t kDefaultMaxNewTokens = 256;

std::string read_prompt(const GenerateArgs& args, std::istream& in) {
  if (args.prompt) return *args.prompt;
  if (args.prompt_file) return read_user_file(*args.prompt_file, "--prompt-file");
  std::ostringstream text;
  text << in.rdbuf();
  return std::move(text).str();
}

// Decoded text on its way to the output: streaming detokenisation, then the stop strings.
class TextSink {
 public:
  TextSink(const text::Tokenizer& tokenizer, std::vector<std::string> stops, std::ostream& out)
      : decoder_(tokenizer, /*skip_special_tokens=*/true), matcher_(std::move(stops)), out_(out) {}

  // False once a stop string has appeared (the row must end).
  bool push(std::int64_t token) {
    emit(matcher_.feed(decoder_.push(token)));
    return !matcher_.stopped();
  }
  void finish() {
    if (!matcher_.stopped()) emit(matcher_.feed(decoder_.finish()));
    if (!matcher_.stopped()) write(matcher_.flush());
  }
  bool stopped() const { return matcher_.stopped(); }
  const std::string& stop() const { return stop_; }

 private:
  void emit(const engine::StopStringMatcher::Piece& piece) {
    write(piece.text);
    if (piece.stopped) stop_ = piece.stop;
  }
  void write(const std::string& text) {
    if (text.empty()) return;
    out_ << text;
    out_.flush();  // the user sees each piece as soon as it is final
  }

  text::StreamDecoder decoder_;
  engine::StopStringMatcher matcher_;
  std::ostream& out_;
  std::string stop_;
};

double mean(const std::vector<double>& values) {
  return values.empty() ? 0.0
                        : std::accumulate(values.begin(), values.end(), 0.0) /
                              static_cast<double>(values.size());
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "generate", "continue a text prompt, streaming the generated text to stdout");
  cmd->add_option("model_dir", args.model_dir,
                  "folder with config.json, tokenizer.json and *.safetensors (default: the "
                  "built-in stories260K)");
  CLI::Option* prompt = cmd->add_option("--prompt", args.prompt, "the prompt text");
  CLI::Option* file =
      cmd->add_option("--prompt-file", args.prompt_file, "read the prompt from this file");
  prompt->excludes(file);
  cmd->add_option("--max-new-tokens", args.max_new_tokens,
                  "tokens to generate at most (default: generation_config.json, else 256)");
  add_sampling_options(cmd, args);
  cmd->add_option("--stop", args.stop, "stop before this text (repeatable)");
  cmd->add_flag("--no-special", args.no_special, "do not add BOS/EOS to the prompt");
  cmd->add_flag("--echo", args.echo, "print the prompt before the generated text");
  cmd->add_flag("--show-plan", args.show_plan, "print where each module goes before loading");
  add_placement_options(cmd, args);
  return cmd;
}

int run_generate(const GenerateArgs& args, std::istream& in, std::ostream& out, std::ostream& err,
                 bool err_is_terminal) {
  // Everything that can be checked is checked before the first weight is read.
  const std::filesystem::path model_dir =
      args.model_dir ? std::filesystem::path(*args.model_dir) : builtin_model_dir();
  STRATA_CHECK_ARG(!args.max_new_tokens || *args.max_new_tokens >= 1,
                   "--max-new-tokens {}: must be at least 1", *args.max_new_tokens);
  const std::string prompt_text = read_prompt(args, in);
  const text::Tokenizer tokenizer = text::Tokenizer::from_folder(model_dir);
  const text::GenerationConfig generation_config = text::read_generation_config(model_dir);
  const models::TransformerConfig config =
      models::parse_transformer_config(io::read_model_config(model_dir / "config.json"));

  engine::GenerateRequest request;
  request.prompt = tokenizer.encode(prompt_text, /*add_special_tokens=*/!args.no_special);
  STRATA_CHECK_ARG(!request.prompt.empty(),
                   "the prompt is empty and the tokenizer adds no BOS token: give a prompt");
  engine::StopCriteria::check_prompt(static_cast<std::int64_t>(request.prompt.size()),
                                     config.max_position_embeddings);
  request.params = sampling_params(args, generation_config);
  engine::StopStringMatcher check_stops(args.stop);  // refuses empty stop strings now

  engine::GenerateOptions options;
  options.max_new_tokens =
      args.max_new_tokens ? *args.max_new_tokens
                          : engine::max_new_tokens_from(
                                generation_config, static_cast<std::int64_t>(request.prompt.size()),
                                kDefaultMaxNewTokens);
  options.eos_token_ids = generation_config.eos_token_ids;

  LoadReporting reporting;
  reporting.progress = &err;
  reporting.progress_is_terminal = err_is_terminal;
  if (args.show_plan) reporting.plan_table = &err;
  LoadedModel loaded = load_model(model_dir, args, reporting);
  options.input_device = loaded.input_device;
  const models::TensorParallel& tp = loaded.empty.model->tensor_parallel();
  if (tp.active() && !request.params.seed) {
    // Every rank must draw the same tokens: rank 0's random seed is everyone's.
    Tensor seed = Tensor::from_vector(
        std::vector<std::int64_t>{static_cast<std::int64_t>(std::random_device{}() & 0x7fffffff)});
    tp.comm->broadcast(seed, 0);
    request.params.seed = static_cast<std::uint64_t>(seed.to_vector<std::int64_t>()[0]);
  }
  // Under tensor parallelism only rank 0 writes.
  std::ostream quiet(nullptr);
  std::ostream& text_out = tp.rank == 0 ? out : quiet;
  std::ostream& log = tp.rank == 0 ? err : quiet;

  if (args.echo) {
    text_out << prompt_text;
    text_out.flush();
  }
  TextSink sink(tokenizer, args.stop, text_out);
  const engine::GenerateOutput result =
      engine::generate(*loaded.empty.model, std::span(&request, 1), options,
                       [&](std::int64_t, std::int64_t token) { return sink.push(token); });
  sink.finish();

  const engine::RowOutput& row = result.rows.front();
  const double prompt_tokens = static_cast<double>(request.prompt.size());
  const double per_token = mean(result.step_seconds);
  log << fmt::format("\nload {:.2f} s: {}\n", loaded.load_seconds,
                     weights_per_device(loaded.loaded.load.summary));
  log << fmt::format(
      "prompt {} tokens in {:.1f} ms ({:.1f} tokens/s), {} new tokens at {:.2f} ms/token "
      "({:.1f} tokens/s), {}, {}\n",
      request.prompt.size(), result.prefill_seconds * 1e3,
      result.prefill_seconds > 0 ? prompt_tokens / result.prefill_seconds : 0.0, row.tokens.size(),
      per_token * 1e3, per_token > 0 ? 1.0 / per_token : 0.0, loaded.empty.dtype,
      request.params.describe());
  if (const std::string experts = expert_summary(*loaded.empty.model, loaded.expert_cache.get());
      !experts.empty()) {
    log << experts << "\n";
  }
  if (sink.stopped()) {
    log << fmt::format("finished (stop): the stop string '{}' appeared\n", sink.stop());
  } else {
    log << fmt::format("finished ({}): {}\n", engine::to_string(row.finish), row.message);
  }
  return 0;
}

}  // namespace strata::cli

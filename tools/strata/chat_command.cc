#include "chat_command.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <istream>
#include <ostream>

#include "strata/core/error.h"
#include "strata/engine/generate.h"
#include "strata/engine/sampling.h"
#include "strata/models/causal_lm.h"
#include "strata/serve/model_backend.h"
#include "strata/serve/protocol.h"
#include "strata/text/chat_template.h"
#include "strata/text/generation_config.h"
#include "strata/text/tokenizer.h"

namespace strata::cli {
namespace {

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_interrupt(int) { g_interrupted = true; }

// Ctrl-C sets a flag the answer loop reads between tokens; SA_RESTART keeps a pending read of
// the next turn going. The previous handler comes back when the chat ends.
class InterruptGuard {
 public:
  InterruptGuard() {
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_);
  }
  ~InterruptGuard() { ::sigaction(SIGINT, &previous_, nullptr); }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction previous_ {};
};

// A conversation and the KV cache of what the model has read of it.
class ChatSession {
 public:
  ChatSession(models::CausalLM& model, Device input_device, const text::Tokenizer& tokenizer,
              const text::ChatTemplate& chat_template, engine::SamplingParams params,
              std::vector<std::int64_t> eos, std::int64_t context_limit,
              std::optional<std::int64_t> max_new_tokens)
      : model_(model),
        input_device_(input_device),
        tokenizer_(tokenizer),
        encoder_(chat_template, tokenizer),
        params_(params),
        eos_(std::move(eos)),
        context_limit_(context_limit),
        max_new_tokens_(max_new_tokens) {}

  void set_system(std::string text) {
    system_ = std::move(text);
    reset();
  }
  void reset() {
    messages_ = nlohmann::json::array();
    if (!system_.empty()) messages_.push_back({{"role", "system"}, {"content", system_}});
    cache_.reset();
    cached_.clear();
  }

  // One turn: the user's text in, the answer streamed to `out`, statistics to `err`.
  void turn(const std::string& user, std::ostream& out, std::ostream& err) {
    nlohmann::json messages = messages_;
    messages.push_back({{"role", "user"}, {"content", user}});
    const std::vector<std::int64_t> prompt = encoder_.encode(messages);
    if (context_limit_ > 0 && static_cast<std::int64_t>(prompt.size()) >= context_limit_) {
      err << fmt::format(
          "[the conversation has {} tokens, the model reads {}: /reset to start "
          "again]\n",
          prompt.size(), context_limit_);
      return;
    }
    messages_ = std::move(messages);
    // Only what the cache lacks is prefilled: the new prompt must extend what was read.
    const bool extends = cache_ && cached_.size() < prompt.size() &&
                         std::equal(cached_.begin(), cached_.end(), prompt.begin());
    if (!extends) {
      cache_ = model_.make_cache(static_cast<std::int64_t>(prompt.size()) + 256);
      cached_.clear();
    }
    std::vector<std::int64_t> feed(prompt.begin() + static_cast<std::ptrdiff_t>(cached_.size()),
                                   prompt.end());
    const std::size_t prefilled = feed.size();

    std::vector<std::int64_t> context = prompt;
    text::StreamDecoder decoder(tokenizer_, /*skip_special_tokens=*/true);
    std::string answer;
    const std::uint64_t seed = engine::resolve_seed(params_);
    std::int64_t generated = 0;
    std::string why = "end of answer";
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      if (g_interrupted) {
        why = "interrupted";
        break;
      }
      const Tensor input =
          Tensor::from_vector(feed, {1, static_cast<std::int64_t>(feed.size())}).to(input_device_);
      const Tensor logits = model_.run(input, cache_, 1).logits;
      cached_.insert(cached_.end(), feed.begin(), feed.end());
      const engine::SampleRow row{&params_, context, generated, seed};
      const std::int64_t token = engine::sample(logits, std::span(&row, 1)).front();
      if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) break;
      context.push_back(token);
      ++generated;
      const std::string piece = decoder.push(token);
      answer += piece;
      out << piece << std::flush;
      if (max_new_tokens_ && generated >= *max_new_tokens_) {
        why = "max new tokens";
        break;
      }
      if (context_limit_ > 0 && static_cast<std::int64_t>(context.size()) >= context_limit_) {
        why = "context full";
        break;
      }
      feed = {token};
    }
    const std::string tail = decoder.finish();
    answer += tail;
    out << tail << "\n" << std::flush;
    messages_.push_back({{"role", "assistant"}, {"content", answer}});
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    err << fmt::format("[prefilled {} of {} prompt tokens, {} new, {:.1f} tokens/s, {}]\n",
                       prefilled, prompt.size(), generated,
                       seconds > 0 ? static_cast<double>(generated) / seconds : 0.0, why);
  }

 private:
  models::CausalLM& model_;
  Device input_device_;
  const text::Tokenizer& tokenizer_;
  serve::ChatPromptEncoder encoder_;
  engine::SamplingParams params_;
  std::vector<std::int64_t> eos_;
  std::int64_t context_limit_;
  std::optional<std::int64_t> max_new_tokens_;
  std::string system_;
  nlohmann::json messages_ = nlohmann::json::array();
  std::shared_ptr<models::KVCache> cache_;
  std::vector<std::int64_t> cached_;  // the ids the cache holds
};

}  // namespace

CLI::App* add_chat_command(CLI::App& app, ChatArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "chat",
      "chat with a model in the terminal (/reset, /system TEXT, /quit; Ctrl-C stops an "
      "answer)");
  cmd->add_option("model_dir", args.model_dir,
                  "folder with config.json, *.safetensors, tokenizer.json and a chat template");
  cmd->add_option("--system", args.system, "the system message");
  cmd->add_option("--max-new-tokens", args.max_new_tokens,
                  "most tokens per answer (default: up to the context)");
  add_sampling_options(cmd, args);
  add_placement_options(cmd, args);
  return cmd;
}

int run_chat(const ChatArgs& args, std::istream& in, std::ostream& out, std::ostream& err) {
  const std::filesystem::path dir =
      args.model_dir ? std::filesystem::path(*args.model_dir) : builtin_model_dir();
  STRATA_CHECK_ARG(!args.max_new_tokens || *args.max_new_tokens >= 1,
                   "--max-new-tokens {}: must be at least 1", *args.max_new_tokens);
  STRATA_CHECK_ARG(text::ChatTemplate::folder_has_template(dir),
                   "{} has no chat template (no chat_template in tokenizer_config.json, no "
                   "chat_template.jinja): it is a base model; use strata generate",
                   dir.string());
  const text::Tokenizer tokenizer = text::Tokenizer::from_folder(dir);
  const text::ChatTemplate chat_template = text::ChatTemplate::from_folder(dir);
  const text::GenerationConfig generation = text::read_generation_config(dir);
  const engine::SamplingParams params = sampling_params(args, generation);
  LoadedModel loaded = load_model(dir, args);
  std::vector<std::int64_t> eos = generation.eos_token_ids;
  if (eos.empty() && tokenizer.eos_token_id()) eos.push_back(*tokenizer.eos_token_id());

  ChatSession session(*loaded.empty.model, loaded.input_device, tokenizer, chat_template, params,
                      eos, loaded.empty.config.max_position_embeddings, args.max_new_tokens);
  if (args.system) session.set_system(*args.system);
  InterruptGuard interrupts;
  err << "strata chat: /reset, /system TEXT, /quit; Ctrl-C stops an answer\n";
  std::string line;
  while (true) {
    // A Ctrl-C from here on stops the next answer: typed while the turn is read, or during it.
    g_interrupted = false;
    out << "> " << std::flush;
    if (!std::getline(in, line)) break;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      session.reset();
      err << "[conversation reset]\n";
      continue;
    }
    if (line.rfind("/system", 0) == 0) {
      const std::size_t at = line.find_first_not_of(' ', 7);
      session.set_system(at == std::string::npos ? "" : line.substr(at));
      err << "[system message set; conversation reset]\n";
      continue;
    }
    if (line.empty()) continue;
    try {
      session.turn(line, out, err);
    } catch (const serve::ApiError& e) {  // the template refused the conversation
      err << "[" << e.what() << "]\n";
    }
  }
  out << "\n";
  return 0;
}

}  // namespace strata::cli

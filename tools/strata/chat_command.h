#pragma once
// `strata chat [MODEL_DIR]`: an interactive chat in the terminal through the model's chat
// template. Answers stream as they are generated; the KV cache is kept across turns, so a new
// turn prefills only its own tokens (the conversation's rendered prompt is checked to extend what
// is cached; when it does not, the whole prompt is prefilled again). Commands: /reset (forget the
// conversation), /system TEXT (set the system message and reset), /quit (or end of input).
// Ctrl-C stops the current answer (or the next one, when typed with its line) and the chat goes
// on.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "model_loading.h"
#include "sampling_options.h"

namespace strata::cli {

struct ChatArgs : PlacementArgs, SamplingArgs {
  std::optional<std::string> model_dir;  // unset: the built-in model (which has no template)
  std::optional<std::string> system;
  std::optional<std::int64_t> max_new_tokens;  // per answer; unset: up to the context
};

CLI::App* add_chat_command(CLI::App& app, ChatArgs& args);

// Reads turns from `in`, writes the prompt marker and answers to `out`, statistics to `err`
// ("[prefilled N tokens, M new, ...]" after each answer). Returns the exit code.
int run_chat(const ChatArgs& args, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace strata::cli

#include "tokenize_command.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "cli_options.h"
#include "strata/core/error.h"
#include "strata/text/tokenizer.h"

namespace strata::cli {

CLI::App* add_tokenize_command(CLI::App& app, TokenizeArgs& args) {
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  cmd->add_option("model_dir", args.model_dir, "folder with tokenizer.json")->required();
  CLI::Option* text = cmd->add_option("text", args.text, "the text to encode");
  CLI::Option* file = cmd->add_option("--file", args.file, "encode this file's bytes instead");
  text->excludes(file);
  cmd->add_flag("--no-special", args.no_special, "do not add the special tokens (BOS/EOS)");
  cmd->add_flag("--pieces", args.pieces, "also print the pieces, as a JSON array, on line two");
  return cmd;
}

CLI::App* add_detokenize_command(CLI::App& app, DetokenizeArgs& args) {
  CLI::App* cmd = app.add_subcommand("detokenize", "print the text of token ids, exactly");
  cmd->add_option("model_dir", args.model_dir, "folder with tokenizer.json")->required();
  cmd->add_option("--ids", args.ids, "token ids, e.g. 1,2,3")->required();
  cmd->add_flag("--skip-special", args.skip_special, "leave the special tokens out");
  return cmd;
}

int run_tokenize(const TokenizeArgs& args, std::ostream& out) {
  STRATA_CHECK_ARG(args.text || args.file, "tokenize: give the text, or --file FILE");
  const std::string text = args.text ? *args.text : read_user_file(*args.file, "--file");
  const text::Tokenizer tokenizer = text::Tokenizer::from_folder(args.model_dir);
  const text::Tokenizer::Encoding encoding =
      tokenizer.encode_with_pieces(text, /*add_special_tokens=*/!args.no_special);
  out << fmt::format("{}\n", fmt::join(encoding.ids, ","));
  if (args.pieces) out << nlohmann::json(encoding.pieces).dump() << "\n";
  return 0;
}

int run_detokenize(const DetokenizeArgs& args, std::ostream& out) {
  const std::vector<std::int64_t> ids = parse_token_ids(args.ids);
  const text::Tokenizer tokenizer = text::Tokenizer::from_folder(args.model_dir);
  for (const std::int64_t id : ids) {
    STRATA_CHECK_ARG(id < tokenizer.vocab_size(),
                     "--ids: {} is out of range (the tokenizer of {} has {} tokens)", id,
                     args.model_dir, tokenizer.vocab_size());
  }
  out << tokenizer.decode(ids, args.skip_special);
  out.flush();
  return 0;
}

}  // namespace strata::cli

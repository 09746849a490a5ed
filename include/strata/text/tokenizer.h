#pragma once
// The Hugging Face tokenizers pipeline for BPE models, read from a model folder's
// tokenizer.json (+ tokenizer_config.json, special_tokens_map.json): added tokens matched first,
// then normaliser, pre-tokenizer, BPE model, post-processor; decoders for the way back. Where
// transformers' AutoTokenizer and tokenizer.json disagree (SentencePiece-style "▁" prefixes),
// Strata follows transformers. docs/tokenizers.md has the supported components.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strata::text {

namespace detail {
struct TokenizerState;
}

class Tokenizer {
 public:
  // tokenizer.json (required) + tokenizer_config.json + special_tokens_map.json when present.
  // Throws IoError (unreadable), CheckpointError (malformed), NotSupported (component unknown).
  static Tokenizer from_folder(const std::filesystem::path& dir);
  // From the files' contents (config strings may be empty); names are used in error messages.
  static Tokenizer from_json(std::string_view tokenizer_json,
                             std::string_view tokenizer_config = {},
                             std::string_view special_tokens_map = {},
                             std::string_view origin = "tokenizer.json");

  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const;
  struct Encoding {
    std::vector<std::int64_t> ids;
    std::vector<std::string> pieces;
  };
  Encoding encode_with_pieces(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const std::int64_t> ids, bool skip_special_tokens = false) const;
  std::int64_t vocab_size() const;  // incl. added tokens
  std::optional<std::int64_t> token_to_id(std::string_view token) const;
  std::string id_to_token(std::int64_t id) const;  // throws InvalidArgument out of range
  bool is_special(std::int64_t id) const;
  std::optional<std::int64_t> bos_token_id() const;  // from the config files
  std::optional<std::int64_t> eos_token_id() const;
  std::optional<std::int64_t> pad_token_id() const;
  // Encodes text in which special-token strings are NOT recognised (plain text only), for chat
  // input sanitising: a user typing "<|im_start|>" gets ordinary text ids.
  // `at_start` false encodes a continuation, such as the text after a special token in a chat
  // prompt: no start-of-text rules (Metaspace's prepend_scheme "first" adds no "▁").
  std::vector<std::int64_t> encode_plain(std::string_view text, bool at_start = true) const;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerState> state);
  std::shared_ptr<const detail::TokenizerState> state_;
};

// Streaming: push ids one at a time, get the text that became final. The concatenation of every
// push() and finish() equals tokenizer.decode(all ids, skip_special_tokens).
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string push(std::int64_t id);  // possibly empty
  std::string finish();               // whatever is left

 private:
  std::shared_ptr<const detail::TokenizerState> state_;
  bool skip_special_;
  std::vector<std::int64_t> ids_;  // ids since the last fully emitted prefix
  std::size_t emitted_ = 0;        // bytes of decode(ids_) already returned
  bool at_start_ = true;           // no text emitted yet (Strip / Metaspace start rules)
};

}  // namespace strata::text

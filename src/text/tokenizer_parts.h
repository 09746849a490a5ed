#pragma once
// Internal pieces of the tokenizer pipeline (src/text/ only). Each component is immutable after
// loading, so one TokenizerState is shared by every copy of a Tokenizer and every thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/json_access.h"
#include "text/onig_regex.h"

namespace strata::text::detail {

// A piece of text between added tokens, as it flows through normaliser and pre-tokenizer.
// at_start: the piece begins at offset 0 of the original text (Metaspace prepend_scheme=first).
struct Piece {
  std::string text;
  bool at_start = false;
};

// {"String": ...} or {"Regex": ...} of Split / Replace: the literal (regex null) or the regex.
std::pair<std::string, std::unique_ptr<Regex>> load_pattern(const JsonRef& pattern);

// GPT-2's byte-to-character map of the ByteLevel components: the UTF-8 of each byte's char.
const std::string& byte_level_char(unsigned char byte);
// The byte a ByteLevel character stands for, or -1 when the code point is not one of them.
int byte_level_byte(char32_t cp);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const JsonRef& node);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each piece further (in place); pieces that become empty are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonRef& node);

// What the post-processor and decoders need to know about the pre-tokenizer (Metaspace).
struct MetaspaceInfo {
  bool present = false;
};

class BpeModel {
 public:
  static std::unique_ptr<BpeModel> load(const JsonRef& model);
  ~BpeModel();
  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<std::int64_t>& out) const;
  std::optional<std::int64_t> token_to_id(std::string_view token) const;
  // Empty view when the id has no model token.
  std::string_view id_to_token(std::int64_t id) const;
  std::int64_t size() const { return static_cast<std::int64_t>(id_to_token_.size()); }

 private:
  BpeModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> id_to_token_;
};

struct AddedToken {
  std::int64_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool single_word = false;
};

// A segment of the input: either an added token (id >= 0) or text for the model (id < 0).
struct Segment {
  std::int64_t id = -1;
  std::size_t begin = 0, end = 0;  // byte offsets into the text that was split
};

class AddedVocabulary {
 public:
  explicit AddedVocabulary(std::vector<AddedToken> tokens);
  ~AddedVocabulary();
  AddedVocabulary(AddedVocabulary&&) noexcept;
  // Splits text on the added tokens whose `normalized` flag equals `normalized`, as the
  // reference does (leftmost-longest, lstrip/rstrip/single_word). skip_special: special
  // tokens are not matched (split_special_tokens).
  std::vector<Segment> split(std::string_view text, bool normalized, bool skip_special) const;
  const AddedToken* find(std::int64_t id) const;
  std::optional<std::int64_t> find(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool any_normalized() const { return any_normalized_; }

 private:
  struct Trie;
  std::vector<AddedToken> tokens_;
  std::unordered_map<std::int64_t, std::size_t> by_id_;
  std::unordered_map<std::string, std::int64_t> by_content_;
  std::unique_ptr<Trie> raw_, normalized_;
  bool any_normalized_ = false;
};

// Adds special tokens around the encoded sequence (TemplateProcessing); ByteLevel is a no-op on
// ids. Built from tokenizer.json, or from add_bos_token/add_eos_token of tokenizer_config.json.
class PostProcessor {
 public:
  struct Item {
    bool is_sequence = false;
    std::vector<std::int64_t> ids;  // for a special token
  };
  static PostProcessor from_json(const JsonRef& node, const AddedVocabulary& added,
                                 const BpeModel& model);
  static PostProcessor from_flags(std::optional<std::int64_t> bos, std::optional<std::int64_t> eos);
  void apply(std::vector<std::int64_t>& ids) const;
  bool empty() const { return items_.empty(); }

 private:
  std::vector<Item> items_;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms the token strings (the reference's decode_chain). first: the chain starts at
  // the first token of the text (Strip/Metaspace start rules apply); false when continuing.
  virtual void decode_chain(std::vector<std::string>& tokens, bool first) const = 0;
  // Whether text after this token may still change when more tokens follow (byte groups).
  virtual bool pending(std::string_view token) const { return false; }
  // Whether the end of the text is rewritten (Strip with stop > 0): a stream cannot restart.
  virtual bool rewrites_end() const { return false; }
};
std::unique_ptr<Decoder> make_decoder(const JsonRef& node);

struct TokenizerState {
  std::string origin;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<AddedVocabulary> added;
  PostProcessor post;
  std::unique_ptr<Decoder> decoder;
  std::optional<std::int64_t> bos, eos, pad;
  std::int64_t vocab_size = 0;

  // `at_start`: the text begins the input (false for a continuation: no start-of-text rules
  // such as Metaspace's prepend_scheme "first").
  void encode_into(std::string_view text, bool add_special, bool skip_special_matching,
                   std::vector<std::int64_t>& ids, bool at_start = true) const;
  // Decodes ids; first=false decodes a continuation (no start-of-text rules).
  std::string decode(const std::int64_t* ids, std::size_t n, bool skip_special, bool first) const;
  std::string token_string(std::int64_t id) const;  // throws InvalidArgument out of range
  bool is_special(std::int64_t id) const;
};

}  // namespace strata::text::detail

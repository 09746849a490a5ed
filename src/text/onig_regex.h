#pragma once
// Oniguruma, the engine Hugging Face tokenizers uses (onig crate, Oniguruma syntax, UTF-8), so
// Split / Replace patterns behave identically. A compiled Regex is immutable and searched
// concurrently from many threads (each search has its own match region).

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::text::detail {

class Regex {
 public:
  // Throws CheckpointError naming `where` when the pattern does not compile.
  Regex(std::string_view pattern, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping match (byte offsets), left to right; empty matches are skipped.
  void find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  void* regex_ = nullptr;  // OnigRegex
};

}  // namespace strata::text::detail

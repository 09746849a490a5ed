#include "text/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "io/json_util.h"
#include "strata/core/error.h"

namespace strata::text::detail {
namespace {

void init_oniguruma() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

// One match region per thread, reused across searches.
struct RegionHolder {
  OnigRegion* region = onig_region_new();
  ~RegionHolder() { onig_region_free(region, 1); }
};

}  // namespace

Regex::Regex(std::string_view pattern, std::string_view where) {
  init_oniguruma();
  OnigRegex reg = nullptr;
  OnigErrorInfo info;
  const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
  int rc = onig_new(&reg, begin, begin + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                    ONIG_SYNTAX_DEFAULT, &info);
  if (rc != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, rc, &info);
    STRATA_THROW(CheckpointError, "{}: the regex '{}' does not compile ({}); the file is malformed",
                 where, io::detail::printable(pattern), reinterpret_cast<const char*>(message));
  }
  regex_ = reg;
}

Regex::~Regex() { onig_free(static_cast<OnigRegex>(regex_)); }

namespace {
struct ScanState {
  std::vector<std::pair<std::size_t, std::size_t>>* out;
};

int on_match(int, int, OnigRegion* region, void* arg) {
  auto* state = static_cast<ScanState*>(arg);
  auto b = static_cast<std::size_t>(region->beg[0]);
  auto e = static_cast<std::size_t>(region->end[0]);
  if (e > b) state->out->emplace_back(b, e);  // empty matches are skipped (docs/tokenizers.md)
  return 0;
}
}  // namespace

void Regex::find_all(std::string_view text,
                     std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  thread_local RegionHolder holder;
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  ScanState state{&out};
  // One scan over the text (onig_scan steps past empty matches itself); a negative result
  // (invalid UTF-8 cannot reach here, a retry limit could) leaves the rest unmatched.
  onig_scan(static_cast<OnigRegex>(regex_), str, str + text.size(), holder.region, ONIG_OPTION_NONE,
            on_match, &state);
}

}  // namespace strata::text::detail

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

void Regex::find_all(std::string_view text,
                     std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  thread_local RegionHolder holder;
  auto reg = static_cast<OnigRegex>(regex_);
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = str + text.size();
  std::size_t pos = 0;
  while (pos <= text.size()) {
    int r = onig_search(reg, str, end, str + pos, end, holder.region, ONIG_OPTION_NONE);
    if (r < 0) {
      if (r == ONIG_MISMATCH) break;
      // Invalid UTF-8 or a resource limit: treat the rest as unmatched text.
      break;
    }
    auto b = static_cast<std::size_t>(holder.region->beg[0]);
    auto e = static_cast<std::size_t>(holder.region->end[0]);
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {
      // Empty match: step over one UTF-8 character.
      std::size_t step = 1;
      while (b + step < text.size() &&
             (static_cast<unsigned char>(text[b + step]) & 0xC0) == 0x80) {
        ++step;
      }
      pos = b + step;
    }
  }
}

std::string escape_regex(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace strata::text::detail

#pragma once
// Shows a checkpoint load as it happens: on a terminal one line redrawn in place (a bar, bytes per
// destination, rate); when the output is a file or a pipe, a plain line every tenth of the bytes,
// so logs stay readable.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>

#include "strata/io/load_summary.h"

namespace strata::cli {

class ProgressBar {
 public:
  ProgressBar(std::ostream& out, bool terminal);
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(const io::LoadProgress& progress);
  // Ends the display (the terminal line is finished with a newline).
  void finish();

  io::ProgressCallback callback();

 private:
  std::string line(const io::LoadProgress& progress) const;

  std::ostream& out_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::map<std::string, std::uint64_t> bytes_per_destination_;
  int last_tenth_ = -1;
  bool drawn_ = false;
};

// Whether stderr is a terminal (progress drawn in place).
bool stderr_is_terminal();

}  // namespace strata::cli

#include "progress_bar.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <ostream>
#include <vector>

#include "strata/placement/memory.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Redrawing more often than this only costs time on a fast load.
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr int kBarWidth = 24;

std::string bar(double fraction) {
  const int filled = static_cast<int>(fraction * kBarWidth);
  return "[" + std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(kBarWidth - filled), '.') + "]";
}

}  // namespace

ProgressBar::ProgressBar(std::ostream& out, bool terminal)
    : out_(out), terminal_(terminal), start_(Clock::now()), last_draw_(start_) {}

std::string ProgressBar::line(const io::LoadProgress& progress) const {
  const double fraction = progress.bytes_total == 0 ? 1.0
                                                    : static_cast<double>(progress.bytes_done) /
                                                          static_cast<double>(progress.bytes_total);
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  std::vector<std::string> parts;
  for (const auto& [destination, bytes] : bytes_per_destination_) {
    parts.push_back(fmt::format("{} {}", destination,
                                placement::format_bytes(static_cast<std::int64_t>(bytes))));
  }
  return fmt::format("loading {} {:3.0f}% {}/{} tensors, {:.2f} GB/s: {}", bar(fraction),
                     fraction * 100.0, progress.tensors_done, progress.tensors_total,
                     seconds > 0 ? static_cast<double>(progress.bytes_done) / seconds / 1e9 : 0.0,
                     fmt::join(parts, ", "));
}

void ProgressBar::update(const io::LoadProgress& progress) {
  std::uint64_t counted = 0;
  for (const auto& [destination, bytes] : bytes_per_destination_) counted += bytes;
  bytes_per_destination_[std::string(progress.destination)] += progress.bytes_done - counted;

  const bool last = progress.tensors_done == progress.tensors_total;
  if (terminal_) {
    const auto now = Clock::now();
    if (!last && now - last_draw_ < kRedrawInterval) return;
    last_draw_ = now;
    out_ << "\r\033[K" << line(progress) << std::flush;
    drawn_ = true;
    return;
  }
  const int tenth = progress.bytes_total == 0
                        ? 10
                        : static_cast<int>(progress.bytes_done * 10 / progress.bytes_total);
  if (tenth == last_tenth_) return;
  last_tenth_ = tenth;
  out_ << line(progress) << "\n";
}

void ProgressBar::finish() {
  if (terminal_ && drawn_) out_ << "\n";
  drawn_ = false;
}

io::ProgressCallback ProgressBar::callback() {
  return [this](const io::LoadProgress& progress) { update(progress); };
}

bool stderr_is_terminal() { return isatty(fileno(stderr)) == 1; }

}  // namespace strata::cli

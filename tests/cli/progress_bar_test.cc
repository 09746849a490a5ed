// The load progress display: plain lines (the first tensor, then one per tenth of the bytes) when
// not on a terminal, bytes counted per destination, and one redrawn line finished by a newline on a
// terminal.

#include "progress_bar.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace strata::cli {
namespace {

io::LoadProgress progress(std::string_view destination, std::size_t done, std::size_t total,
                          std::uint64_t bytes_done, std::uint64_t bytes_total) {
  io::LoadProgress p;
  p.tensor = "t";
  p.destination = destination;
  p.tensors_done = done;
  p.tensors_total = total;
  p.bytes_done = bytes_done;
  p.bytes_total = bytes_total;
  return p;
}

std::size_t count_lines(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(ProgressBarTest, PipedOutputPrintsOneLinePerTenthWithBytesPerDestination) {
  std::ostringstream out;
  ProgressBar bar(out, /*terminal=*/false);
  // 100 tensors of 1 KiB: the first 40 to cuda:0, the rest to cpu.
  for (std::size_t i = 1; i <= 100; ++i) {
    bar.update(progress(i <= 40 ? "cuda:0" : "cpu", i, 100, i * 1024, 100 * 1024));
  }
  bar.finish();
  const std::string text = out.str();
  EXPECT_EQ(count_lines(text), 11u) << text;  // the first tensor (tenth 0), then tenths 1..10
  EXPECT_EQ(text.find('\r'), std::string::npos);
  const std::string last = text.substr(text.rfind('\n', text.size() - 2) + 1);
  EXPECT_NE(last.find("100%"), std::string::npos) << last;
  EXPECT_NE(last.find("100/100 tensors"), std::string::npos) << last;
  EXPECT_NE(last.find("cpu 60.00 KiB"), std::string::npos) << last;
  EXPECT_NE(last.find("cuda:0 40.00 KiB"), std::string::npos) << last;
}

TEST(ProgressBarTest, TerminalRedrawsInPlaceAndEndsWithANewline) {
  std::ostringstream out;
  ProgressBar bar(out, /*terminal=*/true);
  bar.update(progress("cpu", 1, 2, 10, 20));
  bar.update(progress("disk", 2, 2, 20, 20));  // the last update is always drawn
  bar.finish();
  const std::string text = out.str();
  EXPECT_NE(text.find('\r'), std::string::npos);
  EXPECT_EQ(count_lines(text), 1u);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("disk 10 B"), std::string::npos) << text;
}

}  // namespace
}  // namespace strata::cli

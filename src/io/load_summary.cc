#include "strata/io/load_summary.h"

#include <fmt/format.h>

namespace strata::io {

void LoadSummary::add(std::string_view destination, std::uint64_t nbytes) {
  auto it = bytes_per_destination.find(std::string(destination));
  if (it == bytes_per_destination.end()) {
    it = bytes_per_destination.emplace(std::string(destination), 0).first;
  }
  it->second += nbytes;
}

std::uint64_t LoadSummary::total_bytes() const {
  std::uint64_t total = 0;
  for (const auto& [dest, n] : bytes_per_destination) total += n;
  return total;
}

double LoadSummary::gb_per_second() const {
  return seconds > 0 ? static_cast<double>(total_bytes()) / 1e9 / seconds : 0.0;
}

std::string LoadSummary::str() const {
  std::string out = fmt::format("loaded {} tensors, {:.2f} GB in {:.2f} s ({:.2f} GB/s)", tensors,
                                static_cast<double>(total_bytes()) / 1e9, seconds, gb_per_second());
  const char* sep = ": ";
  for (const auto& [dest, n] : bytes_per_destination) {
    out += fmt::format("{}{} {:.2f} GB", sep, dest, static_cast<double>(n) / 1e9);
    sep = ", ";
  }
  return out;
}

LoadTracker::LoadTracker(std::size_t tensors_total, std::uint64_t bytes_total,
                         ProgressCallback callback)
    : start_(std::chrono::steady_clock::now()), callback_(std::move(callback)) {
  progress_.tensors_total = tensors_total;
  progress_.bytes_total = bytes_total;
}

void LoadTracker::tensor_done(std::string_view tensor, std::string_view destination,
                              std::uint64_t nbytes) {
  summary_.add(destination, nbytes);
  ++summary_.tensors;
  ++progress_.tensors_done;
  progress_.bytes_done += nbytes;
  progress_.tensor = tensor;
  progress_.destination = destination;
  if (callback_) callback_(progress_);
}

LoadSummary LoadTracker::finish() const {
  LoadSummary out = summary_;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return out;
}

}  // namespace strata::io

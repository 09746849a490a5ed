#pragma once
// Progress reporting while a checkpoint loads (the CLI draws a bar from it) and the summary a
// load returns: bytes per destination, time, throughput.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace strata::io {

struct LoadProgress {
  std::string_view tensor;       // the tensor just placed
  std::string_view destination;  // "cuda:0", "cpu", "disk", ...
  std::size_t tensors_done = 0;
  std::size_t tensors_total = 0;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
};

// Called after each tensor, from the loading thread. Must not throw; keep it cheap.
using ProgressCallback = std::function<void(const LoadProgress&)>;

struct LoadSummary {
  // Bytes written to each destination ("cuda:0", "cpu", "disk"), in the stored dtype.
  std::map<std::string, std::uint64_t> bytes_per_destination;
  std::size_t tensors = 0;
  double seconds = 0.0;

  void add(std::string_view destination, std::uint64_t nbytes);
  std::uint64_t total_bytes() const;
  // Decimal gigabytes (1e9 bytes) per second; 0 when no time elapsed.
  double gb_per_second() const;
  // "loaded 291 tensors, 16.06 GB in 3.20 s (5.02 GB/s): cpu 2.10 GB, cuda:0 13.96 GB"
  std::string str() const;
};

// Tracks a load in progress: counts tensors and bytes, calls the callback, times the whole.
class LoadTracker {
 public:
  LoadTracker(std::size_t tensors_total, std::uint64_t bytes_total, ProgressCallback callback);

  void tensor_done(std::string_view tensor, std::string_view destination, std::uint64_t nbytes);
  // The summary so far, with the time elapsed since construction.
  LoadSummary finish() const;

 private:
  std::chrono::steady_clock::time_point start_;
  LoadProgress progress_;
  ProgressCallback callback_;
  LoadSummary summary_;
};

}  // namespace strata::io

#pragma once
// `strata bench --load`: how fast a checkpoint reaches its placement, next to the limits measured
// in the same run with the engine's measuring functions (engine/machine_rates.h, as `strata
// calibrate`): pinned host-to-GPU copies, reading the shards from the page cache, and (with
// --cold) reading them from the disk with O_DIRECT, the page cache dropped for those files first.

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <vector>

#include "model_loading.h"

namespace strata::cli {

struct LoadLimits {
  std::optional<double> pinned_h2d_gb_s;  // GPU 0; none without CUDA
  double page_cache_read_gb_s = 0.0;      // the shards read with pread, in parallel
  std::optional<double> disk_read_gb_s;   // O_DIRECT reads, best of two queue depths, measured
                                          // before and after the cold load
};

struct LoadMeasurement {
  std::uint64_t bytes = 0;  // weights placed
  double seconds = 0.0;
  bool cold = false;
  double gb_per_second() const {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
  }
};

// The checkpoint's safetensors files (one, or the shards its index lists).
std::vector<std::filesystem::path> shard_files(const std::filesystem::path& model_dir);
// Asks the kernel to drop the files' pages from the page cache (posix_fadvise DONTNEED after a
// sync, which needs no privileges). Returns false when a file kept pages it could not drop.
void drop_from_page_cache(const std::vector<std::filesystem::path>& files);
// Measures the limits, then loads the model (from the page cache, then from the cold disk when
// `cold`), and prints each load next to its limit; JSON when `json`.
int run_load_bench(const std::filesystem::path& model_dir, const PlacementArgs& args, bool cold,
                   bool json, std::ostream& out, std::ostream& err);

}  // namespace strata::cli

#include "load_bench.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "strata/core/error.h"
#include "strata/engine/machine_rates.h"
#include "strata/io/checkpoint.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;
// Drops the pages of one file (its descriptor closed on every path).
void drop_file(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  STRATA_CHECK(fd >= 0, IoError, "cannot open '{}': {}", file.string(), std::strerror(errno));
  ::fdatasync(fd);  // dirty pages cannot be dropped
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

int reading_threads() {
  // As the loader: half the cores, at most 8.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp(cores / 2, 1u, 8u));
}

}  // namespace

std::vector<fs::path> shard_files(const fs::path& model_dir) {
  return io::discover_checkpoint(model_dir).shards;  // the loader's rules, its errors
}

void drop_from_page_cache(const std::vector<fs::path>& files) {
  for (const fs::path& file : files) drop_file(file);
}

int run_load_bench(const fs::path& model_dir, const PlacementArgs& args, bool cold, bool json,
                   std::ostream& out, std::ostream& err) {
  const std::vector<fs::path> files = shard_files(model_dir);
  const int threads = reading_threads();
  LoadLimits limits;
  limits.pinned_h2d_gb_s = engine::measure_h2d_gbps(std::int64_t{1} << 30);
  engine::measure_file_read_gbps(files, threads, false);  // brings the shards into the page cache
  limits.page_cache_read_gb_s = engine::measure_file_read_gbps(files, threads, false);

  std::vector<LoadMeasurement> loads;
  auto measure = [&](bool from_disk) {
    if (from_disk) drop_from_page_cache(files);
    LoadedModel loaded = load_model(model_dir, args);
    loads.push_back({loaded.loaded.load.summary.total_bytes(), loaded.load_seconds, from_disk});
    err << fmt::format("{} load: {}\n", from_disk ? "cold-disk" : "page-cache",
                       weights_per_device(loaded.loaded.load.summary));
  };
  measure(false);
  if (cold) {
    // The disk's rate depends on the queue depth, and a virtual disk may cache on its host: the
    // limit is the best O_DIRECT rate at the loader's depth and a deeper one, measured before and
    // after the cold load, so the load's share is never flattered by a low limit.
    const int deeper = std::min(4 * threads, 32);
    drop_from_page_cache(files);
    limits.disk_read_gb_s = std::max(engine::measure_file_read_gbps(files, threads, true),
                                     engine::measure_file_read_gbps(files, deeper, true));
    measure(true);
    limits.disk_read_gb_s =
        std::max(*limits.disk_read_gb_s, engine::measure_file_read_gbps(files, deeper, true));
  }

  // A load from the page cache can go no faster than reading the pages or than PCIe; from the
  // disk, no faster than the disk.
  auto limit_of = [&](const LoadMeasurement& m) {
    if (m.cold) return *limits.disk_read_gb_s;
    return limits.pinned_h2d_gb_s ? std::min(*limits.pinned_h2d_gb_s, limits.page_cache_read_gb_s)
                                  : limits.page_cache_read_gb_s;
  };
  if (json) {
    nlohmann::ordered_json report;
    report["model"] = model_dir.string();
    report["reading_threads"] = threads;
    report["pinned_h2d_gb_s"] =
        limits.pinned_h2d_gb_s ? nlohmann::ordered_json(*limits.pinned_h2d_gb_s) : nullptr;
    report["page_cache_read_gb_s"] = limits.page_cache_read_gb_s;
    report["disk_read_gb_s"] =
        limits.disk_read_gb_s ? nlohmann::ordered_json(*limits.disk_read_gb_s) : nullptr;
    report["loads"] = nlohmann::ordered_json::array();
    for (const LoadMeasurement& m : loads) {
      report["loads"].push_back({{"from", m.cold ? "disk" : "page cache"},
                                 {"bytes", m.bytes},
                                 {"seconds", m.seconds},
                                 {"gb_per_s", m.gb_per_second()},
                                 {"share_of_limit", m.gb_per_second() / limit_of(m)}});
    }
    out << report.dump(2) << "\n";
    return 0;
  }
  out << fmt::format("limits: pinned host-to-GPU {}, page-cache read {:.1f} GB/s{} ({} threads)\n",
                     limits.pinned_h2d_gb_s ? fmt::format("{:.1f} GB/s", *limits.pinned_h2d_gb_s)
                                            : std::string("n/a (no GPU)"),
                     limits.page_cache_read_gb_s,
                     limits.disk_read_gb_s
                         ? fmt::format(", disk read (O_DIRECT) {:.2f} GB/s", *limits.disk_read_gb_s)
                         : std::string(),
                     threads);
  for (const LoadMeasurement& m : loads) {
    out << fmt::format("load from {}: {:.2f} GB in {:.3f} s = {:.2f} GB/s, {:.0f}% of the limit\n",
                       m.cold ? "the disk" : "the page cache", static_cast<double>(m.bytes) / 1e9,
                       m.seconds, m.gb_per_second(), 100.0 * m.gb_per_second() / limit_of(m));
  }
  return 0;
}

}  // namespace strata::cli

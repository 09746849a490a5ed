#include "load_bench.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/io/checkpoint.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kBlock = std::size_t{8} << 20;  // as the loader's staging chunks
constexpr std::size_t kDirectAlign = 4096;            // O_DIRECT buffer and offset alignment

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct FileDescriptor {
  int fd = -1;
  FileDescriptor(const fs::path& path, int flags) : fd(::open(path.c_str(), flags)) {
    STRATA_CHECK(fd >= 0, IoError, "cannot open '{}'{}: {}{}", path.string(),
                 (flags & O_DIRECT) ? " with O_DIRECT" : "", std::strerror(errno),
                 errno == EINVAL ? " (the file system does not support O_DIRECT; put the "
                                   "checkpoint on a disk to measure cold loads)"
                                 : "");
  }
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
};

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
  for (const fs::path& file : files) {
    FileDescriptor f(file, O_RDONLY);
    ::fdatasync(f.fd);  // dirty pages cannot be dropped
    ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);
  }
}

double read_rate_gb_s(const std::vector<fs::path>& files, int threads, bool direct) {
  // Every (file, block) is one job; threads take the next job until none is left.
  struct Job {
    std::size_t file;
    std::uint64_t offset;
    std::size_t bytes;
  };
  std::vector<Job> jobs;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::uint64_t size = fs::file_size(files[i]);
    for (std::uint64_t offset = 0; offset < size; offset += kBlock) {
      jobs.push_back(
          {i, offset, static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, size - offset))});
    }
    total += size;
  }
  std::vector<std::unique_ptr<FileDescriptor>> fds;
  for (const fs::path& file : files) {
    fds.push_back(std::make_unique<FileDescriptor>(file, O_RDONLY | (direct ? O_DIRECT : 0)));
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::atomic<int> error{0};  // errno of the first failed read (errno is per thread)
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      void* raw = std::aligned_alloc(kDirectAlign, kBlock);
      if (raw == nullptr) {
        int expected = 0;
        error.compare_exchange_strong(expected, ENOMEM);
        failed = true;
        return;
      }
      std::unique_ptr<void, decltype(&std::free)> buffer(raw, &std::free);
      for (std::size_t j = next++; j < jobs.size() && !failed; j = next++) {
        const Job& job = jobs[j];
        // O_DIRECT reads whole aligned blocks; the file's last one may come back short.
        const std::size_t want =
            direct ? (job.bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign : job.bytes;
        const ssize_t got =
            ::pread(fds[job.file]->fd, buffer.get(), want, static_cast<off_t>(job.offset));
        if (got < static_cast<ssize_t>(job.bytes)) {
          int expected = 0;
          error.compare_exchange_strong(expected, got < 0 ? errno : EIO);
          failed = true;
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double seconds = seconds_since(start);
  STRATA_CHECK(!failed, IoError, "reading the checkpoint's shards{} failed: {}",
               direct ? " with O_DIRECT" : "", std::strerror(error.load()));
  return static_cast<double>(total) / seconds / 1e9;
}

std::optional<double> pinned_h2d_gb_s(std::int64_t bytes) {
  if (find_backend(DeviceType::CUDA) == nullptr) return std::nullopt;
  const Tensor host = Tensor::empty({bytes}, DType::UInt8, Device::cpu(), MemoryKind::Pinned);
  const Tensor device = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  device.copy_(host);  // first use: the driver maps the pinned pages
  double best = 0.0;
  for (int i = 0; i < 5; ++i) {
    const Clock::time_point start = Clock::now();
    device.copy_(host);
    best = std::max(best, static_cast<double>(bytes) / seconds_since(start) / 1e9);
  }
  return best;
}

int run_load_bench(const fs::path& model_dir, const PlacementArgs& args, bool cold, bool json,
                   std::ostream& out, std::ostream& err) {
  const std::vector<fs::path> files = shard_files(model_dir);
  const int threads = reading_threads();
  LoadLimits limits;
  limits.pinned_h2d_gb_s = pinned_h2d_gb_s();
  read_rate_gb_s(files, threads, false);  // brings the shards into the page cache
  limits.page_cache_read_gb_s = read_rate_gb_s(files, threads, false);

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
    limits.disk_read_gb_s =
        std::max(read_rate_gb_s(files, threads, true), read_rate_gb_s(files, deeper, true));
    measure(true);
    limits.disk_read_gb_s = std::max(*limits.disk_read_gb_s, read_rate_gb_s(files, deeper, true));
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

// Measuring the machine constants (machine_constants.h) in about 10 s. Each rate is the best of a
// few repetitions after a warm-up, over buffers larger than the caches. The cpu products go
// through ops::linear, so they measure the kernels the model runs, not an idealised loop.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <vector>

#include "engine/best_seconds.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/core/parallel.h"
#include "strata/core/tensor.h"
#include "strata/engine/machine_constants.h"
#include "strata/engine/machine_rates.h"
#include "strata/ops.h"

#if STRATA_WITH_CUDA
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#endif

namespace strata::engine {
namespace {

using Clock = std::chrono::steady_clock;

using detail::best_seconds;

double gbps(double bytes, double seconds) { return bytes / seconds / 1e9; }

void report(const MeasureOptions& options, const std::string& what, double value,
            const char* unit) {
  if (options.progress != nullptr)
    *options.progress << fmt::format("  {:<34} {:10.2f} {}\n", what, value, unit);
}

// The bf16 matrix-vector rate of ops::linear over [rows, 4096] weights, on all threads or
// (single) on one: run inside one chunk of a parallel loop, where nested loops run serially.
double measure_gemv(std::int64_t bytes, bool single) {
  const std::int64_t k = 4096, rows = std::max<std::int64_t>(bytes / (2 * k), 64);
  const Tensor weight = Tensor::full({rows, k}, 0.01, DType::BFloat16);
  const Tensor x = Tensor::full({1, k}, 1.0, DType::BFloat16);
  const auto run = [&] { (void)ops::linear(x, weight); };
  const double seconds = best_seconds(3, [&] {
    if (!single) {
      run();
      return;
    }
    parallel_for(2, 1, [&](std::int64_t begin, std::int64_t) {
      if (begin == 0) run();
    });
  });
  return gbps(static_cast<double>(weight.nbytes()), seconds);
}

// The same over the shapes a decoder layer runs: eight [4096, 4096] bf16 weights (256 MiB, out of
// the caches) as eight separate products, so each op's start and its tail are in the rate, as in
// a 7B-class layer's q/k/v/o projections.
double measure_gemv_layers(std::int64_t bytes) {
  const std::int64_t k = 4096;
  const std::int64_t count = std::max<std::int64_t>(bytes / (2 * k * k), 1);
  std::vector<Tensor> weights;
  for (std::int64_t i = 0; i < count; ++i)
    weights.push_back(Tensor::full({k, k}, 0.01, DType::BFloat16));
  const Tensor x = Tensor::full({1, k}, 1.0, DType::BFloat16);
  const double seconds = best_seconds(3, [&] {
    for (const Tensor& w : weights) (void)ops::linear(x, w);
  });
  return gbps(static_cast<double>(count * k * k * 2), seconds);
}

// The fixed cost of one small cpu op (argument checks, allocation, the thread pool's dispatch and
// wake-up): a [1, 4096] x [16, 4096] product and a 4096-element add, timed back to back.
double measure_cpu_op_us() {
  const Tensor w = Tensor::full({16, 4096}, 0.01, DType::BFloat16);
  const Tensor x = Tensor::full({1, 4096}, 1.0, DType::BFloat16);
  const Tensor a = Tensor::full({4096}, 1.0, DType::Float32);
  constexpr int kReps = 1000;
  const double seconds = best_seconds(2, [&] {
    for (int i = 0; i < kReps; ++i) {
      (void)ops::linear(x, w);
      (void)ops::add(a, a);
    }
  });
  return seconds / (2.0 * kReps) * 1e6;
}

double measure_cpu_gemm() {
  const std::int64_t m = 64, k = 4096, n = 4096;
  const Tensor weight = Tensor::full({n, k}, 0.01, DType::BFloat16);
  const Tensor x = Tensor::full({m, k}, 1.0, DType::BFloat16);
  const double seconds = best_seconds(2, [&] { (void)ops::linear(x, weight); });
  return 2.0 * m * n * k / seconds / 1e9;
}

struct FileRates {
  double page_cache = 0;
  double disk = 0;
};

// Writes a scratch file, copies it from a mapping (in the page cache, on all threads, as the disk
// pipeline's workers do), then reads it with O_DIRECT (from the disk). Without O_DIRECT (tmpfs),
// the disk rate is the page-cache rate.
FileRates measure_file(const MeasureOptions& options) {
  const std::filesystem::path dir =
      options.scratch_dir.empty() ? std::filesystem::temp_directory_path() : options.scratch_dir;
  const std::filesystem::path path = dir / fmt::format("strata-calibrate-{}.bin", ::getpid());
  const std::int64_t chunk = std::int64_t{8} << 20;
  const std::int64_t bytes = std::max(options.file_bytes / chunk, std::int64_t{1}) * chunk;
  struct Cleanup {
    std::filesystem::path path;
    ~Cleanup() {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  } cleanup{path};
  std::vector<char> block(static_cast<std::size_t>(chunk), 7);
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    STRATA_CHECK(fd >= 0, IoError, "calibrate: cannot create {} ({})", path.string(),
                 std::strerror(errno));
    bool ok = true;
    for (std::int64_t at = 0; at < bytes && ok; at += chunk) {
      ok = ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size());
    }
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    STRATA_CHECK(ok, IoError, "calibrate: cannot write {} ({})", path.string(),
                 std::strerror(errno));
  }
  FileRates out;
  {
    const int fd = ::open(path.c_str(), O_RDONLY);
    STRATA_CHECK(fd >= 0, IoError, "calibrate: cannot open {}", path.string());
    void* map = ::mmap(nullptr, static_cast<std::size_t>(bytes), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    STRATA_CHECK(map != MAP_FAILED, IoError, "calibrate: cannot map {}", path.string());
    // As the disk workers read (prefetch.h): half the cores, at most 8 threads, each copying its
    // share chunk by chunk into two staging chunks of its own that it reuses.
    const std::int64_t workers = std::clamp<std::int64_t>(num_threads() / 2, 1, 8);
    const std::int64_t chunks = bytes / chunk;
    std::vector<char> staging(static_cast<std::size_t>(workers * 2 * chunk));
    const char* src = static_cast<const char*>(map);
    const double seconds = best_seconds(2, [&] {
      parallel_for(workers, 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t w = begin; w < end; ++w) {
          for (std::int64_t c = w, n = 0; c < chunks; c += workers, ++n) {
            char* dst = staging.data() + (w * 2 + n % 2) * chunk;
            std::memcpy(dst, src + c * chunk, static_cast<std::size_t>(chunk));
          }
        }
      });
    });
    ::munmap(map, static_cast<std::size_t>(bytes));
    out.page_cache = gbps(static_cast<double>(bytes), seconds);
  }
  out.disk = out.page_cache;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd >= 0) {
    void* buffer = std::aligned_alloc(4096, static_cast<std::size_t>(chunk));
    const auto start = Clock::now();
    std::int64_t read_total = 0;
    for (std::int64_t at = 0; at < bytes; at += chunk) {
      const ssize_t got = ::pread(fd, buffer, static_cast<std::size_t>(chunk), at);
      if (got <= 0) break;
      read_total += got;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::free(buffer);
    ::close(fd);
    if (read_total == bytes) out.disk = gbps(static_cast<double>(bytes), std::max(seconds, 1e-9));
  }
  return out;
}

#if STRATA_WITH_CUDA
// GB/s of `traffic` bytes per copy of src into dst on GPU 0's compute stream.
double copy_gbps(const Tensor& dst, const Tensor& src, double traffic) {
  const cuda::Stream& stream = cuda::Stream::compute(0);
  return gbps(traffic, best_seconds(3, [&] {
                dst.copy_(src);
                stream.synchronize();
              }));
}

// Pinned host memory and a GPU buffer of `bytes` each, for host -> GPU copies.
struct H2dBuffers {
  Tensor pinned, on_gpu;
};
H2dBuffers h2d_buffers(std::int64_t bytes) {
  H2dBuffers b{Tensor::empty({bytes}, DType::UInt8, Device::cpu(), MemoryKind::Pinned),
               Tensor::empty({bytes}, DType::UInt8, Device::cuda(0))};
  std::memset(b.pinned.data_ptr(), 1, static_cast<std::size_t>(bytes));
  return b;
}

// A split step reads host memory twice at once: the cpu's matrix-vector products over its share
// of the rows and the copy engine's DMA of the rest. Measured as a split step runs them: the
// products over a fraction f of 256 MiB of weights while the other 1 - f (pinned) copies to the
// GPU, both started together; each rate is its bytes over the time it took (the copy's from
// timing events around it, so it includes any part that ran alone after the products). The
// fraction starts from the rates alone and is rebalanced from each run's rates, so both finish at
// about the same time, under each other throughout. Median of five runs: the rates under
// contention vary from run to run, and the best of a few overstated them (session 5's plan picked
// split on this host's best run, where split measured slower than the cpu).
void measure_split_rates(MachineConstants& c, const MeasureOptions& options,
                         const cuda::Stream& stream) {
  // Weights and pinned source out of the cache, as a layer's are.
  const auto [pinned, on_gpu] = h2d_buffers(options.host_bytes);
  const std::int64_t k = 4096, bytes = static_cast<std::int64_t>(pinned.nbytes());
  const std::int64_t total_rows = std::max<std::int64_t>(bytes / (2 * k), 256);
  const Tensor weight = Tensor::full({total_rows, k}, 0.01, DType::BFloat16);
  const Tensor x = Tensor::full({1, k}, 1.0, DType::BFloat16);
  (void)ops::linear(x, weight);
  const double cpu_alone =
      c.cpu_gemv_layer_gbps > 0 ? c.cpu_gemv_layer_gbps : c.cpu_gemv_rate(c.threads);
  double fraction = cpu_alone > 0 && c.h2d_gbps > 0 ? cpu_alone / (cpu_alone + c.h2d_gbps) : 0.5;
  cuda::Event begin(stream.device(), /*enable_timing=*/true);
  cuda::Event end(stream.device(), /*enable_timing=*/true);
  std::vector<double> cpu_rates, copy_rates;
  for (int rep = 0; rep < 5; ++rep) {
    const std::int64_t rows = std::clamp<std::int64_t>(
        static_cast<std::int64_t>(fraction * static_cast<double>(total_rows)), 64, total_rows - 64);
    const Tensor cpu_rows = weight.narrow(0, 0, rows);
    const std::int64_t copied = std::min<std::int64_t>(bytes, (total_rows - rows) * 2 * k);
    const Tensor src = pinned.narrow(0, 0, copied), dst = on_gpu.narrow(0, 0, copied);
    const auto start = Clock::now();
    begin.record(stream);
    dst.copy_(src, /*non_blocking=*/true);
    end.record(stream);
    (void)ops::linear(x, cpu_rows);
    const double cpu_s = std::chrono::duration<double>(Clock::now() - start).count();
    end.synchronize();
    const double copy_s = std::max(1e-9, begin.elapsed_ms(end) * 1e-3);
    const double cpu = gbps(static_cast<double>(cpu_rows.nbytes()), std::max(cpu_s, 1e-9));
    const double copy = gbps(static_cast<double>(copied), copy_s);
    cpu_rates.push_back(cpu);
    copy_rates.push_back(copy);
    fraction = cpu / (cpu + copy);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  c.split_cpu_gemv_gbps = median(cpu_rates);
  c.split_h2d_gbps = median(copy_rates);
  report(options, "cpu matrix-vector under H2D copies", c.split_cpu_gemv_gbps, "GB/s");
  report(options, "pinned H2D under cpu products", c.split_h2d_gbps, "GB/s");
}

void measure_gpu(MachineConstants& c, const MeasureOptions& options) {
  const int device = 0;
  const Device gpu = Device::cuda(device);
  const cuda::Stream& stream = cuda::Stream::compute(device);
  const std::int64_t bytes = std::int64_t{256} << 20;
  const auto [pinned, on_gpu] = h2d_buffers(bytes);
  c.h2d_gbps = copy_gbps(on_gpu, pinned, static_cast<double>(bytes));
  report(options, "pinned host -> GPU", c.h2d_gbps, "GB/s");
  c.gpu_hbm_gbps = *measure_gpu_hbm_gbps(std::int64_t{1} << 30);
  report(options, "GPU memory (copy, read + write)", c.gpu_hbm_gbps, "GB/s");
  c.gpu_gemm_gflops = *measure_gpu_gemm_gflops(8192);
  report(options, "GPU bf16 GEMM", c.gpu_gemm_gflops, "GFLOP/s");

  const Tensor small_host = Tensor::empty({4096}, DType::UInt8, Device::cpu(), MemoryKind::Pinned);
  const Tensor small_gpu = Tensor::empty({4096}, DType::UInt8, gpu);
  const int reps = 50;
  const double round = best_seconds(1, [&] {
    for (int i = 0; i < reps; ++i) {
      small_gpu.copy_(small_host);
      stream.synchronize();
      small_host.copy_(small_gpu);
      stream.synchronize();
    }
  });
  c.transfer_latency_us = round / (2.0 * reps) * 1e6;
  report(options, "small host <-> GPU copy", c.transfer_latency_us, "us");

  // Back-to-back small GPU ops: what each kernel launch of a decode step costs.
  const Tensor tiny = Tensor::full({4096}, 1.0, DType::Float32, gpu);
  constexpr int kLaunches = 2000;
  const double launches = best_seconds(2, [&] {
    for (int i = 0; i < kLaunches; ++i) (void)ops::add(tiny, tiny);
    stream.synchronize();
  });
  c.gpu_launch_us = launches / kLaunches * 1e6;
  report(options, "GPU op launch", c.gpu_launch_us, "us");

  measure_split_rates(c, options, stream);
  // Optional: a failure leaves it unmeasured (the cost model then leaves the term out).
  try {
    c.moe_block_us = measure_moe_block_us().value_or(0.0);
  } catch (const Error& e) {
    log_warning(fmt::format("strata calibrate: the MoE block cost was not measured: {}", e.what()));
  }
  report(options, "MoE block's fixed cost at decode", c.moe_block_us, "us");
}
#endif

}  // namespace

double measure_host_read_gbps(std::int64_t bytes) {
  const std::int64_t words = bytes / 8;
  std::vector<std::uint64_t> buffer(static_cast<std::size_t>(words), 1);
  std::atomic<std::uint64_t> sink{0};
  const double seconds = best_seconds(3, [&] {
    parallel_for(words, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
      std::uint64_t sum = 0;
      for (std::int64_t i = begin; i < end; ++i) sum += buffer[static_cast<std::size_t>(i)];
      sink.fetch_add(sum, std::memory_order_relaxed);
    });
  });
  return gbps(static_cast<double>(words * 8), seconds);
}

std::optional<double> measure_h2d_gbps(std::int64_t bytes) {
#if STRATA_WITH_CUDA
  if (!cuda::is_available()) return std::nullopt;
  const auto [pinned, on_gpu] = h2d_buffers(bytes);
  return copy_gbps(on_gpu, pinned, static_cast<double>(bytes));
#else
  (void)bytes;
  return std::nullopt;
#endif
}

std::optional<double> measure_gpu_hbm_gbps(std::int64_t bytes) {
#if STRATA_WITH_CUDA
  if (!cuda::is_available()) return std::nullopt;
  const Tensor a = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  const Tensor b = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  return copy_gbps(b, a, 2.0 * static_cast<double>(bytes));  // read + write
#else
  (void)bytes;
  return std::nullopt;
#endif
}

std::optional<double> measure_gpu_gemm_gflops(std::int64_t n) {
#if STRATA_WITH_CUDA
  if (!cuda::is_available()) return std::nullopt;
  const int device = 0;
  const cuda::Stream& stream = cuda::Stream::compute(device);
  const Tensor m = Tensor::full({n, n}, 0.01, DType::BFloat16, Device::cuda(device));
  const double seconds = best_seconds(3, [&] {
    (void)ops::matmul(m, m);
    stream.synchronize();
  });
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / seconds /
         1e9;
#else
  (void)n;
  return std::nullopt;
#endif
}

namespace {

// The last-level cache's size in bytes (0 when the system does not say).
std::int64_t last_level_cache_bytes() {
  std::int64_t bytes = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  bytes = std::max<std::int64_t>(bytes, ::sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  for (int index = 0; index < 8; ++index) {  // cpu0's caches; sizes like "300M", "32768K"
    std::ifstream in(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", index));
    std::int64_t value = 0;
    char unit = 0;
    if (!(in >> value)) continue;
    in >> unit;
    const std::int64_t scale = unit == 'K'   ? 1 << 10
                               : unit == 'M' ? 1 << 20
                               : unit == 'G' ? 1 << 30
                                             : 1;
    bytes = std::max(bytes, value * scale);
  }
  return bytes;
}

}  // namespace

std::int64_t host_buffer_bytes() {
  constexpr std::int64_t kMin = std::int64_t{256} << 20, kMax = std::int64_t{4} << 30;
  return std::clamp(4 * last_level_cache_bytes(), kMin, kMax);
}

MachineConstants measure_machine_constants(const MeasureOptions& given) {
  MeasureOptions options = given;
  if (options.host_bytes <= 0) options.host_bytes = host_buffer_bytes();
  MachineConstants c;
  c.threads = num_threads();
  c.host_read_gbps = measure_host_read_gbps(options.host_bytes);
  report(options, "host memory read", c.host_read_gbps, "GB/s");
  if (c.threads > 1) {
    c.cpu_gemv_gbps.emplace_back(1, measure_gemv(options.host_bytes / 4, /*single=*/true));
    report(options, "cpu bf16 matrix-vector, 1 thread", c.cpu_gemv_gbps.back().second, "GB/s");
  }
  c.cpu_gemv_gbps.emplace_back(c.threads, measure_gemv(options.host_bytes, /*single=*/false));
  report(options, fmt::format("cpu bf16 matrix-vector, {} threads", c.threads),
         c.cpu_gemv_gbps.back().second, "GB/s");
  c.cpu_gemv_layer_gbps = measure_gemv_layers(options.host_bytes);
  report(options, "cpu bf16 matrix-vector, layer shapes", c.cpu_gemv_layer_gbps, "GB/s");
  c.cpu_op_us = measure_cpu_op_us();
  report(options, "cpu small op", c.cpu_op_us, "us");
  try {  // optional, as the block cost below
    c.cpu_expert_gbps = measure_cpu_expert_gbps(options.host_bytes);
  } catch (const Error& e) {
    log_warning(
        fmt::format("strata calibrate: the cpu experts' rate was not measured: {}", e.what()));
  }
  report(options, "cpu experts of a MoE decode step", c.cpu_expert_gbps, "GB/s");
  c.cpu_gemm_gflops = measure_cpu_gemm();
  report(options, "cpu bf16 product, 64 rows", c.cpu_gemm_gflops, "GFLOP/s");
  const FileRates file = measure_file(options);
  c.page_cache_read_gbps = file.page_cache;
  c.disk_read_gbps = file.disk;
  report(options, "file in the page cache", c.page_cache_read_gbps, "GB/s");
  report(options, "file from the disk (O_DIRECT)", c.disk_read_gbps, "GB/s");
#if STRATA_WITH_CUDA
  if (cuda::is_available()) measure_gpu(c, options);
#endif
  return c;
}

}  // namespace strata::engine

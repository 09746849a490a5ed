// CPU linear: the decode matrix-vector product (memory-bound: weight bytes / time is the figure
// of merit) next to the machine's own memory bandwidth, measured here with a streaming read and
// memcpy over buffers larger than the last-level cache, plus a GEMM for context.
//
//   linear_bench [--benchmark_filter=...]
//
// "cold" cases cycle through enough distinct weight matrices (512 MiB) that each one comes from
// DRAM, as in real decoding where every layer's weights are read once per token; "hot" cases
// reuse one matrix (it may sit in the last-level cache). The summary at the end prints the
// matvec bandwidth as a fraction of the streaming-read bandwidth.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cpu/simd.h"
#include "strata/core/parallel.h"
#include "strata/ops.h"

namespace {

using strata::DType;
using strata::Tensor;

constexpr std::int64_t kColdBytes = std::int64_t{512} << 20;

// Uniform values in [-1, 1) without the test helpers (a fast LCG; the values do not matter).
Tensor random_matrix(std::int64_t rows, std::int64_t cols, DType dtype, std::uint64_t seed) {
  Tensor t = Tensor::empty({rows, cols}, DType::Float32);
  float* p = t.data<float>();
  std::uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = static_cast<float>(static_cast<std::int64_t>(state >> 40) - (1 << 23)) / (1 << 23);
  }
  return t.to(dtype);
}

void bm_linear(benchmark::State& state, DType dtype, std::int64_t m, std::int64_t n, std::int64_t k,
               bool cold) {
  const Tensor probe = Tensor::empty({0}, dtype);
  const std::int64_t weight_bytes = n * k * static_cast<std::int64_t>(probe.element_size());
  const std::int64_t copies = cold ? std::max<std::int64_t>(1, kColdBytes / weight_bytes) : 1;
  std::vector<Tensor> weights;
  for (std::int64_t i = 0; i < copies; ++i) weights.push_back(random_matrix(n, k, dtype, i + 1));
  const Tensor x = random_matrix(m, k, dtype, 99);
  std::int64_t next = 0;
  for (auto _ : state) {
    const Tensor y = strata::ops::linear(x, weights[next]);
    benchmark::DoNotOptimize(y.data_ptr());
    next = (next + 1) % copies;
  }
  using benchmark::Counter;
  state.counters["GFLOP"] = Counter(2e-9 * m * n * k, Counter::kIsIterationInvariantRate);
  state.counters["GB"] = Counter(1e-9 * weight_bytes, Counter::kIsIterationInvariantRate);
  state.SetLabel(strata::cpu::simd::kernels().name);
}

// The physical limit for a matvec: read a buffer far larger than the caches, on every core.
// glibc's memchr (vectorised for the CPU at hand) looking for a byte that is not there reads at
// the hardware's pace.
void bm_stream_read(benchmark::State& state) {
  const std::int64_t bytes = kColdBytes * 2;
  std::unique_ptr<char[]> buffer(new char[bytes]);
  std::memset(buffer.get(), 1, bytes);
  for (auto _ : state) {
    strata::parallel_for(bytes, 1 << 20, [&](std::int64_t begin, std::int64_t end) {
      benchmark::DoNotOptimize(std::memchr(buffer.get() + begin, 0, end - begin));
    });
  }
  state.counters["GB"] =
      benchmark::Counter(1e-9 * bytes, benchmark::Counter::kIsIterationInvariantRate);
}

// memcpy of a buffer far larger than the caches, on every core (GB copied per second).
void bm_memcpy(benchmark::State& state) {
  const std::int64_t bytes = kColdBytes;
  std::unique_ptr<char[]> src(new char[bytes]), dst(new char[bytes]);
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 2, bytes);
  for (auto _ : state) {
    strata::parallel_for(bytes, 1 << 20, [&](std::int64_t begin, std::int64_t end) {
      std::memcpy(dst.get() + begin, src.get() + begin, end - begin);
    });
    benchmark::ClobberMemory();
  }
  state.counters["GB"] =
      benchmark::Counter(1e-9 * bytes, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  const auto add = [](const char* name, DType dtype, std::int64_t m, bool cold) {
    benchmark::RegisterBenchmark(name, bm_linear, dtype, m, 4096, 4096, cold)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  };
  add("linear/bf16/matvec_4096x4096/cold", DType::BFloat16, 1, true);
  add("linear/bf16/matvec_4096x4096/hot", DType::BFloat16, 1, false);
  add("linear/f16/matvec_4096x4096/cold", DType::Float16, 1, true);
  add("linear/f32/matvec_4096x4096/cold", DType::Float32, 1, true);
  add("linear/f32/matvec_4096x4096/hot", DType::Float32, 1, false);
  add("linear/bf16/M4_4096x4096/cold", DType::BFloat16, 4, true);
  add("linear/bf16/M4_4096x4096/hot", DType::BFloat16, 4, false);
  add("linear/bf16/M64_4096x4096/gemm", DType::BFloat16, 64, false);
  add("linear/f32/M64_4096x4096/gemm", DType::Float32, 64, false);
  benchmark::RegisterBenchmark("memory/stream_read_1GiB", bm_stream_read)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("memory/memcpy_512MiB", bm_memcpy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// Prints the usual table and remembers each run's GB/s for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      const auto it = run.counters.find("GB");
      if (it != run.counters.end()) gbps_[run.benchmark_name()] = it->second.value;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    const double read = lookup("memory/stream_read_1GiB");
    const double copy = lookup("memory/memcpy_512MiB");
    std::printf("\nthreads: %d, kernels: %s\n", strata::num_threads(),
                strata::cpu::simd::kernels().name);
    std::printf("memory: stream read %.1f GB/s, memcpy %.1f GB/s (bytes copied)\n", read, copy);
    for (const auto& [name, gbps] : gbps_) {
      if (name.rfind("linear/", 0) != 0 || name.find("gemm") != std::string::npos) continue;
      std::printf("%-40s %7.1f GB/s of weights", name.c_str(), gbps);
      if (read > 0) std::printf(" = %3.0f%% of stream read", 100.0 * gbps / read);
      if (copy > 0) std::printf(", %3.0f%% of memcpy", 100.0 * gbps / copy);
      std::printf("\n");
    }
  }

 private:
  double lookup(const std::string& prefix) const {
    for (const auto& [name, gbps] : gbps_) {
      if (name.rfind(prefix, 0) == 0) return gbps;
    }
    return 0.0;
  }
  std::map<std::string, double> gbps_;
};

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

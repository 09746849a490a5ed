// CPU decode kernels against the host's own memory bandwidth, measured in the same run.
//
//   cpu_gemv_bench [--seconds 0.5] [--cold-mib 2048] [--dtypes bf16] [--batches 1,4,16]
//                  [--shapes 4096x4096,11008x4096,4096x11008,32000x4096] [--no-attention]
//                  [--read-only]
//
// 1. Host read bandwidth: every pool thread reads its share of a --cold-mib buffer (far larger
//    than any last-level cache) with glibc's memchr, vectorised for the CPU at hand, looking for
//    a byte that is not there. Median of several passes. --read-only stops after this (for
//    bench/reference/compare_cpu_decode.py).
// 2. ops::linear (decode: 1..16 rows of x) for Llama-2-7B's shapes ([out, in]: q/k/v/o
//    4096x4096, gate/up 11008x4096, down 4096x11008, lm_head 32000x4096). Each call uses the
//    next of several weight matrices cut from one --cold-mib buffer, so every matrix comes from
//    DRAM, as in decoding, where each layer is read once per token. Reported: the median time of
//    a call, the weight bytes per second, and that as a share of the read bandwidth.
// 3. Decode attention (1 query token) over a bf16 KV cache, MHA (32 heads) and GQA (32 query
//    heads on 8 kv heads), K and V bytes per second, cycling through caches the same way.
// 4. The sum for one 7B token: 32 layers of the seven projections plus lm_head at batch 1, as
//    ms/token and share of the read bandwidth (attention excluded: it depends on the context).
//
// The figure of merit is the percentage: it is stable where absolute numbers move with the
// machine's load (a shared 2-core VM moves +-30% between runs).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_cli.h"
#include "cpu/simd.h"
#include "strata/core/parallel.h"
#include "strata/ops.h"

namespace {

using strata::DType;
using strata::Tensor;
using Clock = std::chrono::steady_clock;

struct Options {
  double seconds = 0.5;
  std::int64_t cold_mib = 2048;
  std::vector<std::string> dtypes = {"bf16"};
  std::vector<std::int64_t> batches = {1, 4, 16};
  std::vector<strata::bench::MatrixShape> shapes = {
      {4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}};
  bool attention = true;
  bool read_only = false;
};

// Exits (CLI11's message and code) on --help or bad arguments.
Options parse(int argc, char** argv) {
  Options o;
  CLI::App app("CPU decode kernels (linear, attention) against the host read bandwidth");
  strata::bench::add_timing_options(app, o.seconds, o.cold_mib);
  app.add_option("--dtypes", o.dtypes, "weight dtypes (comma list)")
      ->delimiter(',')
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  strata::bench::add_batches_option(app, o.batches);
  strata::bench::add_shapes_option(app, o.shapes);
  app.add_flag("--no-attention{false}", o.attention, "skip decode attention");
  app.add_flag("--read-only", o.read_only, "stop after the host read bandwidth");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  return o;
}

DType dtype_of(const std::string& name) {
  return name == "bf16" ? DType::BFloat16 : name == "f16" ? DType::Float16 : DType::Float32;
}

// Uniform values in [-1, 1) (a fast LCG per chunk: the values do not matter, only that they are
// ordinary numbers), filled in parallel: the buffers are gigabytes.
Tensor random_tensor(const strata::Shape& shape, DType dtype, std::uint64_t seed) {
  Tensor f = Tensor::empty(shape, DType::Float32);
  float* p = f.data<float>();
  strata::parallel_for(f.numel(), 1 << 20, [&](std::int64_t begin, std::int64_t end) {
    std::uint64_t state = (seed + static_cast<std::uint64_t>(begin)) * 6364136223846793005ull;
    for (std::int64_t i = begin; i < end; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      p[i] = static_cast<float>(static_cast<std::int64_t>(state >> 40) - (1 << 23)) / (1 << 23);
    }
  });
  return dtype == DType::Float32 ? f : f.to(dtype);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Calls fn(i) for i = 0, 1, ... (after two warm-up calls) until `seconds` have passed and at
// least 5 calls were timed; returns the median seconds per call.
template <typename Fn>
double time_calls(double seconds, Fn&& fn) {
  fn(0);
  fn(1);
  std::vector<double> times;
  const auto start = Clock::now();
  for (std::int64_t i = 2;; ++i) {
    const auto t0 = Clock::now();
    fn(i);
    const auto t1 = Clock::now();
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (times.size() >= 5 && std::chrono::duration<double>(t1 - start).count() >= seconds) break;
  }
  return median(times);
}

// Host read bandwidth in GB/s: the buffer cut into 1 MiB chunks over the pool's threads.
double read_bandwidth(double seconds, std::int64_t bytes, double* best) {
  std::unique_ptr<char[]> buffer(new char[static_cast<std::size_t>(bytes)]);
  strata::parallel_for(bytes, 1 << 20, [&](std::int64_t b, std::int64_t e) {
    std::memset(buffer.get() + b, 1, static_cast<std::size_t>(e - b));
  });
  std::vector<double> rates;
  const auto pass = [&](std::int64_t) {
    const auto t0 = Clock::now();
    strata::parallel_for(bytes, 1 << 20, [&](std::int64_t b, std::int64_t e) {
      const void* hit = std::memchr(buffer.get() + b, 0, static_cast<std::size_t>(e - b));
      if (hit != nullptr) std::abort();  // never: keeps the read from being optimised away
    });
    rates.push_back(1e-9 * static_cast<double>(bytes) /
                    std::chrono::duration<double>(Clock::now() - t0).count());
  };
  time_calls(seconds, pass);
  *best = *std::max_element(rates.begin(), rates.end());
  return median(rates);
}

struct Row {
  std::string name;
  std::int64_t batch;
  double seconds;  // median per call
  double bytes;    // bytes of weight (or KV cache) read per call
};

void print_row(const Row& r, double read_gbps) {
  const double gbps = 1e-9 * r.bytes / r.seconds;
  std::printf("%-34s %5lld %9.3f %9.1f %8.0f%%\n", r.name.c_str(), static_cast<long long>(r.batch),
              1e3 * r.seconds, gbps, 100.0 * gbps / read_gbps);
  std::fflush(stdout);
}

// ops::linear with x [batch, k] against the next [n, k] slice of a cold buffer at each call.
Row bench_linear(const Options& o, DType dtype, const std::string& dtype_name, std::int64_t n,
                 std::int64_t k, std::int64_t batch, const Tensor& pool_buffer) {
  const std::int64_t copies = pool_buffer.size(0) / n;
  const Tensor x = random_tensor({batch, k}, dtype, 7);
  const double seconds = time_calls(o.seconds, [&](std::int64_t i) {
    const Tensor w = pool_buffer.narrow(0, (i % copies) * n, n);
    const Tensor y = strata::ops::linear(x, w);
    if (y.numel() != batch * n) std::abort();
  });
  const auto esize = static_cast<double>(strata::dtype_size(dtype));
  return {"linear " + dtype_name + " " + std::to_string(n) + "x" + std::to_string(k), batch,
          seconds, esize * static_cast<double>(n * k)};
}

// Decode attention: q [1, heads, 1, 128] on caches [1, kv_heads, len, 128], cycling through as
// many caches as fit in the cold budget.
Row bench_attention(const Options& o, std::int64_t heads, std::int64_t kv_heads, std::int64_t len) {
  constexpr std::int64_t kHeadDim = 128;
  const std::int64_t cache_bytes = 2 * kv_heads * len * kHeadDim * 2;  // K and V, bf16
  const std::int64_t copies =
      std::max<std::int64_t>(2, (o.cold_mib << 20) / std::max<std::int64_t>(cache_bytes, 1));
  const Tensor k_all = random_tensor({copies, kv_heads, len, kHeadDim}, DType::BFloat16, 11);
  const Tensor v_all = random_tensor({copies, kv_heads, len, kHeadDim}, DType::BFloat16, 12);
  const Tensor q = random_tensor({1, heads, 1, kHeadDim}, DType::BFloat16, 13);
  const double seconds = time_calls(o.seconds, [&](std::int64_t i) {
    const std::int64_t c = i % copies;
    const Tensor out =
        strata::ops::scaled_dot_product_attention(q, k_all.narrow(0, c, 1), v_all.narrow(0, c, 1));
    if (out.numel() != heads * kHeadDim) std::abort();
  });
  return {"attention bf16 " + std::to_string(heads) + "/" + std::to_string(kv_heads) + " heads, " +
              std::to_string(len) + " keys",
          1, seconds, static_cast<double>(cache_bytes)};
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::int64_t cold_bytes = o.cold_mib << 20;
  std::printf("threads: %d, cpu kernels: %s\n", strata::num_threads(),
              strata::cpu::simd::kernels().name);
  double best_read = 0;
  const double read = read_bandwidth(std::max(1.0, o.seconds), cold_bytes, &best_read);
  std::printf("host read bandwidth: %.1f GB/s (median; best pass %.1f), memchr over %lld MiB\n\n",
              read, best_read, static_cast<long long>(o.cold_mib));
  if (o.read_only) return 0;
  std::printf("%-34s %5s %9s %9s %9s\n", "case", "batch", "ms/call", "GB/s", "of read");

  // Batch-1 bf16 times of each shape, for the 7B token estimate.
  std::map<std::pair<std::int64_t, std::int64_t>, double> bf16_batch1;
  for (const std::string& dtype_name : o.dtypes) {
    const DType dtype = dtype_of(dtype_name);
    for (const auto& [n, k] : o.shapes) {
      // One buffer of whole [n, k] slices, at least two of them, about cold_bytes in all.
      const auto row_bytes = static_cast<std::int64_t>(strata::dtype_size(dtype)) * k;
      const std::int64_t copies = std::max<std::int64_t>(2, cold_bytes / (row_bytes * n));
      const Tensor buffer = random_tensor({copies * n, k}, dtype, 1);
      for (const std::int64_t batch : o.batches) {
        const Row row = bench_linear(o, dtype, dtype_name, n, k, batch, buffer);
        print_row(row, read);
        if (dtype == DType::BFloat16 && batch == 1) bf16_batch1[{n, k}] = row.seconds;
      }
    }
  }
  if (o.attention) {
    print_row(bench_attention(o, 32, 32, 4096), read);
    print_row(bench_attention(o, 32, 8, 16384), read);
  }

  // One Llama-2-7B token: per layer q, k, v, o (4096x4096), gate, up (11008x4096), down
  // (4096x11008); then lm_head (32000x4096).
  const std::pair<std::int64_t, std::int64_t> attn{4096, 4096}, up{11008, 4096}, down{4096, 11008},
      head{32000, 4096};
  if (bf16_batch1.count(attn) && bf16_batch1.count(up) && bf16_batch1.count(down) &&
      bf16_batch1.count(head)) {
    const double layer = 4 * bf16_batch1[attn] + 2 * bf16_batch1[up] + bf16_batch1[down];
    const double token = 32 * layer + bf16_batch1[head];
    const double bytes = 2.0 * (32.0 * (4 * 4096.0 * 4096 + 3 * 11008.0 * 4096) + 32000.0 * 4096);
    const double gbps = 1e-9 * bytes / token;
    std::printf(
        "\n7B bf16 token, linears only (32 x 7 projections + lm_head, batch 1): %.1f ms, "
        "%.2f GB at %.1f GB/s = %.0f%% of the host read bandwidth\n",
        1e3 * token, 1e-9 * bytes, gbps, 100.0 * gbps / read);
  }
  return 0;
}

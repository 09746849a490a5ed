// Quantized linear layers (decode) against the memory they read, measured in the same run.
//
//   quant_linear_bench [--device cpu|cuda|all] [--seconds 0.5] [--cold-mib 2048]
//                      [--formats bf16,fp8,fp8_tensor,awq,gptq4,gptq8,ct4,ct8] [--batches 1,4]
//                      [--shapes 4096x4096,11008x4096,4096x11008]
//
// 1. The limit: on the CPU the host read bandwidth (every pool thread memchr's its share of a
//    --cold-mib buffer); on cuda:0 the HBM bandwidth of a device-to-device copy of a --cold-mib
//    buffer (bytes read + written per second, the figure GPU vendors quote).
// 2. For Llama-2-7B's projection shapes ([out, in]), each format's packed layer (random codes,
//    group 128, docs/quantization.md) through ops::quantized_linear with `batch` rows of bf16 x,
//    and the dense bf16 ops::linear beside it. Each call uses the next of several copies of the
//    layer that together fill --cold-mib, so the packed bytes come from DRAM/HBM as in decoding.
//    Reported: median time per call, packed bytes (weights + scales + zeros) per second, and that
//    as a share of the limit.
// 3. One 7B token (32 x 7 projections at batch 1) per format: ms and the share of the limit.
// 4. --graph (cuda): the same calls also captured into a CUDA graph (>= 64 calls back to back over
//    the copies, preallocated outputs, programmatic dependent launch), as the fused decode graph
//    runs them: no host cost per call, so a small layer's time is its kernel's, not the ~9 us the
//    host takes to queue an ops::quantized_linear call (session 6: every 4096 x 4096 layer took
//    9-13 us whatever its bytes). The dense bf16 layer runs the decode graph's GEMV (pdl).
//
// The percentages are the figure of merit (absolute numbers move with the machine's load).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_cli.h"
#include "strata/core/parallel.h"
#include "strata/ops.h"
#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/cuda_ops.h"
#include "cuda/kernels.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#endif

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;
using strata::ops::QuantFormat;
using strata::ops::QuantizedWeight;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kGroup = 128;

struct Options {
  std::vector<std::string> devices = {"cpu", "cuda"};
  double seconds = 0.5;
  std::int64_t cold_mib = 2048;
  std::vector<std::string> formats = {"bf16",  "fp8",   "fp8_tensor", "awq",
                                      "gptq4", "gptq8", "ct4",        "ct8"};
  std::vector<std::int64_t> batches = {1};
  std::vector<strata::bench::MatrixShape> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  bool graph = false;
  bool qkv = false;
};

// Exits (CLI11's message and code) on --help or bad arguments.
Options parse(int argc, char** argv) {
  Options o;
  CLI::App app("Quantized linear layers (decode) against the memory they read");
  app.add_option("--device", o.devices, "cpu, cuda or all (comma list)")
      ->delimiter(',')
      ->check(CLI::IsMember({"cpu", "cuda", "all"}))
      ->capture_default_str();
  strata::bench::add_timing_options(app, o.seconds, o.cold_mib);
  app.add_option("--formats", o.formats, "packed formats (comma list)")
      ->delimiter(',')
      ->check(CLI::IsMember(Options().formats))
      ->capture_default_str();
  strata::bench::add_batches_option(app, o.batches);
  app.add_flag("--qkv", o.qkv,
               "cuda, with --graph: also three 4096x4096 layers per format (q, k, v) in one "
               "launch (cuda::quantized_linear_group_pdl) against three launches");
  app.add_flag("--graph", o.graph,
               "cuda: also time the calls captured in a CUDA graph with PDL (as in decode)");
  strata::bench::add_shapes_option(app, o.shapes);
  try {
    app.parse(argc, argv);
    for (const auto& [n, k] : o.shapes) {
      if (n % 32 != 0 || k % kGroup != 0) {
        throw CLI::ValidationError("--shapes", "shapes need out % 32 == 0 and in % 128 == 0");
      }
    }
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  if (std::find(o.devices.begin(), o.devices.end(), "all") != o.devices.end()) {
    o.devices = {"cpu", "cuda"};
  }
  return o;
}

// Pseudo-random 32-bit words (a fast LCG per chunk), filled in parallel: pools are gigabytes.
Tensor random_words(const strata::Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::Int32);
  auto* p = t.data<std::int32_t>();
  strata::parallel_for(t.numel(), 1 << 20, [&](std::int64_t begin, std::int64_t end) {
    std::uint64_t state = (seed + static_cast<std::uint64_t>(begin)) * 6364136223846793005ull;
    for (std::int64_t i = begin; i < end; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      p[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(state >> 32));
    }
  });
  return t;
}

// Scales near `value` (+-10%) in `dtype`.
Tensor random_scales(const strata::Shape& shape, double value, DType dtype, std::uint64_t seed) {
  Tensor w = random_words(shape, seed);
  Tensor f = Tensor::empty(shape, DType::Float32);
  const auto* src = w.data<std::int32_t>();
  auto* dst = f.data<float>();
  strata::parallel_for(f.numel(), 1 << 20, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      dst[i] = static_cast<float>(value * (1.0 + 0.1 * (src[i] / 2147483648.0)));
    }
  });
  return f.to(dtype);
}

// fp8 e4m3 bytes of normal-ish magnitude: random words with every byte's exponent kept below 15
// (no NaN, no values near 448).
Tensor random_fp8(std::int64_t n, std::int64_t k, std::uint64_t seed) {
  Tensor words = random_words({n, k / 4}, seed);
  auto* p = reinterpret_cast<std::uint8_t*>(words.data_ptr());
  strata::parallel_for(n * k, 1 << 20, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] &= 0xEF;  // exponent bit 3 cleared: |v| < 1
  });
  return Tensor::from_storage(words.storage(), DType::Float8E4M3FN, {n, k});
}

// One packed [n, k] layer of `format` on the cpu.
QuantizedWeight make_layer(const std::string& format, std::int64_t n, std::int64_t k,
                           std::uint64_t seed) {
  QuantizedWeight w;
  w.in_features = k;
  w.out_features = n;
  w.group_size = kGroup;
  const std::int64_t groups = k / kGroup;
  if (format == "fp8" || format == "fp8_tensor") {
    w.format = QuantFormat::FP8;
    w.bits = 8;
    w.group_size = 0;
    w.weight = random_fp8(n, k, seed);
    if (format == "fp8") {
      w.block_out = w.block_in = 128;
      w.scale = random_scales({(n + 127) / 128, (k + 127) / 128}, 0.02, DType::Float32, seed + 1);
    } else {
      w.scale = random_scales({}, 0.02, DType::Float32, seed + 1);
    }
  } else if (format == "awq") {
    w.format = QuantFormat::AWQ;
    w.weight = random_words({k, n / 8}, seed);
    w.zeros = random_words({groups, n / 8}, seed + 1);
    w.scale = random_scales({groups, n}, 0.003, DType::Float16, seed + 2);
  } else if (format == "gptq4" || format == "gptq8") {
    w.format = QuantFormat::GPTQ;
    w.bits = format == "gptq4" ? 4 : 8;
    const std::int64_t per = 32 / w.bits;
    w.weight = random_words({k / per, n}, seed);
    w.zeros = random_words({groups, n / per}, seed + 1);
    w.scale = random_scales({groups, n}, 0.003, DType::Float16, seed + 2);
    std::vector<std::int32_t> g_idx(static_cast<std::size_t>(k));
    for (std::int64_t i = 0; i < k; ++i) g_idx[i] = static_cast<std::int32_t>(i / kGroup);
    w.g_idx = Tensor::from_vector(g_idx, {k});
    // As QuantizedLinear does once per layer: without it every GPU call would copy g_idx to the
    // host to check it (a stream sync per call).
    w.g_idx_sequential = true;
  } else {  // ct4, ct8: symmetric, group 128
    w.format = QuantFormat::CompressedTensors;
    w.bits = format == "ct4" ? 4 : 8;
    w.weight = random_words({n, k * w.bits / 32}, seed);
    w.scale = random_scales({n, groups}, 0.004, DType::BFloat16, seed + 1);
  }
  return w;
}

std::int64_t packed_bytes(const QuantizedWeight& w) {
  std::int64_t bytes = static_cast<std::int64_t>(w.weight.nbytes() + w.scale.nbytes());
  if (w.zeros) bytes += static_cast<std::int64_t>(w.zeros->nbytes());
  if (w.g_idx) bytes += static_cast<std::int64_t>(w.g_idx->nbytes());
  return bytes;
}

QuantizedWeight on_device(QuantizedWeight w, Device device) {
  w.weight = w.weight.to(device);
  w.scale = w.scale.to(device);
  if (w.zeros) w.zeros = w.zeros->to(device);
  if (w.g_idx) w.g_idx = w.g_idx->to(device);
  return w;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per call of fn(i), i = 0, 1, ...: medians of timed batches of `per_batch` calls (one
// batch on the CPU is one call; on a GPU the batch is queued back to back between two events, so
// launch latency overlaps the kernels as in a decode step), until `seconds` have passed.
double time_calls(Device device, double seconds, const std::function<void(std::int64_t)>& fn) {
  std::int64_t i = 0;
  for (; i < 3; ++i) fn(i);  // warm-up
  std::vector<double> times;
  const auto start = Clock::now();
  while (times.size() < 5 ||
         std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
#ifdef STRATA_WITH_CUDA
    if (device.is_cuda()) {
      constexpr int kPerBatch = 20;
      const auto& stream = strata::cuda::Stream::compute(device.index());
      strata::cuda::Event begin(device.index(), true), end(device.index(), true);
      begin.record(stream);
      for (int c = 0; c < kPerBatch; ++c) fn(i++);
      end.record(stream);
      end.synchronize();
      times.push_back(1e-3 * begin.elapsed_ms(end) / kPerBatch);
      continue;
    }
#endif
    const auto t0 = Clock::now();
    fn(i++);
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(times);
}

// The limit of `device` in GB/s (see the header).
double measure_limit(Device device, const Options& o) {
  const std::int64_t bytes = o.cold_mib << 20;
  if (device.is_cpu()) {
    std::unique_ptr<char[]> buffer(new char[static_cast<std::size_t>(bytes)]);
    strata::parallel_for(bytes, 1 << 20, [&](std::int64_t b, std::int64_t e) {
      std::memset(buffer.get() + b, 1, static_cast<std::size_t>(e - b));
    });
    const double s = time_calls(device, std::max(0.2, o.seconds), [&](std::int64_t) {
      strata::parallel_for(bytes, 1 << 20, [&](std::int64_t b, std::int64_t e) {
        if (std::memchr(buffer.get() + b, 0, static_cast<std::size_t>(e - b)) != nullptr) {
          std::abort();  // never: keeps the read from being optimised away
        }
      });
    });
    return 1e-9 * static_cast<double>(bytes) / s;
  }
  const Tensor a = Tensor::zeros({bytes / 4}, DType::Float32, device);
  const Tensor b = Tensor::zeros({bytes / 4}, DType::Float32, device);
  const double s = time_calls(device, std::max(0.2, o.seconds), [&](std::int64_t) { b.copy_(a); });
  return 1e-9 * 2.0 * static_cast<double>(bytes) / s;
}

#ifdef STRATA_WITH_CUDA
void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Seconds per call of fn(i) captured into one CUDA graph of `calls` calls (whole cycles of the
// copies), replayed: medians of timed replays until `seconds` have passed.
double time_graph(Device device, double seconds, std::int64_t calls,
                  const std::function<void(std::int64_t)>& fn) {
  const int gpu = device.index();
  const cudaStream_t stream = strata::cuda::detail::compute_stream_handle(gpu);
  for (std::int64_t i = 0; i < calls; ++i) fn(i);  // outside the capture: scratch, caches
  cuda_ok(cudaStreamSynchronize(stream), "warm-up");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  for (std::int64_t i = 0; i < calls; ++i) fn(i);
  cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");  // warm-up
  cuda_ok(cudaStreamSynchronize(stream), "graph warm-up");
  cudaEvent_t begin = nullptr, end = nullptr;
  cuda_ok(cudaEventCreate(&begin), "event");
  cuda_ok(cudaEventCreate(&end), "event");
  std::vector<double> times;
  const auto start = Clock::now();
  while (times.size() < 5 ||
         std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    cuda_ok(cudaEventRecord(begin, stream), "record");
    cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
    cuda_ok(cudaEventRecord(end, stream), "record");
    cuda_ok(cudaEventSynchronize(end), "sync");
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, begin, end), "elapsed");
    times.push_back(1e-3 * ms / static_cast<double>(calls));
  }
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return median(times);
}
#endif

struct Result {
  double seconds = 0;
  double bytes = 0;
  double graph_seconds = 0;  // --graph on cuda, else 0
};

Result bench_layer(Device device, const Options& o, const std::string& format, std::int64_t n,
                   std::int64_t k, std::int64_t batch) {
  const Tensor x = random_scales({batch, k}, 0.5, DType::BFloat16, 7).to(device);
  std::vector<QuantizedWeight> layers;
  std::vector<Tensor> dense;
  std::int64_t bytes = 0;
  // Copies until the pool is past --cold-mib (at least two).
  for (std::uint64_t c = 0; layers.size() + dense.size() < 2 || bytes < (o.cold_mib << 20); ++c) {
    if (format == "bf16") {
      Tensor w = random_scales({n, k}, 0.02, DType::BFloat16, 100 + 10 * c).to(device);
      bytes = static_cast<std::int64_t>(w.nbytes()) * static_cast<std::int64_t>(c + 1);
      dense.push_back(w);
    } else {
      layers.push_back(on_device(make_layer(format, n, k, 100 + 10 * c), device));
      bytes = packed_bytes(layers.back()) * static_cast<std::int64_t>(c + 1);
    }
  }
  const std::int64_t copies = static_cast<std::int64_t>(std::max(layers.size(), dense.size()));
  const double seconds = time_calls(device, o.seconds, [&](std::int64_t i) {
    const std::int64_t c = i % copies;
    const Tensor y = format == "bf16" ? strata::ops::linear(x, dense[c])
                                      : strata::ops::quantized_linear(x, layers[c]);
    if (y.numel() != batch * n) std::abort();
  });
  Result r{seconds, static_cast<double>(bytes) / static_cast<double>(copies)};
#ifdef STRATA_WITH_CUDA
  if (o.graph && device.is_cuda()) {
    const Tensor out = Tensor::empty({batch, n}, DType::BFloat16, device);
    const std::int64_t calls = copies * ((64 + copies - 1) / copies);
    r.graph_seconds = time_graph(device, o.seconds, calls, [&](std::int64_t i) {
      const std::int64_t c = i % copies;
      if (format != "bf16") {
        strata::cuda::quantized_linear_pdl(x, layers[c], std::nullopt, out, true);
        return;
      }
      strata::cuda::kernels::Gemv g;
      g.type = strata::cuda::kernels::Type::BFloat16;
      g.batch = batch;
      g.k = k;
      g.x = x.data_ptr();
      g.ldx = k;
      g.groups[0] = {dense[c].data_ptr(), nullptr, out.data_ptr(), n, n};
      g.pdl = true;
      cuda_ok(strata::cuda::kernels::gemv(
                  g, strata::cuda::detail::compute_stream_handle(device.index())),
              "gemv");
    });
  }
#endif
  return r;
}

#ifdef STRATA_WITH_CUDA
// q, k, v (three 4096x4096 layers of `format`) at batch 1 inside a CUDA graph: seconds per group
// in one launch (quantized_linear_group_pdl) and in three; copies of the triple fill --cold-mib.
std::pair<double, double> bench_qkv(Device device, const Options& o, const std::string& format) {
  const std::int64_t n = 4096, k = 4096;
  const Tensor x = random_scales({1, k}, 0.5, DType::BFloat16, 7).to(device);
  std::vector<std::array<QuantizedWeight, 3>> triples;
  std::int64_t bytes = 0;
  for (std::uint64_t c = 0; triples.size() < 2 || bytes < (o.cold_mib << 20); ++c) {
    std::array<QuantizedWeight, 3> t;
    for (std::uint64_t j = 0; j < 3; ++j) {
      t[j] = on_device(make_layer(format, n, k, 100 + 10 * c + j), device);
      bytes += packed_bytes(t[j]);
    }
    triples.push_back(std::move(t));
  }
  const auto copies = static_cast<std::int64_t>(triples.size());
  const std::array<Tensor, 3> out = {Tensor::empty({1, n}, DType::BFloat16, device),
                                     Tensor::empty({1, n}, DType::BFloat16, device),
                                     Tensor::empty({1, n}, DType::BFloat16, device)};
  const std::optional<Tensor> none;
  const std::int64_t calls = copies * ((64 + copies - 1) / copies);
  const double grouped = time_graph(device, o.seconds, calls, [&](std::int64_t i) {
    const auto& t = triples[static_cast<std::size_t>(i % copies)];
    strata::cuda::quantized_linear_group_pdl(
        x, {{&t[0], &none, &out[0]}, {&t[1], &none, &out[1]}, {&t[2], &none, &out[2]}}, true);
  });
  const double separate = time_graph(device, o.seconds, calls, [&](std::int64_t i) {
    const auto& t = triples[static_cast<std::size_t>(i % copies)];
    for (std::size_t j = 0; j < 3; ++j) {
      strata::cuda::quantized_linear_pdl(x, t[j], none, out[j], true);
    }
  });
  return {grouped, separate};
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  for (const std::string& name : o.devices) {
    Device device = Device::cpu();
    if (name == "cuda") {
#ifdef STRATA_WITH_CUDA
      if (!strata::cuda::is_available()) {
        std::printf("cuda: no GPU here, skipped\n");
        continue;
      }
      device = Device::cuda(0);
#else
      std::printf("cuda: not built with STRATA_CUDA=ON, skipped\n");
      continue;
#endif
    }
    const double limit = measure_limit(device, o);
    std::printf("\n== %s: %s %.1f GB/s (threads %d)\n", name.c_str(),
                device.is_cpu() ? "host read bandwidth" : "HBM copy bandwidth (read + write)",
                limit, strata::num_threads());
    std::printf("%-12s %-12s %5s %9s %9s %9s %8s%s\n", "format", "shape", "batch", "ms/call", "MB",
                "GB/s", "of limit",
                o.graph && device.is_cuda() ? "  graph ms  GB/s  of limit" : "");
    std::map<std::string, std::map<std::pair<std::int64_t, std::int64_t>, Result>> batch1;
    for (const std::string& format : o.formats) {
      for (const auto& [n, k] : o.shapes) {
        for (const std::int64_t batch : o.batches) {
          const Result r = bench_layer(device, o, format, n, k, batch);
          const double gbps = 1e-9 * r.bytes / r.seconds;
          std::printf("%-12s %5lldx%-6lld %5lld %9.3f %9.1f %9.1f %7.0f%%", format.c_str(),
                      static_cast<long long>(n), static_cast<long long>(k),
                      static_cast<long long>(batch), 1e3 * r.seconds, 1e-6 * r.bytes, gbps,
                      100.0 * gbps / limit);
          if (r.graph_seconds > 0) {
            const double g = 1e-9 * r.bytes / r.graph_seconds;
            std::printf("  %8.4f %6.0f %7.0f%%", 1e3 * r.graph_seconds, g, 100.0 * g / limit);
          }
          std::printf("\n");
          std::fflush(stdout);
          if (batch == 1) batch1[format][{n, k}] = r;
        }
      }
    }
    // One 7B token: per layer 4 x (4096x4096), 2 x (11008x4096), 1 x (4096x11008).
    const std::pair<std::int64_t, std::int64_t> attn{4096, 4096}, up{11008, 4096},
        down{4096, 11008};
    for (auto& [format, shapes] : batch1) {
      if (!shapes.count(attn) || !shapes.count(up) || !shapes.count(down)) continue;
      const double s =
          32 * (4 * shapes[attn].seconds + 2 * shapes[up].seconds + shapes[down].seconds);
      const double bytes =
          32 * (4 * shapes[attn].bytes + 2 * shapes[up].bytes + shapes[down].bytes);
      std::printf("7B token, %s projections (batch 1): %.2f ms, %.2f GB at %.1f GB/s = %.0f%%\n",
                  format.c_str(), 1e3 * s, 1e-9 * bytes, 1e-9 * bytes / s,
                  100.0 * 1e-9 * bytes / s / limit);
      if (shapes[attn].graph_seconds > 0) {
        const double gs = 32 * (4 * shapes[attn].graph_seconds + 2 * shapes[up].graph_seconds +
                                shapes[down].graph_seconds);
        std::printf("7B token graph, %s projections (batch 1): %.2f ms at %.1f GB/s = %.0f%%\n",
                    format.c_str(), 1e3 * gs, 1e-9 * bytes / gs, 100.0 * 1e-9 * bytes / gs / limit);
      }
    }
#ifdef STRATA_WITH_CUDA
    if (o.qkv && o.graph && device.is_cuda()) {
      for (const std::string& format : o.formats) {
        if (format == "bf16") continue;
        const auto [grouped, separate] = bench_qkv(device, o, format);
        std::printf("qkv graph, %s (3 x 4096x4096, batch 1): one launch %.2f us, three %.2f us\n",
                    format.c_str(), 1e6 * grouped, 1e6 * separate);
        auto& shapes = batch1[format];
        const std::pair<std::int64_t, std::int64_t> a{4096, 4096}, u{11008, 4096}, d{4096, 11008};
        if (shapes.count(a) && shapes.count(u) && shapes.count(d) && shapes[a].graph_seconds > 0) {
          const double bytes = 32 * (4 * shapes[a].bytes + 2 * shapes[u].bytes + shapes[d].bytes);
          const double gs = 32 * (grouped + shapes[a].graph_seconds + 2 * shapes[u].graph_seconds +
                                  shapes[d].graph_seconds);
          std::printf(
              "7B token qkv-group graph, %s projections (batch 1): %.2f ms at %.1f GB/s = %.0f%%\n",
              format.c_str(), 1e3 * gs, 1e-9 * bytes / gs, 100.0 * 1e-9 * bytes / gs / limit);
        }
      }
    }
#endif
    // The same token with q/k/v and gate/up as one launch each (12288x4096, 22016x4096 layers):
    // what grouping the launches can gain.
    const std::pair<std::int64_t, std::int64_t> qkv{12288, 4096}, gate_up{22016, 4096};
    for (auto& [format, shapes] : batch1) {
      if (!shapes.count(qkv) || !shapes.count(attn) || !shapes.count(gate_up) ||
          !shapes.count(down)) {
        continue;
      }
      const auto token = [&](double Result::*field) {
        return 32 * (shapes[qkv].*field + shapes[attn].*field + shapes[gate_up].*field +
                     shapes[down].*field);
      };
      const double bytes = token(&Result::bytes);
      const double s = token(&Result::seconds), gs = token(&Result::graph_seconds);
      std::printf("7B token grouped, %s projections (batch 1): %.2f ms at %.1f GB/s = %.0f%%\n",
                  format.c_str(), 1e3 * s, 1e-9 * bytes / s, 100.0 * 1e-9 * bytes / s / limit);
      if (gs > 0) {
        std::printf(
            "7B token grouped graph, %s projections (batch 1): %.2f ms at %.1f GB/s = %.0f%%\n",
            format.c_str(), 1e3 * gs, 1e-9 * bytes / gs, 100.0 * 1e-9 * bytes / gs / limit);
      }
    }
  }
  return 0;
}

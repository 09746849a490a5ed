// The decode GEMV (src/cuda/matvec.cu) on the linear-layer shapes of the supported architectures
// (hidden 2k-8k, intermediate up to 28k, vocabulary heads 32k-152k rows), batch 1-8, bf16: the
// weight's read rate in GB/s next to a device-to-device copy measured in the same run (counted
// as bytes read + written, the usual "copy bandwidth"). Weights rotate through copies totalling
// over 512 MiB so no launch finds its matrix in the 50 MB L2. Named cuda_* so bench/CMakeLists.txt
// builds it only with the CUDA backend (issue 14 calls it gemv_bench). Usage: cuda_gemv_bench
// [--sweep | --7b].

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels.h"
#include "cuda/matvec_splitk.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#include "strata/ops.h"

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;
namespace k = strata::cuda::kernels;

cudaStream_t stream() {
  return static_cast<cudaStream_t>(strata::cuda::Stream::compute(0).native_handle());
}

// Median milliseconds per call of `calls` back-to-back calls, over `reps` timings.
double time_ms(const std::function<void(int)>& f, int calls = 20, int reps = 5) {
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  for (int i = 0; i < 3; ++i) f(i);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(start, stream());
    for (int i = 0; i < calls; ++i) f(i);
    cudaEventRecord(end, stream());
    cudaEventSynchronize(end);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, end);
    t.push_back(ms / calls);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Case {
  const char* model;
  const char* layer;
  std::int64_t n, k;
  int groups;  // 1: one weight; 2: gate/up with SiLU(gate) * up (n each); 3: q/k/v (n = q rows)
  std::int64_t kv_rows = 0;
};

struct Variant {
  const char* name;
  bool pdl, norm;
  int rows, unroll;   // 0: the default shape
  int prefetch = -1;  // Gemv::prefetch_passes
  int grid = 0;       // Gemv::grid_blocks, in blocks per SM
  bool preload = false;
  int fetchers = 0;   // Gemv::prefetch_blocks, in blocks per SM
  bool late = false;  // Gemv::late_trigger
};

// The shapes matvec_sweep.cu builds (rows per warp x loads in flight); each applies to the
// batches it was built for (gemv_shape_built).
const std::pair<int, int> kSweepShapes[] = {{1, 8}, {1, 16}, {2, 16}, {4, 8}, {2, 4}, {1, 4},
                                            {4, 4}, {2, 8},  {8, 2},  {4, 2}, {2, 2}};

}  // namespace

int main(int argc, char** argv) {
  if (!strata::cuda::is_available()) {
    std::printf("no CUDA GPU: nothing to measure\n");
    return 0;
  }
  std::printf("device: %s\n", strata::cuda::device_properties(0).name.c_str());
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const std::int64_t copy_bytes = std::int64_t{1} << 30;
  Tensor a = Tensor::empty({copy_bytes}, DType::UInt8, Device::cuda(0));
  Tensor b = Tensor::empty({copy_bytes}, DType::UInt8, Device::cuda(0));
  const double copy_ms = time_ms(
      [&](int) {
        cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), copy_bytes, cudaMemcpyDeviceToDevice, stream());
      },
      5, 5);
  const double copy_gbs = 2.0 * copy_bytes / copy_ms / 1e6;
  std::printf("copy (read + write) 1 GiB: %.0f GB/s\n", copy_gbs);
  a = Tensor();
  b = Tensor();

  const Case cases[] = {
      {"llama-2-7b", "qkv (3 in 1)", 4096, 4096, 3, 4096},
      {"llama-2-7b", "o_proj", 4096, 4096, 1},
      {"llama-2-7b", "gate/up+silu", 11008, 4096, 2},
      {"llama-2-7b", "down_proj", 4096, 11008, 1},
      {"llama-2-7b", "lm_head", 32000, 4096, 1},
      {"llama-3-8b", "qkv (3 in 1)", 4096, 4096, 3, 1024},
      {"llama-3-8b", "gate/up+silu", 14336, 4096, 2},
      {"llama-3-8b", "down_proj", 4096, 14336, 1},
      {"llama-3-8b", "lm_head", 128256, 4096, 1},
      {"qwen2.5-7b", "qkv (3 in 1)", 3584, 3584, 3, 512},
      {"qwen2.5-7b", "gate/up+silu", 18944, 3584, 2},
      {"qwen2.5-7b", "down_proj", 3584, 18944, 1},
      {"qwen2.5-7b", "lm_head", 152064, 3584, 1},
      {"smollm3-3b", "qkv (3 in 1)", 2048, 2048, 3, 512},
      {"smollm3-3b", "down_proj", 2048, 11008, 1},
      {"70b-shape", "gate/up+silu", 28672, 8192, 2},
      {"70b-shape", "down_proj", 8192, 28672, 1},
  };
  std::printf("%-11s %-13s %7s %6s %5s %9s %8s %7s\n", "model", "layer", "n", "k", "batch", "us",
              "GB/s", "of copy");
  const DType t = DType::BFloat16;
  const bool sweep = argc > 1 && std::string(argv[1]) == "--sweep";
  // --7b: the 7B shapes only, default shapes with and without programmatic dependent launch.
  const bool only_7b = argc > 1 && std::string(argv[1]) == "--7b";
  for (const Case& c : cases) {
    if ((sweep || only_7b) && std::string(c.model) != "llama-2-7b") continue;
    const std::int64_t rows_total = c.groups == 2   ? 2 * c.n
                                    : c.groups == 3 ? c.n + 2 * c.kv_rows
                                                    : c.n;
    const std::int64_t weight_bytes = rows_total * c.k * 2;
    // Enough copies that the set exceeds 512 MiB (several times the L2).
    const int copies =
        static_cast<int>(std::max<std::int64_t>(2, (std::int64_t{512} << 20) / weight_bytes + 1));
    std::vector<Tensor> weights;
    for (int i = 0; i < copies; ++i) {
      weights.push_back(Tensor::zeros({rows_total, c.k}, t, Device::cuda(0)));
    }
    const Tensor x = Tensor::zeros({8, c.k}, t, Device::cuda(0));
    const Tensor gamma = Tensor::zeros({c.k}, t, Device::cuda(0));
    const Tensor out = Tensor::empty({8, rows_total}, t, Device::cuda(0));
    // --sweep: every variant of the 7B shapes (programmatic dependent launch between the
    // back-to-back calls, the RMSNorm in the prologue where the layer has one before it, and the
    // sweep's rows x unroll shapes); otherwise the default shape with ordinary launches.
    std::vector<Variant> variants = {{"default", false, false, 0, 0}};
    if (only_7b) {
      variants.push_back({"pdl", true, false, 0, 0});
      // The next launch's blocks placed at this one's tail, fetching before their wait.
      variants.push_back({"pdl late", true, false, 0, 0, -1, 0, false, 0, true});
      variants.push_back({"pdl late prefetch1", true, false, 0, 0, 1, 0, false, 0, true});
      variants.push_back(
          {"pdl late prefetch1 first wave", true, false, 0, 0, 1, 0, false, 1, true});
    }
    if (sweep) {
      const bool normed = c.groups != 1 || std::string(c.layer) == "lm_head";
      variants.push_back({"pdl", true, false, 0, 0});
      variants.push_back({"pdl prefetch0", true, false, 0, 0, 0});
      variants.push_back({"pdl prefetch1", true, false, 0, 0, 1});
      variants.push_back({"pdl prefetch2", true, false, 0, 0, 2});
      variants.push_back({"pdl prefetch1 first wave", true, false, 0, 0, 1, 0, false, 1});
      variants.push_back({"pdl prefetch2 first wave", true, false, 0, 0, 2, 0, false, 1});
      variants.push_back({"pdl preload", true, false, 0, 0, -1, 0, true});
      variants.push_back({"pdl preload pf0", true, false, 0, 0, 0, 0, true});
      if (normed) variants.push_back({"pdl+norm", true, true, 0, 0});
      for (const int per_sm : {4}) {
        variants.push_back({"pdl grid", true, normed, 0, 0, -1, per_sm});
      }
      for (const auto& [rows, unroll] : kSweepShapes) {
        variants.push_back({"pdl", true, normed, rows, unroll});
      }
    }
    for (std::int64_t batch : {1, 2, 4, 8}) {
      for (const Variant& v : variants) {
        if (v.rows > 0 && !k::gemv_shape_built(k::Type::BFloat16, batch, v.rows, v.unroll))
          continue;
        if (v.rows > 0 && c.groups == 2 && v.rows % 2 != 0) continue;
        const bool norm = v.norm && k::gemv_fused_norm_fits(k::Type::BFloat16, batch, c.k);
        if (v.norm && !norm && v.rows == 0) continue;
        const auto launch = [&](int i) {
          const Tensor& w = weights[static_cast<std::size_t>(i % copies)];
          auto* wp = static_cast<const char*>(w.data_ptr());
          auto* op = static_cast<char*>(out.data_ptr());
          k::Gemv g;
          g.type = k::Type::BFloat16;
          g.batch = batch;
          g.k = c.k;
          g.x = x.data_ptr();
          g.ldx = c.k;
          if (c.groups == 2) {
            g.group_count = 2;
            g.groups[0] = {wp, nullptr, op, c.n, c.n};
            g.groups[1] = {wp + c.n * c.k * 2, nullptr, nullptr, c.n, c.n};
            g.epilogue = k::GemvEpilogue::SiluMul;
          } else if (c.groups == 3) {
            g.group_count = 3;
            g.groups[0] = {wp, nullptr, op, c.n, rows_total};
            g.groups[1] = {wp + c.n * c.k * 2, nullptr, op + c.n * 2, c.kv_rows, rows_total};
            g.groups[2] = {wp + (c.n + c.kv_rows) * c.k * 2, nullptr, op + (c.n + c.kv_rows) * 2,
                           c.kv_rows, rows_total};
          } else {
            g.groups[0] = {wp, nullptr, op, c.n, c.n};
          }
          g.pdl = v.pdl;
          g.rows = v.rows;
          g.unroll = v.unroll;
          g.prefetch_passes = v.prefetch;
          g.grid_blocks = v.grid * sms;
          g.preload = v.preload;
          g.prefetch_blocks = v.fetchers * sms;
          g.late_trigger = v.late;
          if (norm) g.norm_weight = gamma.data_ptr();
          if (k::gemv(g, stream()) != cudaSuccess) std::printf("gemv refused the launch\n");
        };
        const double ms = time_ms(launch);
        const double gbs = weight_bytes / ms / 1e6;
        std::string name = std::string(v.name) + (norm && v.rows > 0 ? "+norm" : "");
        if (v.rows > 0) name += " " + std::to_string(v.rows) + "x" + std::to_string(v.unroll);
        if (v.grid > 0) name += (norm ? "+norm " : " ") + std::to_string(v.grid) + "/SM";
        std::printf("%-11s %-13s %7lld %6lld %5lld %9.1f %8.0f %6.1f%%  %s\n", c.model, c.layer,
                    static_cast<long long>(rows_total), static_cast<long long>(c.k),
                    static_cast<long long>(batch), ms * 1e3, gbs, 100.0 * gbs / copy_gbs,
                    name.c_str());
      }
    }
  }
  if (only_7b) {
    // The split-K residual GEMV (matvec_splitk.h) on o_proj and down_proj at batch 1, with PDL.
    for (const std::int64_t kk : {4096, 11008}) {
      const std::int64_t n = 4096;
      const int copies = static_cast<int>((std::int64_t{512} << 20) / (n * kk * 2) + 1);
      std::vector<Tensor> weights;
      for (int i = 0; i < copies; ++i)
        weights.push_back(Tensor::zeros({n, kk}, t, Device::cuda(0)));
      const Tensor x = Tensor::zeros({1, kk}, t, Device::cuda(0));
      const Tensor h = Tensor::zeros({1, n}, t, Device::cuda(0));
      const Tensor partials = Tensor::empty({16 * n}, DType::Float32, Device::cuda(0));
      const Tensor tickets = Tensor::zeros({n}, DType::Int32, Device::cuda(0));
      for (const int split : {2, 4, 8}) {
        for (const int rows : {1, 2}) {
          const double ms = time_ms([&](int i) {
            k::GemvSplitK s;
            s.g.type = k::Type::BFloat16;
            s.g.k = kk;
            s.g.x = x.data_ptr();
            s.g.ldx = kk;
            s.g.groups[0] = {weights[static_cast<std::size_t>(i % copies)].data_ptr(), nullptr,
                             h.data_ptr(), n, n};
            s.g.epilogue = k::GemvEpilogue::AddResidual;
            s.g.residual = h.data_ptr();
            s.g.rows = rows;
            s.g.pdl = true;
            s.split = split;
            s.partials = partials.data<float>();
            s.tickets = static_cast<unsigned*>(tickets.data_ptr());
            if (k::gemv_split_k(s, stream()) != cudaSuccess) std::printf("split-K refused\n");
          });
          const double gbs = n * kk * 2 / ms / 1e6;
          std::printf("%-11s %-13s %7lld %6lld %5d %9.1f %8.0f %6.1f%%  pdl split-K %d, %d row%s\n",
                      "llama-2-7b", kk == 4096 ? "o_proj" : "down_proj", static_cast<long long>(n),
                      static_cast<long long>(kk), 1, ms * 1e3, gbs, 100.0 * gbs / copy_gbs, split,
                      rows, rows > 1 ? "s" : "");
        }
      }
    }
  }
  if (sweep || only_7b) return 0;
  // cuBLAS for the same 7B down_proj at batch 8, through ops::linear's fallback shape (9 rows).
  const Tensor w = Tensor::zeros({4096, 11008}, t, Device::cuda(0));
  const Tensor x9 = Tensor::zeros({9, 11008}, t, Device::cuda(0));
  const double ms = time_ms([&](int) { strata::ops::linear(x9, w); });
  std::printf("cuBLAS 9 rows, llama-2-7b down_proj (L2-warm): %.1f us, %.0f GB/s\n", ms * 1e3,
              4096.0 * 11008 * 2 / ms / 1e6);
  return 0;
}

// CUDA backend bandwidth and throughput next to the plain CUDA / cuBLAS calls: H2D copies from
// pinned and pageable memory, bf16 GEMM 8192^3, a 4096x11008 bf16 matrix-vector product and
// decode attention as GB/s of HBM next to a device-to-device copy. Strata and the plain call are
// timed alternately (interleaved), so drifts in clocks or host load hit both; medians.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#include "strata/ops.h"

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Milliseconds of one run of `calls` back-to-back calls of f on the compute stream of cuda:0,
// divided by `calls` (calls > 1 measures the pipelined rate, hiding host launch latency).
double run_ms(const std::function<void()>& f, int calls = 1) {
  const auto& stream = strata::cuda::Stream::compute(0);
  strata::cuda::Event start(0, true), end(0, true);
  start.record(stream);
  for (int i = 0; i < calls; ++i) f();
  end.record(stream);
  end.synchronize();
  return start.elapsed_ms(end) / calls;
}

// Median milliseconds of `reps` runs of a and of b, alternating a, b, a, b... after warm-up.
std::pair<double, double> interleaved_ms(const std::function<void()>& a,
                                         const std::function<void()>& b, int reps, int calls = 1) {
  for (int i = 0; i < 3; ++i) {
    run_ms(a, calls);
    run_ms(b, calls);
  }
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i) {
    ta.push_back(run_ms(a, calls));
    tb.push_back(run_ms(b, calls));
  }
  return {median(ta), median(tb)};
}

double single_ms(const std::function<void()>& f, int reps, int calls = 1) {
  for (int i = 0; i < 3; ++i) run_ms(f, calls);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(run_ms(f, calls));
  return median(t);
}

cudaStream_t raw_stream() {
  return static_cast<cudaStream_t>(strata::cuda::Stream::compute(0).native_handle());
}

// Uniform [-1, 1) values on cuda:0 (never constants: they hide indexing bugs and can run faster).
// A xorshift generator: hundreds of millions of values in well under a second.
Tensor random_gpu(const strata::Shape& shape, DType dtype, std::uint64_t seed) {
  Tensor host = Tensor::empty(shape, DType::Float32);
  std::uint64_t state = 0x9E3779B97F4A7C15ull * (seed + 1);
  float* p = host.data<float>();
  for (std::int64_t i = 0; i < host.numel(); ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    p[i] = static_cast<float>(state >> 40) * 0x1p-23f - 1.0f;
  }
  return host.to(Device::cuda(0), dtype);
}

void row(const char* what, double strata_value, double plain_value, const char* unit) {
  std::printf("%-46s %10.1f %10.1f %8s %6.1f%%\n", what, strata_value, plain_value, unit,
              100.0 * strata_value / plain_value);
}

}  // namespace

int main() {
  if (!strata::cuda::is_available()) {
    std::printf("no CUDA GPU: nothing to measure\n");
    return 0;
  }
  std::printf("device: %s\n", strata::cuda::device_properties(0).name.c_str());
  std::printf("%-46s %10s %10s %8s %7s\n", "measure", "strata", "plain", "unit", "ratio");
  const std::int64_t bytes = std::int64_t{1} << 28;  // 256 MiB
  Tensor gpu = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  for (auto memory : {strata::MemoryKind::Pinned, strata::MemoryKind::Pageable}) {
    Tensor host = Tensor::empty({bytes}, DType::UInt8, Device::cpu(), memory);
    host.fill_(1.0);
    const auto [ms, plain] =
        interleaved_ms([&] { gpu.copy_(host, /*non_blocking=*/true); },
                       [&] {
                         cudaMemcpyAsync(gpu.data_ptr(), host.data_ptr(), bytes,
                                         cudaMemcpyHostToDevice, raw_stream());
                       },
                       60);
    row(memory == strata::MemoryKind::Pinned ? "H2D pinned 256 MiB (GB/s, median of 60)"
                                             : "H2D pageable 256 MiB (GB/s, median of 60)",
        bytes / ms / 1e6, bytes / plain / 1e6, "GB/s");
  }
  // D2D copy: bytes read + written.
  Tensor gpu2 = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  const auto [d2d, d2d_plain] =
      interleaved_ms([&] { gpu2.copy_(gpu, true); },
                     [&] {
                       cudaMemcpyAsync(gpu2.data_ptr(), gpu.data_ptr(), bytes,
                                       cudaMemcpyDeviceToDevice, raw_stream());
                     },
                     60);
  const double copy_gbs = 2.0 * bytes / d2d_plain / 1e6;
  row("D2D copy 256 MiB (GB/s, read+write)", 2.0 * bytes / d2d / 1e6, copy_gbs, "GB/s");

  // bf16 GEMM 8192^3 via ops::matmul vs cublasGemmEx alone.
  const std::int64_t n = 8192;
  Tensor a = random_gpu({n, n}, DType::BFloat16, 1);
  Tensor b = random_gpu({n, n}, DType::BFloat16, 2);
  Tensor c = Tensor::empty({n, n}, DType::BFloat16, Device::cuda(0));
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetStream(h, raw_stream());
  const float alpha = 1.0f, beta = 0.0f;
  const auto [gemm, gemm_plain] = interleaved_ms(
      [&] { (void)strata::ops::matmul(a, b); },
      [&] {
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, b.data_ptr(), CUDA_R_16BF, n,
                     a.data_ptr(), CUDA_R_16BF, n, &beta, c.data_ptr(), CUDA_R_16BF, n,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      },
      10);
  const double flops = 2.0 * n * n * n;
  row("bf16 GEMM 8192^3 (TFLOP/s)", flops / gemm / 1e9, flops / gemm_plain / 1e9, "TFLOP/s");
  a = b = c = Tensor();

  // Matrix-vector 4096x11008 (weights [11008, 4096] as a Linear) vs the D2D copy bandwidth.
  Tensor w = random_gpu({11008, 4096}, DType::BFloat16, 3);
  Tensor x = random_gpu({1, 4096}, DType::BFloat16, 4);
  const double mv = single_ms([&] { (void)strata::ops::linear(x, w); }, 50);
  row("bf16 matvec 4096x11008 (GB/s of HBM)", w.nbytes() / mv / 1e6, copy_gbs, "GB/s");

  // Decode attention: 1 query, 32 q heads / 8 kv heads, head_dim 128. Four KV caches in turn, so
  // each call reads its cache from HBM rather than from the 50 MB L2. "pipelined" = 20 calls
  // between two events (what a decode loop sees); "one call" includes the host's launch latency.
  for (const std::int64_t keys : {std::int64_t{8192}, std::int64_t{32768}}) {
    for (const std::int64_t batch : {std::int64_t{1}, std::int64_t{4}}) {
      constexpr int kSets = 4;
      std::vector<Tensor> ks, vs;
      Tensor q = random_gpu({batch, 32, 1, 128}, DType::BFloat16, 5);
      ks.push_back(random_gpu({batch, 8, keys, 128}, DType::BFloat16, 6));
      vs.push_back(random_gpu({batch, 8, keys, 128}, DType::BFloat16, 7));
      for (int s = 1; s < kSets; ++s) {  // other buffers, same values: only the L2 matters
        ks.push_back(ks[0].clone());
        vs.push_back(vs[0].clone());
      }
      int next = 0;
      const auto attend = [&] {
        (void)strata::ops::scaled_dot_product_attention(q, ks[next], vs[next]);
        next = (next + 1) % kSets;
      };
      const double kv_bytes = 2.0 * static_cast<double>(ks[0].nbytes());
      const double piped = single_ms(attend, 30, 20);
      const double one = single_ms(attend, 50);
      char what[96];
      std::snprintf(what, sizeof what, "decode attn b%lld %lldk GQA 32/8 pipelined (GB/s)",
                    static_cast<long long>(batch), static_cast<long long>(keys / 1024));
      row(what, kv_bytes / piped / 1e6, copy_gbs, "GB/s");
      std::snprintf(what, sizeof what, "decode attn b%lld %lldk GQA 32/8 one call (GB/s)",
                    static_cast<long long>(batch), static_cast<long long>(keys / 1024));
      row(what, kv_bytes / one / 1e6, copy_gbs, "GB/s");
      // The host's share: enqueueing 50 calls (the GPU queue does not fill in that many).
      strata::cuda::Stream::compute(0).synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 50; ++i) attend();
      const auto t1 = std::chrono::steady_clock::now();
      strata::cuda::Stream::compute(0).synchronize();
      std::printf("%-46s %10.1f %10s %8s\n", "  host time to enqueue one call",
                  std::chrono::duration<double, std::micro>(t1 - t0).count() / 50, "", "us");
    }
  }
  cublasDestroy(h);
  return 0;
}

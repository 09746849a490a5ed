// CUDA backend bandwidth and throughput next to the plain CUDA / cuBLAS calls: H2D copies from
// pinned and pageable memory, bf16 GEMM 8192^3, a 4096x11008 bf16 matrix-vector product and
// decode attention as GB/s of HBM next to a device-to-device copy. Prints a table (median of 20).

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
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

// Median milliseconds of `reps` runs of f on the compute stream of cuda:0, after warm-up.
double time_ms(const std::function<void()>& f, int reps = 20) {
  const auto& stream = strata::cuda::Stream::compute(0);
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    strata::cuda::Event start(0, true), end(0, true);
    start.record(stream);
    f();
    end.record(stream);
    end.synchronize();
    ms.push_back(start.elapsed_ms(end));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

cudaStream_t raw_stream() {
  return static_cast<cudaStream_t>(strata::cuda::Stream::compute(0).native_handle());
}

void row(const char* what, double strata_value, double plain_value, const char* unit) {
  std::printf("%-44s %10.1f %10.1f %8s %6.1f%%\n", what, strata_value, plain_value, unit,
              100.0 * strata_value / plain_value);
}

}  // namespace

int main() {
  if (!strata::cuda::is_available()) {
    std::printf("no CUDA GPU: nothing to measure\n");
    return 0;
  }
  std::printf("device: %s\n", strata::cuda::device_properties(0).name.c_str());
  std::printf("%-44s %10s %10s %8s %7s\n", "measure", "strata", "plain", "unit", "ratio");
  const std::int64_t bytes = std::int64_t{1} << 28;  // 256 MiB
  Tensor gpu = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  for (auto memory : {strata::MemoryKind::Pinned, strata::MemoryKind::Pageable}) {
    Tensor host = Tensor::empty({bytes}, DType::UInt8, Device::cpu(), memory);
    host.fill_(1.0);
    const double ms = time_ms([&] { gpu.copy_(host, /*non_blocking=*/true); });
    const double plain = time_ms([&] {
      cudaMemcpyAsync(gpu.data_ptr(), host.data_ptr(), bytes, cudaMemcpyHostToDevice, raw_stream());
    });
    row(memory == strata::MemoryKind::Pinned ? "H2D pinned 256 MiB (GB/s)" : "H2D pageable 256 MiB (GB/s)",
        bytes / ms / 1e6, bytes / plain / 1e6, "GB/s");
  }
  // D2D copy: bytes read + written.
  Tensor gpu2 = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  const double d2d = time_ms([&] { gpu2.copy_(gpu, true); });
  const double d2d_plain = time_ms([&] {
    cudaMemcpyAsync(gpu2.data_ptr(), gpu.data_ptr(), bytes, cudaMemcpyDeviceToDevice, raw_stream());
  });
  const double copy_gbs = 2.0 * bytes / d2d_plain / 1e6;
  row("D2D copy 256 MiB (GB/s, read+write)", 2.0 * bytes / d2d / 1e6, copy_gbs, "GB/s");

  // bf16 GEMM 8192^3 via ops::matmul vs cublasGemmEx alone.
  const std::int64_t n = 8192;
  Tensor a = Tensor::full({n, n}, 0.5, DType::BFloat16, Device::cuda(0));
  Tensor b = Tensor::full({n, n}, 0.25, DType::BFloat16, Device::cuda(0));
  Tensor c = Tensor::empty({n, n}, DType::BFloat16, Device::cuda(0));
  const double gemm = time_ms([&] { (void)strata::ops::matmul(a, b); }, 10);
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetStream(h, raw_stream());
  const float alpha = 1.0f, beta = 0.0f;
  const double gemm_plain = time_ms([&] {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, b.data_ptr(), CUDA_R_16BF, n,
                 a.data_ptr(), CUDA_R_16BF, n, &beta, c.data_ptr(), CUDA_R_16BF, n,
                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }, 10);
  const double flops = 2.0 * n * n * n;
  row("bf16 GEMM 8192^3 (TFLOP/s)", flops / gemm / 1e9, flops / gemm_plain / 1e9, "TFLOP/s");

  // Matrix-vector 4096x11008 (weights [11008, 4096] as a Linear) vs the D2D copy bandwidth.
  Tensor w = Tensor::full({11008, 4096}, 0.5, DType::BFloat16, Device::cuda(0));
  Tensor x = Tensor::full({1, 4096}, 0.5, DType::BFloat16, Device::cuda(0));
  const double mv = time_ms([&] { (void)strata::ops::linear(x, w); });
  row("bf16 matvec 4096x11008 (GB/s of HBM)", w.nbytes() / mv / 1e6, copy_gbs, "GB/s");

  // Decode attention: 1 query, 32 q heads / 8 kv heads, 8192 cached keys, head_dim 128.
  Tensor q = Tensor::full({1, 32, 1, 128}, 0.1, DType::BFloat16, Device::cuda(0));
  Tensor k = Tensor::full({1, 8, 8192, 128}, 0.1, DType::BFloat16, Device::cuda(0));
  Tensor v = Tensor::full({1, 8, 8192, 128}, 0.1, DType::BFloat16, Device::cuda(0));
  const double att = time_ms([&] { (void)strata::ops::scaled_dot_product_attention(q, k, v); });
  row("decode attention 8k keys GQA 32/8 (GB/s)", 2.0 * k.nbytes() / att / 1e6, copy_gbs, "GB/s");
  cublasDestroy(h);
  return 0;
}

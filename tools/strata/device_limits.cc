#include "device_limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/parallel.h"
#include "strata/ops.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Waits for GPU 0's queued work: a blocking copy of one element to the host runs after it.
void wait_for(const Tensor& t) { (void)t.view({t.numel()}).narrow(0, 0, 1).to(Device::cpu()); }

double hbm_gb_s() {
  constexpr std::int64_t kBytes = std::int64_t{2} << 30;  // far beyond the L2 cache
  const Tensor src = Tensor::zeros({kBytes}, DType::UInt8, Device::cuda(0));
  const Tensor dst = Tensor::empty({kBytes}, DType::UInt8, Device::cuda(0));
  dst.copy_(src);
  double best = 0.0;
  for (int i = 0; i < 5; ++i) {
    const Clock::time_point start = Clock::now();
    dst.copy_(src);
    wait_for(dst);
    best = std::max(best, 2.0 * static_cast<double>(kBytes) / seconds_since(start) / 1e9);
  }
  return best;
}

double gemm_tflops() {
  constexpr std::int64_t kN = 8192;
  constexpr int kRepeats = 10;
  const Tensor a = Tensor::ones({kN, kN}, DType::BFloat16).to(Device::cuda(0));
  const Tensor b = Tensor::ones({kN, kN}, DType::BFloat16).to(Device::cuda(0));
  wait_for(ops::matmul(a, b));  // cuBLAS handle, workspace, heuristics
  const Clock::time_point start = Clock::now();
  Tensor c;
  for (int i = 0; i < kRepeats; ++i) c = ops::matmul(a, b);
  wait_for(c);
  return 2.0 * kN * kN * kN * kRepeats / seconds_since(start) / 1e12;
}

double host_read_gb_s() {
  constexpr std::int64_t kWords = (std::int64_t{1} << 30) / 8;  // 1 GiB
  std::vector<std::uint64_t> buffer(static_cast<std::size_t>(kWords));
  parallel_for(kWords, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) buffer[static_cast<std::size_t>(i)] = i;
  });
  double best = 0.0;
  std::atomic<std::uint64_t> sink{0};
  for (int r = 0; r < 3; ++r) {
    const Clock::time_point start = Clock::now();
    parallel_for(kWords, 1 << 20, [&](std::int64_t begin, std::int64_t end) {
      std::uint64_t sum = 0;
      for (std::int64_t i = begin; i < end; ++i) sum += buffer[static_cast<std::size_t>(i)];
      sink += sum;  // keeps the reads
    });
    best = std::max(best, static_cast<double>(kWords * 8) / seconds_since(start) / 1e9);
  }
  return best;
}

}  // namespace

DeviceLimits measure_device_limits() {
  DeviceLimits limits;
  if (find_backend(DeviceType::CUDA) != nullptr) {
    try {
      limits.hbm_gb_s = hbm_gb_s();
      limits.gemm_tflops = gemm_tflops();
    } catch (const Error&) {  // a CUDA build on a machine without a usable GPU
      limits.hbm_gb_s.reset();
      limits.gemm_tflops.reset();
    }
  }
  limits.host_read_gb_s = host_read_gb_s();
  return limits;
}

}  // namespace strata::cli

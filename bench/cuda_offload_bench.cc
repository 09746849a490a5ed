// Streams a stack of large bf16 Linear blocks from pinned CPU memory (cpu_offload) and from an
// offload folder (disk_offload, page cache) through one GPU, and reports the weight-streaming
// rate against the pinned host-to-device bandwidth measured in the same run, with and without
// prefetch. Usage: cuda_offload_bench [blocks=24] [dim=8192] [forwards=5]

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "strata/core/backend.h"
#include "strata/cuda/stream.h"
#include "strata/nn/hooks.h"
#include "strata/nn/layers.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/offload.h"

namespace {

using namespace strata;
using Clock = std::chrono::steady_clock;

std::shared_ptr<nn::Sequential> make_stack(int blocks, std::int64_t dim) {
  std::vector<std::shared_ptr<nn::Module>> layers;
  for (int i = 0; i < blocks; ++i) {
    layers.push_back(std::make_shared<nn::Linear>(dim, dim, /*bias=*/false, DType::BFloat16));
  }
  return std::make_shared<nn::Sequential>(layers);
}

double pinned_h2d_gbps(std::size_t bytes) {
  const Tensor host = Tensor::empty({static_cast<std::int64_t>(bytes)}, DType::UInt8,
                                    Device::cpu(), MemoryKind::Pinned);
  const Tensor device = Tensor::empty(host.shape(), DType::UInt8, Device::cuda(0));
  cuda::Stream stream(0);
  cuda::Event start(0, true), stop(0, true);
  cuda::copy_async(device, host, stream);  // warm-up
  constexpr int kReps = 10;
  start.record(stream);
  for (int i = 0; i < kReps; ++i) cuda::copy_async(device, host, stream);
  stop.record(stream);
  stop.synchronize();
  return kReps * static_cast<double>(bytes) / (start.elapsed_ms(stop) * 1e6);
}

// Seconds per forward (after one warm-up forward that records the order).
double time_forwards(nn::Module& model, const Tensor& input, int forwards) {
  model(input);
  const auto start = Clock::now();
  for (int i = 0; i < forwards; ++i) model(input);  // the output comes back to the cpu: synced
  return std::chrono::duration<double>(Clock::now() - start).count() / forwards;
}

void report(const char* name, double seconds, double weight_bytes, double limit) {
  const double gbps = weight_bytes / seconds / 1e9;
  fmt::print("{:<34} {:>9.2f} ms/forward {:>8.2f} GB/s {:>6.1f}% of pinned H2D\n", name,
             seconds * 1e3, gbps, 100.0 * gbps / limit);
}

}  // namespace

int main(int argc, char** argv) {
  if (find_backend(DeviceType::CUDA) == nullptr) {
    fmt::print("no CUDA device: nothing to measure\n");
    return 0;
  }
  const int blocks = argc > 1 ? std::atoi(argv[1]) : 24;
  const std::int64_t dim = argc > 2 ? std::atoll(argv[2]) : 8192;
  const int forwards = argc > 3 ? std::atoi(argv[3]) : 5;
  const double block_bytes = static_cast<double>(dim * dim * 2);
  const double weight_bytes = blocks * block_bytes;
  const Tensor input = Tensor::full({1, dim}, 0.01, DType::BFloat16);
  const double limit = pinned_h2d_gbps(static_cast<std::size_t>(block_bytes));
  fmt::print("{} x bf16 Linear({}, {}): {:.2f} GB of weights; pinned H2D {:.2f} GB/s\n", blocks,
             dim, dim, weight_bytes / 1e9, limit);

  for (int slots : {1, 2, 3}) {
    auto model = make_stack(blocks, dim);
    placement::cpu_offload(*model, {.execution_device = Device::cuda(0),
                                    .prefetch = {.staging_slots = slots}});
    const double s = time_forwards(*model, input, forwards);
    report(fmt::format("cpu_offload, {} staging slot(s)", slots).c_str(), s, weight_bytes, limit);
  }
  {
    // (b) of issue 7: about 2 GiB resident on the GPU, the rest offloaded to the cpu.
    auto model = make_stack(blocks, dim);
    const int resident = static_cast<int>((2.0 * (1 << 30)) / block_bytes);
    placement::DeviceMap map;
    for (int i = 0; i < blocks; ++i) map.emplace_back(std::to_string(i), i < resident ? "0" : "cpu");
    placement::dispatch_model(*model, map);
    const double s = time_forwards(*model, input, forwards);
    report(fmt::format("dispatch, {} blocks on GPU, rest cpu", resident).c_str(), s,
           (blocks - resident) * block_bytes, limit);
  }
  {
    const int disk_blocks = std::min(blocks, 8);
    const auto dir = std::filesystem::temp_directory_path() / "strata_offload_bench";
    std::filesystem::remove_all(dir);
    for (int slots : {1, 2}) {
      auto model = make_stack(disk_blocks, dim);
      placement::disk_offload(*model, {.offload_dir = dir, .execution_device = Device::cuda(0),
                                       .prefetch = {.staging_slots = slots}});
      const double s = time_forwards(*model, input, forwards);
      report(fmt::format("disk_offload (page cache), {} slot(s)", slots).c_str(), s,
             disk_blocks * block_bytes, limit);
    }
    std::filesystem::remove_all(dir);
  }
  return 0;
}

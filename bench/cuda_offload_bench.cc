// Issue 7's offload benchmark: a stack of bf16 Linear(dim, dim) blocks (about 8 GB by default)
// run on cuda:0 with its weights streamed from the host, in the three placements the issue names:
//   (a) cpu_offload: every block in pinned CPU memory;
//   (b) a device map with about 2 GiB of blocks resident on the GPU, the rest on the CPU;
//   (c) the same map with the rest on disk (an offload folder; reads come from the page cache
//       once the file is cached, which the warm-up forward does).
// Each line reports seconds per forward, the GB/s of weights streamed per forward, and the ratio
// to the pinned host-to-device bandwidth measured in the same run. With --json, each result is
// also printed as one JSON line starting with "RESULT " for bench/reference/compare_offload.py,
// which runs Accelerate on the same shapes and prints both side by side.
//
// Usage: cuda_offload_bench [--blocks 60] [--dim 8192] [--forwards 5] [--gpu-gib 2]
//                           [--offload-dir DIR] [--json]

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "strata/core/backend.h"
#include "strata/cuda/stream.h"
#include "strata/nn/layers.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/offload.h"

namespace {

using namespace strata;
using Clock = std::chrono::steady_clock;

struct Settings {
  int blocks = 60;
  std::int64_t dim = 8192;
  int forwards = 5;
  double gpu_gib = 2.0;
  std::filesystem::path offload_dir =
      std::filesystem::temp_directory_path() / "strata_offload_bench";
  bool json = false;
};

std::shared_ptr<nn::Sequential> make_stack(const Settings& s) {
  std::vector<std::shared_ptr<nn::Module>> layers;
  for (int i = 0; i < s.blocks; ++i) {
    layers.push_back(std::make_shared<nn::Linear>(s.dim, s.dim, /*bias=*/false, DType::BFloat16));
  }
  return std::make_shared<nn::Sequential>(layers);
}

double pinned_h2d_gbps(std::size_t bytes) {
  const Tensor host = Tensor::empty({static_cast<std::int64_t>(bytes)}, DType::UInt8, Device::cpu(),
                                    MemoryKind::Pinned);
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

// Seconds per forward, after one warm-up forward that records the order (and, for the disk
// tier, brings the offload files into the page cache).
double time_forwards(nn::Module& model, const Tensor& input, int forwards) {
  model(input);
  const auto start = Clock::now();
  for (int i = 0; i < forwards; ++i) model(input);  // the output comes back to the cpu: synced
  return std::chrono::duration<double>(Clock::now() - start).count() / forwards;
}

class Reporter {
 public:
  Reporter(double limit_gbps, bool json) : limit_(limit_gbps), json_(json) {}

  void operator()(const std::string& key, const std::string& label, double seconds,
                  double streamed_bytes) const {
    const double gbps = streamed_bytes / seconds / 1e9;
    fmt::print("{:<44} {:>9.1f} ms/forward {:>7.2f} GB/s {:>6.1f}% of pinned H2D\n", label,
               seconds * 1e3, gbps, 100.0 * gbps / limit_);
    if (json_) {
      fmt::print(
          "RESULT {{\"key\": \"{}\", \"seconds_per_forward\": {:.6f}, \"streamed_bytes\": {:.0f}, "
          "\"gbps\": {:.3f}, \"pinned_h2d_gbps\": {:.3f}}}\n",
          key, seconds, streamed_bytes, gbps, limit_);
    }
    std::fflush(stdout);
  }

 private:
  double limit_;
  bool json_;
};

// Blocks 0..resident-1 on cuda:0, the rest on `tier`.
placement::DeviceMap resident_then(int blocks, int resident, const std::string& tier) {
  placement::DeviceMap map;
  for (int i = 0; i < blocks; ++i) map.emplace_back(std::to_string(i), i < resident ? "0" : tier);
  return map;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app("Streams a stack of bf16 Linear blocks through cuda:0 from cpu and disk");
  app.add_option("--blocks", s.blocks, "Linear blocks")->capture_default_str();
  app.add_option("--dim", s.dim, "in = out features")->capture_default_str();
  app.add_option("--forwards", s.forwards, "timed forwards per placement")->capture_default_str();
  app.add_option("--gpu-gib", s.gpu_gib, "GiB of blocks resident in (b) and (c)")
      ->capture_default_str();
  app.add_option("--offload-dir", s.offload_dir, "offload folder for (c)")->capture_default_str();
  app.add_flag("--json", s.json, "also print one RESULT {json} line per placement");
  CLI11_PARSE(app, argc, argv);

  if (find_backend(DeviceType::CUDA) == nullptr) {
    fmt::print("no CUDA device: nothing to measure\n");
    return 0;
  }
  const double block_bytes = static_cast<double>(s.dim * s.dim * 2);
  const double weight_bytes = s.blocks * block_bytes;
  const int resident = std::min(s.blocks, static_cast<int>(s.gpu_gib * (1 << 30) / block_bytes));
  const double streamed_bytes = (s.blocks - resident) * block_bytes;
  const Tensor input = Tensor::full({1, s.dim}, 0.01, DType::BFloat16);
  const double limit = pinned_h2d_gbps(static_cast<std::size_t>(block_bytes));
  fmt::print("{} x bf16 Linear({}, {}): {:.2f} GB of weights; pinned H2D {:.2f} GB/s\n", s.blocks,
             s.dim, s.dim, weight_bytes / 1e9, limit);
  if (s.json) {
    fmt::print(
        "RESULT {{\"key\": \"setup\", \"blocks\": {}, \"dim\": {}, \"weight_bytes\": {:.0f}, "
        "\"resident_blocks\": {}, \"pinned_h2d_gbps\": {:.3f}}}\n",
        s.blocks, s.dim, weight_bytes, resident, limit);
  }
  const Reporter report(limit, s.json);

  for (int slots : {1, 2}) {  // 1 = no prefetch, for contrast
    auto model = make_stack(s);
    placement::cpu_offload(
        *model, {.execution_device = Device::cuda(0), .prefetch = {.staging_slots = slots}});
    report(slots == 2 ? "a_cpu_offload" : "a_cpu_offload_no_prefetch",
           fmt::format("(a) cpu_offload, {} staging slot(s)", slots),
           time_forwards(*model, input, s.forwards), weight_bytes);
  }
  {
    auto model = make_stack(s);
    placement::dispatch_model(*model, resident_then(s.blocks, resident, "cpu"));
    report("b_gpu_plus_cpu",
           fmt::format("(b) {} blocks on GPU, {} on cpu", resident, s.blocks - resident),
           time_forwards(*model, input, s.forwards), streamed_bytes);
  }
  {
    std::filesystem::remove_all(s.offload_dir);
    auto model = make_stack(s);
    placement::dispatch_model(*model, resident_then(s.blocks, resident, "disk"),
                              {.offload_dir = s.offload_dir});
    report("c_gpu_plus_disk",
           fmt::format("(c) {} blocks on GPU, {} on disk", resident, s.blocks - resident),
           time_forwards(*model, input, s.forwards), streamed_bytes);
  }
  std::filesystem::remove_all(s.offload_dir);
  return 0;
}

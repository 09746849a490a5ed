// The mixture-of-experts constants of `strata calibrate` (machine_rates.h): the rate of a decode
// step's cpu experts and a block's fixed cost behind a GPU (docs/moe-execution.md, "Cost model").

#include <algorithm>
#include <vector>

#include "cpu/expert_gemv.h"
#include "engine/best_seconds.h"
#include "strata/core/tensor.h"
#include "strata/engine/machine_rates.h"
#include "strata/ops.h"

#if STRATA_WITH_CUDA
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#endif

namespace strata::engine {
namespace {

using detail::best_seconds;

// Qwen3-30B-A3B's experts: gate and up [768, 2048], down [2048, 768]; 8 selected per token.
constexpr std::int64_t kHidden = 2048, kIntermediate = 768, kTopK = 8;

// `count` experts' jobs of one weighted row each (weights set per step by the caller).
std::vector<cpu::CpuExpertJob> expert_jobs(std::int64_t count, std::int64_t hidden,
                                           std::int64_t intermediate) {
  std::vector<cpu::CpuExpertJob> jobs(static_cast<std::size_t>(count));
  for (cpu::CpuExpertJob& job : jobs) {
    job.x = Tensor::full({1, hidden}, 0.5, DType::BFloat16);
    job.gate_out = Tensor::empty({1, intermediate}, DType::BFloat16, Device::cpu());
    job.up_out = Tensor::empty({1, intermediate}, DType::BFloat16, Device::cpu());
    job.out = Tensor::empty({1, hidden}, DType::BFloat16, Device::cpu());
    job.weights = {0.125f};
  }
  return jobs;
}

// The expert path's activation: silu(gate) * up, as the module's ops.
void run_experts(std::vector<cpu::CpuExpertJob>& jobs) {
  cpu::cpu_experts_gemv(jobs, [&](std::size_t i) {
    jobs[i].hidden = ops::mul(ops::silu(jobs[i].gate_out), jobs[i].up_out);
  });
}

}  // namespace

double measure_cpu_expert_gbps(std::int64_t bytes) {
  const std::int64_t expert_bytes = 3 * kHidden * kIntermediate * 2;
  // (Fewer experts than a step's when `bytes` is small, in tests: a step reuses them.)
  const std::int64_t pool = std::max<std::int64_t>(bytes / expert_bytes, 1);
  std::vector<Tensor> weights;  // gate, up, down of each expert of the pool
  for (std::int64_t e = 0; e < pool; ++e) {
    weights.push_back(Tensor::full({kIntermediate, kHidden}, 0.01, DType::BFloat16));
    weights.push_back(Tensor::full({kIntermediate, kHidden}, 0.01, DType::BFloat16));
    weights.push_back(Tensor::full({kHidden, kIntermediate}, 0.01, DType::BFloat16));
  }
  std::vector<cpu::CpuExpertJob> jobs = expert_jobs(kTopK, kHidden, kIntermediate);
  const std::int64_t steps = std::max<std::int64_t>(pool / kTopK, 1);
  const double seconds = best_seconds(3, [&] {
    for (std::int64_t s = 0; s < steps; ++s) {
      for (std::int64_t j = 0; j < kTopK; ++j) {
        const auto at = static_cast<std::size_t>(3 * ((s * kTopK + j) % pool));
        auto& job = jobs[static_cast<std::size_t>(j)];
        job.gate = weights[at];
        job.up = weights[at + 1];
        job.down = weights[at + 2];
      }
      run_experts(jobs);
    }
  });
  return static_cast<double>(steps * kTopK * expert_bytes) / seconds / 1e9;
}

std::optional<double> measure_moe_block_us() {
#if STRATA_WITH_CUDA
  if (!cuda::is_available()) return std::nullopt;
  const Device gpu = Device::cuda(0);
  const cuda::Stream& stream = cuda::Stream::compute(0);
  // What a decode block step does besides its products (moe_block.cc, expert_routing.cc): the
  // routing and the input read to pinned memory with one wait, the cpu experts' dispatch and
  // activations (tiny experts here: their reads are the expert rate's), the device experts'
  // weights and the cpu rows copied back without a wait, and the k-way sum on the GPU.
  const Tensor x = Tensor::full({1, kHidden}, 0.5, DType::BFloat16, gpu);
  const Tensor probs = Tensor::full({1, kTopK}, 0.125, DType::Float32, gpu);
  const Tensor ids = Tensor::full({1, kTopK}, 1.0, DType::Int64, gpu);
  const auto pinned = [](const Shape& shape, DType dtype) {
    return Tensor::empty(shape, dtype, Device::cpu(), MemoryKind::Pinned);
  };
  const Tensor x_host = pinned({1, kHidden}, DType::BFloat16);
  const Tensor probs_host = pinned({1, kTopK}, DType::Float32);
  const Tensor ids_host = pinned({1, kTopK}, DType::Int64);
  const Tensor rows_host = pinned({kTopK, kHidden}, DType::BFloat16);
  const Tensor weights_host = pinned({kTopK, 1}, DType::Float32);
  std::vector<Tensor> tiny;
  for (std::int64_t j = 0; j < kTopK; ++j) {
    tiny.push_back(Tensor::full({64, kHidden}, 0.01, DType::BFloat16));
    tiny.push_back(Tensor::full({64, kHidden}, 0.01, DType::BFloat16));
    tiny.push_back(Tensor::full({kHidden, 64}, 0.01, DType::BFloat16));
  }
  std::vector<cpu::CpuExpertJob> jobs = expert_jobs(kTopK, kHidden, 64);
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].gate = tiny[3 * j];
    jobs[j].up = tiny[3 * j + 1];
    jobs[j].down = tiny[3 * j + 2];
  }
  constexpr int kSteps = 200;
  const double seconds = best_seconds(2, [&] {
    for (int s = 0; s < kSteps; ++s) {
      x_host.copy_(x, /*non_blocking=*/true);
      probs_host.copy_(probs, /*non_blocking=*/true);
      ids_host.copy_(ids);
      run_experts(jobs);
      const Tensor weights = weights_host.to(gpu, /*non_blocking=*/true);
      const Tensor contributions = Tensor::empty({kTopK, kHidden}, DType::BFloat16, gpu);
      contributions.copy_(rows_host, /*non_blocking=*/true);
      Tensor sum = contributions.narrow(0, 0, 1).contiguous();
      for (std::int64_t j = 1; j < kTopK; ++j) sum = ops::add(sum, contributions.narrow(0, j, 1));
    }
    stream.synchronize();
  });
  return seconds / kSteps * 1e6;
#else
  return std::nullopt;
#endif
}

}  // namespace strata::engine

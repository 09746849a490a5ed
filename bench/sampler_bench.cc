// The sampler's cost per token for a 152k vocabulary (Qwen2's 152064) on the GPU and the CPU:
// one sample() call per iteration, from logits already on the device to ids on the host (the
// GPU figure includes uploading the rows and the one id copy that ends each decode step).
//
//   build/release/bench/sampler_bench [--benchmark_filter=Gpu]

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "strata/core/backend.h"
#include "strata/engine/sampling.h"

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;
using strata::engine::SampleRow;
using strata::engine::SamplingParams;

constexpr std::int64_t kVocab = 152064;

SamplingParams params_for(int which) {
  SamplingParams p;
  switch (which) {
    case 0:
      p.temperature = 0.0;
      break;  // greedy (ops::argmax)
    case 1:
      p.temperature = 0.8;
      break;  // plain sampling
    case 2:
      p.temperature = 0.7;
      p.top_k = 50;
      p.top_p = 0.9;
      break;
    case 3:
      p.top_p = 0.95;
      p.min_p = 0.05;
      break;
    default:
      p.temperature = 0.7;
      p.top_k = 50;
      p.top_p = 0.9;
      p.repetition_penalty = 1.1;
      p.presence_penalty = 0.5;
      p.frequency_penalty = 0.5;
      break;
  }
  return p;
}

const char* label_for(int which) {
  static const char* labels[] = {"greedy", "temperature", "top_k50+top_p0.9", "top_p0.95+min_p0.05",
                                 "top_k+top_p+penalties(ctx 2048)"};
  return labels[which];
}

void run(benchmark::State& state, Device device) {
  const strata::DeviceBackend* gpus = strata::find_backend(strata::DeviceType::CUDA);
  if (device.is_cuda() && (gpus == nullptr || gpus->device_count() == 0)) {
    state.SkipWithError("no CUDA GPU");
    return;
  }
  const int which = static_cast<int>(state.range(0));
  const std::int64_t batch = state.range(1);
  const DType dtype = state.range(2) == 0 ? DType::Float32 : DType::BFloat16;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> values(static_cast<std::size_t>(batch * kVocab));
  for (float& v : values) v = normal(rng);
  const Tensor logits = Tensor::from_vector(values, {batch, kVocab}).to(device, dtype);
  std::vector<std::int64_t> context(2048);
  for (auto& t : context) t = static_cast<std::int64_t>(rng() % kVocab);
  const SamplingParams params = params_for(which);
  for (auto _ : state) {
    std::vector<SampleRow> rows;
    for (std::int64_t r = 0; r < batch; ++r) {
      rows.push_back({&params, context, 1024, static_cast<std::uint64_t>(r)});
    }
    benchmark::DoNotOptimize(strata::engine::sample(logits, rows));
  }
  state.SetLabel(std::string(label_for(which)) + (dtype == DType::Float32 ? " f32" : " bf16"));
  // Seconds per sampled token (per row of the batch).
  state.counters["per_token"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void BM_SampleGpu(benchmark::State& state) { run(state, Device::cuda(0)); }
void BM_SampleCpu(benchmark::State& state) { run(state, Device::cpu()); }

// (option set, batch, dtype 0 = f32 / 1 = bf16)
void args(benchmark::internal::Benchmark* b) {
  for (int which = 0; which < 5; ++which) {
    for (int batch : {1, 8}) b->Args({which, batch, 1});
  }
  b->Args({2, 1, 0});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK(BM_SampleGpu)->Apply(args);
BENCHMARK(BM_SampleCpu)->Apply(args);

}  // namespace

BENCHMARK_MAIN();

// Decode of a Llama-2-7B-shaped bf16 model held on cuda:0 (issue 14's acceptance shape), with the
// fused CUDA-graph step (strata/models/decode_graph.h) and with the module path
// (decode_graph = false), through generate_greedy as `strata bench` drives it: ms per token, the
// weight read rate that implies, and that rate next to a device-to-device copy measured in the
// same run. The weights are zeros placed straight on the GPU (no checkpoint: the rate does not
// depend on their values). Usage: cuda_decode_graph_bench [layers (32)] [tokens (32)].

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#include "strata/io/model_config.h"
#include "strata/models/decode_graph.h"
#include "strata/models/models.h"
#include "strata/nn/init.h"
#include "strata/nn/tensor_placement.h"

namespace {

using strata::Device;
using strata::DType;
using strata::Tensor;

double copy_gbs() {
  const std::int64_t bytes = std::int64_t{1} << 30;
  Tensor a = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  Tensor b = Tensor::empty({bytes}, DType::UInt8, Device::cuda(0));
  auto s = static_cast<cudaStream_t>(strata::cuda::Stream::compute(0).native_handle());
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), bytes, cudaMemcpyDeviceToDevice, s);
  cudaEventRecord(start, s);
  for (int i = 0; i < 5; ++i) {
    cudaMemcpyAsync(b.data_ptr(), a.data_ptr(), bytes, cudaMemcpyDeviceToDevice, s);
  }
  cudaEventRecord(end, s);
  cudaEventSynchronize(end);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, end);
  return 2.0 * bytes * 5 / ms / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  if (!strata::cuda::is_available()) {
    std::printf("no CUDA GPU: nothing to measure\n");
    return 0;
  }
  const int layers = argc > 1 ? std::atoi(argv[1]) : 32;
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 32;
  const std::string config = R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_key_value_heads": 32, "num_hidden_layers": )" +
                             std::to_string(layers) + R"(, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "hidden_act": "silu"})";
  std::shared_ptr<strata::models::CausalLM> model;
  {
    auto guard = strata::nn::init_empty_weights();
    model = strata::models::build_causal_lm(strata::io::parse_model_config(config, "7b-shape"),
                                            DType::BFloat16);
  }
  std::uint64_t weight_bytes = 0;
  for (const auto& [name, t] : model->named_parameters()) {
    strata::nn::set_module_tensor_to_device(*model, name, Device::cuda(0),
                                            Tensor::zeros(t.shape(), t.dtype(), Device::cuda(0)));
    weight_bytes += t.nbytes();
  }
  strata::nn::materialize_non_persistent_buffers(*model, Device::cuda(0));
  const double copy = copy_gbs();
  std::printf("device: %s; %d layers, %.2f GB of bf16 weights; copy (read + write) %.0f GB/s\n",
              strata::cuda::device_properties(0).name.c_str(), layers, weight_bytes / 1e9, copy);
  std::printf("%-30s %5s %9s %9s %8s\n", "path", "batch", "ms/token", "GB/s", "of copy");
  // Median ms/token of three generations after a warm-up (allocator, capture).
  const auto measure = [&](std::int64_t batch, bool graph, const std::string& name) {
    strata::models::GenerationOptions options;
    options.max_new_tokens = tokens + 1;
    options.decode_graph = graph;
    const Tensor ids = Tensor::zeros({batch, 1}, DType::Int64);
    strata::models::generate_greedy(*model, ids, options);
    std::vector<double> runs;
    for (int r = 0; r < 3; ++r) {
      const auto steps = strata::models::generate_greedy(*model, ids, options).step_seconds;
      runs.push_back(std::accumulate(steps.begin(), steps.end(), 0.0) / steps.size());
    }
    std::sort(runs.begin(), runs.end());
    const double s = runs[1];
    std::printf("%-30s %5lld %9.3f %9.0f %7.1f%%\n", name.c_str(), static_cast<long long>(batch),
                s * 1e3, weight_bytes / s / 1e9, 100.0 * weight_bytes / s / 1e9 / copy);
    std::fflush(stdout);
  };
  if (argc > 3 && std::string(argv[3]) == "--sweep") {
    // The decode graph's variants, switched through the environment the runner reads when
    // generate builds it: programmatic dependent launch, the fused norms, the GEMV shapes, the
    // L2 prefetch plan (session 6's sweep of the rest is in docs/decode-graph.md).
    // Each variant is a list of NAME=VALUE settings over the defaults (every knob below unset);
    // `batched` ones also run at batches 2 and 4.
    const char* const knobs[] = {
        "STRATA_DECODE_PDL",        "STRATA_DECODE_L2",
        "STRATA_DECODE_TAIL_NORM",  "STRATA_DECODE_SPLIT_K",
        "STRATA_GEMV_SHAPE",        "STRATA_GEMV_SHAPE_RESIDUAL",
        "STRATA_DECODE_FUSED_ROPE", "STRATA_DECODE_FLASH_PREFETCH",
        "STRATA_GEMV_LATE_TRIGGER", "STRATA_GEMV_PREFETCH_DOWN",
        "STRATA_GEMV_PREFETCH_O",
    };
    struct Variant {
      const char* name;
      std::vector<std::pair<const char*, const char*>> env;
      bool batched = false;
    };
    const char* rope = "STRATA_DECODE_FUSED_ROPE";
    const char* flash = "STRATA_DECODE_FLASH_PREFETCH";
    const char* late = "STRATA_GEMV_LATE_TRIGGER";
    const char* down = "STRATA_GEMV_PREFETCH_DOWN";
    const char* res = "STRATA_GEMV_SHAPE_RESIDUAL";
    const char* split = "STRATA_DECODE_SPLIT_K";
    const char* l2 = "STRATA_DECODE_L2";
    // The default L2 plan is o@qkv:32,gu@o:8,qkv@down:8 (o_proj is 32 MiB at 7B, gate/up 2 x 86,
    // down 86, q/k/v 3 x 32); sessions 6-7's sweeps of the rest are in docs/decode-graph.md.
    // The defaults fuse rope into the q/k/v GEMV and prefetch flash decoding's first key tiles
    // (session 11's sweep) and split o_proj and down_proj in two along k (session 12's); the
    // rows "no ..." undo them.
    const std::vector<Variant> variants = {
        {"default", {}, true},
        {"no rope, no flash-pf", {{rope, "0"}, {flash, "0"}}, true},
        {"no rope", {{rope, "0"}}},
        {"no flash-pf", {{flash, "0"}}},
        {"late", {{late, "1"}}},
        {"down-pf 1x132", {{down, "1x132"}}},
        {"down-pf 1", {{down, "1"}}},
        {"late down-pf 1", {{late, "1"}, {down, "1"}}},
        {"res1x8", {{res, "1x8"}}},
        {"res1x16", {{res, "1x16"}}},
        {"res2x16", {{res, "2x16"}}},
        {"res4x8", {{res, "4x8"}}},
        {"sk2 down", {{split, "2x2@down"}}},
        {"no split-K", {{split, "0"}}, true},
        {"sk4", {{split, "4x2"}}},
        {"o24 gu8 qkv8", {{l2, "o@qkv:24,gu@o:8,qkv@down:8"}}},
        {"o24 gu8 qkv12", {{l2, "o@qkv:24,gu@o:8,qkv@down:12"}}},
        {"o-pf 2, no o@qkv", {{"STRATA_GEMV_PREFETCH_O", "2"}, {l2, "gu@o:8,qkv@down:8"}}},
        {"o-pf 1x132", {{"STRATA_GEMV_PREFETCH_O", "1x132"}}},
        {"no pdl", {{"STRATA_DECODE_PDL", "0"}}},
        {"default, again", {}},  // the run's noise: the first row's setting timed last
    };
    for (const std::int64_t batch : {1, 2, 4}) {
      for (const Variant& v : variants) {
        if (batch != 1 && !v.batched) continue;
        for (const char* knob : knobs) unsetenv(knob);
        for (const auto& [name, value] : v.env) setenv(name, value, 1);
        // A variant the runner refuses (a bad spec) would time the module path: say so.
        if (const strata::models::DecodeGraphRunner probe(*model); !probe.usable()) {
          std::printf("%-30s refused: %s\n", v.name, probe.reason().c_str());
          continue;
        }
        measure(batch, true, v.name);
      }
    }
    return 0;
  }
  for (const std::int64_t batch : {1, 4, 8}) {
    for (const bool graph : {true, false}) {
      measure(batch, graph, graph ? "decode graph" : "module path");
    }
  }
  return 0;
}

// Planning time on a 100,000-tensor tree (the reference takes about a minute on trees this size:
// accelerate-semantics.md W11). The tree is shaped like a mixture-of-experts decoder: 65 layers of
// attention, norms, a router and 512 experts of three projections each, embeddings tied to the
// head; meta tensors only. Budgets spread it over four GPUs, the cpu and disk, so the planner
// splits, reserves and offloads.

#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "strata/core/logging.h"
#include "strata/core/tensor.h"
#include "strata/nn/module.h"
#include "strata/placement/placement.h"

namespace {

using strata::DType;
using strata::Shape;
using strata::nn::Module;
namespace placement = strata::placement;

constexpr int kLayers = 65;
constexpr int kExperts = 512;
constexpr std::int64_t kHidden = 2048;
constexpr std::int64_t kExpertDim = 768;
constexpr std::int64_t kVocab = 151936;

std::shared_ptr<Module> linear(std::int64_t in, std::int64_t out) {
  auto m = std::make_shared<Module>("Linear");
  m->register_parameter("weight",
                        strata::Tensor::empty({out, in}, DType::BFloat16, strata::Device::meta()));
  return m;
}

std::shared_ptr<Module> norm() {
  auto m = std::make_shared<Module>("RMSNorm");
  m->register_parameter("weight",
                        strata::Tensor::empty({kHidden}, DType::BFloat16, strata::Device::meta()));
  return m;
}

std::shared_ptr<Module> mlp(const char* cls, std::int64_t dim) {
  auto m = std::make_shared<Module>(cls);
  m->register_module("gate_proj", linear(kHidden, dim));
  m->register_module("up_proj", linear(kHidden, dim));
  m->register_module("down_proj", linear(dim, kHidden));
  return m;
}

std::shared_ptr<Module> decoder_layer() {
  auto layer = std::make_shared<Module>("DecoderLayer");
  auto attn = layer->register_module("self_attn", std::make_shared<Module>("Attention"));
  for (const char* name : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    attn->register_module(name, linear(kHidden, kHidden));
  }
  auto moe = layer->register_module("mlp", std::make_shared<Module>("SparseMoeBlock"));
  moe->register_module("gate", linear(kHidden, kExperts));
  auto experts = moe->register_module("experts", std::make_shared<Module>("ModuleList"));
  for (int e = 0; e < kExperts; ++e)
    experts->register_module(std::to_string(e), mlp("MLP", kExpertDim));
  moe->register_module("shared_expert", mlp("MLP", 4 * kExpertDim));
  layer->register_module("input_layernorm", norm());
  layer->register_module("post_attention_layernorm", norm());
  return layer;
}

struct Model {
  std::shared_ptr<Module> root;
  std::size_t tensors = 0;
  placement::MaxMemory budgets;
};

const Model& model() {
  static const Model built = [] {
    Model m;
    m.root = std::make_shared<Module>("ForCausalLM");
    auto body = m.root->register_module("model", std::make_shared<Module>("MoeModel"));
    auto embed = body->register_module("embed_tokens", std::make_shared<Module>("Embedding"));
    embed->register_parameter("weight", strata::Tensor::empty({kVocab, kHidden}, DType::BFloat16,
                                                              strata::Device::meta()));
    auto layers = body->register_module("layers", std::make_shared<Module>("ModuleList"));
    for (int i = 0; i < kLayers; ++i) layers->register_module(std::to_string(i), decoder_layer());
    body->register_module("norm", norm());
    auto head = m.root->register_module("lm_head", std::make_shared<Module>("Linear"));
    head->register_parameter("weight", embed->parameter_slot("weight"));  // tied
    m.tensors = m.root->tensor_refs(true, true, true, false).size();
    const std::int64_t total = placement::compute_module_sizes(*m.root).total();
    m.budgets = {
        {0, total / 8}, {1, total / 8}, {2, total / 8}, {3, total / 8}, {"cpu", total / 4}};
    return m;
  }();
  return built;
}

void plan(benchmark::State& state, std::vector<std::string> no_split) {
  strata::set_log_sink({});
  const Model& m = model();
  std::size_t entries = 0;
  for (auto _ : state) {
    const placement::DevicePlan result = placement::plan_auto_device_map(
        *m.root, {.max_memory = m.budgets, .no_split_module_classes = no_split});
    entries = result.placements.size();
    benchmark::DoNotOptimize(result.device_map.data());
  }
  state.counters["tensors"] = static_cast<double>(m.tensors);
  state.counters["decisions"] = static_cast<double>(entries);
}

void BM_PlanNoSplitLayers(benchmark::State& state) { plan(state, {"DecoderLayer"}); }
void BM_PlanSplittingEverything(benchmark::State& state) { plan(state, {}); }

void BM_PlanBalanced(benchmark::State& state) {
  strata::set_log_sink({});
  const Model& m = model();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        placement::plan_device_map(
            *m.root, placement::DeviceMapStrategy::Balanced,
            {.max_memory = m.budgets, .no_split_module_classes = {"DecoderLayer"}})
            .device_map.data());
  }
  state.counters["tensors"] = static_cast<double>(m.tensors);
}

BENCHMARK(BM_PlanNoSplitLayers)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PlanSplittingEverything)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PlanBalanced)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

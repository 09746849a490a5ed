#pragma once
// How a SparseMoeBlock reaches and computes its routed experts (docs/moe-execution.md; private to
// src/models). An expert whose projections carry offload hooks (PrefetchHook: weights in pinned
// cpu memory or a mapped file) is not called through those hooks: the block reads the stored
// weights and computes the expert where it chose -- on the cpu where they are, or on the
// execution device from the expert cache or a copy of only this expert.

#include <array>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/models/config.h"
#include "strata/nn/module.h"

namespace strata::placement {
class PrefetchHook;
}

namespace strata::models::detail {

struct ExpertSource {
  // The projections' weights are offloaded behind PrefetchHooks; false: resident (call the expert).
  bool offloaded = false;
  placement::PrefetchHook* hook = nullptr;  // the gate projection's: asked for the step's policy
  std::vector<Tensor> stored;               // gate, up, down weights as stored, in the model dtype
  std::int64_t bytes = 0;
  bool cast = false;  // the stored dtype differed: `stored` holds cast copies
};

// `expert` is a GatedMLP (Llama names gate/up/down_proj, or Mixtral's w1/w3/w2).
ExpertSource expert_source(nn::Module& expert, bool mixtral_naming);

// A block's expert sources, resolved once per set of hooks (the weights-map lookups are not
// repeated for every expert of every step); an expert whose projections got other hooks since
// (attached, removed) is resolved again. Sources whose stored dtype differed are not kept (the
// cast copy would double the expert's memory).
class ExpertSources {
 public:
  const ExpertSource& get(std::int64_t index, nn::Module& expert, bool mixtral_naming);

 private:
  struct Entry {
    std::array<const nn::ModelHook*, 3> hooks{};
    ExpertSource source;
    bool kept = false;
  };
  std::vector<Entry> entries_;
  ExpertSource last_;  // a source not kept
};

// GatedMLP's forward with the weights given ({gate, up, down}): down(act(gate x) * up x), the same
// ops in the same order, so the numbers equal a call of the module.
Tensor expert_forward(const std::vector<Tensor>& weights, Activation activation, const Tensor& x);

}  // namespace strata::models::detail

#pragma once
// How a mixture-of-experts block (MoeBlock) reaches and computes its routed experts
// (docs/moe-execution.md; private to src/models). An expert whose projections carry offload
// hooks (PrefetchHook: tensors in pinned cpu memory or a mapped file) is not called through those
// hooks: the block reads the stored tensors and computes the expert where it chose -- on the cpu
// where they are, or on the execution device from the expert cache or a copy of only this expert.
// A projection is a plain linear (weight, optional bias) or an fp8 / AWQ QuantizedLinear (its
// packed tensors as stored: DeepSeek-V3's fp8 blocks are read at one byte per weight).

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/models/config.h"
#include "strata/nn/module.h"

namespace strata::placement {
class PrefetchHook;
}

namespace strata::models {
class QuantizedLinear;
}

namespace strata::models::detail {

// One projection's part of an expert's stored tensors.
struct ProjectionSource {
  const QuantizedLinear* quantized = nullptr;  // null: a plain linear
  std::vector<std::string> names;              // module-local names of its tensors, in order
  std::size_t first = 0;                       // index of its first tensor in the expert's list
};

struct ExpertSource {
  // Every tensor of the projections is offloaded behind PrefetchHooks; false: resident (call
  // the expert).
  bool offloaded = false;
  placement::PrefetchHook* hook = nullptr;  // the gate projection's: asked for the step's policy
  std::array<ProjectionSource, 3> projections;  // gate, up, down
  std::vector<Tensor> stored;  // the projections' tensors as stored (cast to the module's dtypes)
  std::int64_t bytes = 0;
  bool cast = false;  // a stored dtype differed: `stored` holds cast copies
};

// `expert` is a GatedMLP (Llama names gate/up/down_proj, or Mixtral's w1/w3/w2).
ExpertSource expert_source(nn::Module& expert, bool mixtral_naming);

// A resident expert whose parameters are on `device`: its projections' parameters in `stored`
// (not offloaded), for the cpu experts' queue on the cpu (cpu_experts_forward: the numbers of
// calling it, with every core on a step's experts at once instead of one expert's products after
// another) or the grouped products on a GPU (grouped_experts_forward). Empty `stored` when the
// expert must be called instead: a hook on it or its projections that does more than pass through
// (nn::hook_passes_through), a projection that is not exactly an nn::Linear (quantized,
// tensor-parallel), a buffer, a parameter off `device`.
ExpertSource resident_source(nn::Module& expert, bool mixtral_naming, Device device);

// A block's expert sources, resolved once per set of hooks (the weights-map lookups are not
// repeated for every expert of every step); an expert whose projections got other hooks since
// (attached, removed) is resolved again. Sources whose stored dtype differed are not kept (the
// cast copy would double the expert's memory): each step casts again.
class ExpertSources {
 public:
  std::shared_ptr<const ExpertSource> get(std::int64_t index, nn::Module& expert,
                                          bool mixtral_naming);

 private:
  struct Entry {
    std::array<const nn::ModelHook*, 3> hooks{};
    std::shared_ptr<const ExpertSource> source;  // null: not kept
  };
  std::vector<Entry> entries_;
};

// GatedMLP's forward with the expert's tensors given (`tensors`: `source.stored` or copies of it
// in the same order, on x's device): down(act(gate x) * up x), the same ops in the same order as
// the projections' own forwards, so the numbers equal a call of the module.
Tensor expert_forward(const ExpertSource& source, const std::vector<Tensor>& tensors,
                      Activation activation, const Tensor& x);

// Whether grouped_experts_forward takes this expert: plain weights (no bias, not quantized).
bool groupable(const ExpertSource& source);

// The experts of a large step on a GPU in three grouped products (ops::grouped_linear: one
// launch each for every expert, not three an expert): x holds the experts' rows one expert after
// another (rows[i] for expert i, sources[i] with its tensors tensors[i] on x's device, every one
// groupable). down(act(gate x) * up x) over all the rows at once: the elementwise ops give each
// row the numbers they give it alone; the products are cuBLAS's grouped ones.
Tensor grouped_experts_forward(const std::vector<const ExpertSource*>& sources,
                               const std::vector<const std::vector<Tensor>*>& tensors,
                               Activation activation, const Tensor& x,
                               const std::vector<std::int64_t>& rows);

// The cpu experts of a step: expert i (`sources[i]`, its tensors `tensors[i]` as stored on the
// cpu) on `rows[i]` [n, hidden], all on the cpu, with every core; each output row r times
// `weights[i]` row r (float32 [n, 1], the combination's cast(cast(out, float32) * w, dtype)),
// or unweighted when `weights` is empty, written to `into[i]` [n, hidden].
// A decode step has few experts (8 for 16 threads on the H100 host) of one row each: plain
// weights on up to 4 rows go through one queue of blocks of output features over every expert
// (cpu::cpu_experts_gemv: gate and up, the activation, down with the weight applied), which gives
// the numbers of one product (every output is its own dot product over the same inputs with the
// same kernel; moe_experts_test.cc checks the bits). Otherwise, or with STRATA_MOE_SPLIT=0, one
// expert per task.
// `threads`: the cores to spread over (num_threads() by default; tests pass more to force blocks).
// `on_caller`, when given, runs once on the calling thread: inside the queue once the pool's
// workers have started (cpu_experts_gemv), else before the experts.
void cpu_experts_forward(const std::vector<const ExpertSource*>& sources,
                         const std::vector<const std::vector<Tensor>*>& tensors,
                         Activation activation, const std::vector<Tensor>& rows,
                         const std::vector<Tensor>& weights, const std::vector<Tensor>& into,
                         std::int64_t threads = 0, const std::function<void()>& on_caller = {});
// The same, unweighted, into new tensors.
std::vector<Tensor> cpu_experts_forward(const std::vector<const ExpertSource*>& sources,
                                        const std::vector<const std::vector<Tensor>*>& tensors,
                                        Activation activation, const std::vector<Tensor>& rows,
                                        std::int64_t threads = 0);
// Whether cpu_experts_forward cuts these experts into blocks for `threads` threads: plain
// contiguous weights of the rows' dtype, at most 4 rows each, and at least two threads.
bool cpu_experts_split(const std::vector<const ExpertSource*>& sources,
                       const std::vector<const std::vector<Tensor>*>& tensors,
                       const std::vector<Tensor>& rows, std::int64_t threads);

}  // namespace strata::models::detail

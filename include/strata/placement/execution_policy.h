#pragma once
// Where an offloaded unit computes in one forward step (docs/hybrid-execution.md).
//
// An offloaded unit (any module with an offload hook: a decoder layer, an expert, a tensor of a
// split block) keeps its weights in cpu RAM or in a mapped file. For each step it either
//   - streams: the prefetch scheduler copies the weights to the execution device (a GPU), where
//     the unit computes (what dispatch always did), or
//   - computes on the cpu: its hook moves the incoming activations to the cpu, binds the stored
//     weights where they are (pinned RAM, or the file mapping: nothing is copied) and sends the
//     result back to the execution device.
// A matrix-vector product is memory bound: at decode the host reads its own memory faster than
// PCIe can carry the weights; at prefill the GPU's compute wins. The choice follows the tokens in
// the step through a per-unit threshold that the cost model (strata/engine/cost_model.h)
// computes. Or it splits: every linear layer of the unit divides its output rows, the cpu
// computes rows [0, r) from the stored weights while the execution device streams and computes
// rows [r, n); the halves join on the execution device (both bandwidths at work).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "strata/core/dtype.h"

namespace strata::placement {

// What one unit does in one step.
enum class ExecutionPolicy : std::uint8_t {
  Stream,  // weights copied to the execution device, computed there
  Cpu,     // computed on the cpu where the weights are; activations travel instead
  Split,   // linear layers' rows divided between the cpu (stored) and the execution device
};

// What the user asks for (--offload-policy).
enum class OffloadPolicy : std::uint8_t {
  Auto,    // per unit and step, from the cost model's threshold
  Stream,  // always stream (the behaviour before this policy existed)
  Cpu,     // always compute offloaded units on the cpu
  Split,   // always split offloaded units' linear layers between the cpu and the GPU
};

// "auto", "stream", "cpu", "split" (InvalidArgument naming them otherwise).
OffloadPolicy parse_offload_policy(std::string_view text);
std::string_view offload_policy_name(OffloadPolicy policy);
std::string_view execution_policy_name(ExecutionPolicy policy);

// What a scheduler knows about one offloaded unit when it asks for its threshold.
struct UnitProfile {
  std::string module_class;
  std::int64_t bytes = 0;        // stored weight bytes (all its offloaded tensors)
  std::int64_t file_bytes = 0;   // ... of which are views of mapped files (the disk tier)
  DType dtype = DType::Float32;  // of its largest weight
  // Bytes of one token's activation entering the unit (the last dimension of its first input
  // tensor times its element size); the same leave it.
  std::int64_t activation_bytes_per_token = 0;
  // Linear layers a split step divides (nn::Linear modules with an offloaded weight that is not
  // tied) and their weight + bias bytes: per split step each one's input crosses to the cpu
  // (once per distinct input: q/k/v share one) and its cpu rows come back.
  std::int64_t split_linears = 0;
  std::int64_t split_bytes = 0;
  std::int64_t modules = 0;  // in the unit's tree, itself included (the cost model's op count)
  // A routed expert's projection that its mixture-of-experts block computes itself
  // (PrefetchScheduler::policy_for, moe-execution.md): a block step moves its activations to the
  // cpu and back once for all its cpu experts, so that round trip is shared by this many
  // projections (top_k experts x their projections) rather than paid by each. 0: a unit run
  // through its own hook, which pays its own round trip.
  std::int64_t block_projections = 0;
};

// The largest number of tokens in a step for which the unit computes on the cpu under
// OffloadPolicy::Auto: 0 = never, a huge value = always.
using CpuTokenThreshold = std::function<std::int64_t(const UnitProfile&)>;

// The most rows per expert for which a block's cpu experts run as one queue of blocks over every
// thread (cpu::cpu_experts_gemv, moe-execution.md), the path the cost model's cpu_expert_gbps
// measures. Past it the cpu runs one expert per task, at a rate the model has no constant for
// (session 6's 512-token prefill: 1091 tokens/s on the cpu against 2811 streamed), so
// engine::cost_model_planner never sends a routed expert's projection (block_projections > 0)
// to the cpu for more rows than this when a GPU could take it.
inline constexpr std::int64_t kCpuExpertQueueRows = 4;

// The full decision for one unit under OffloadPolicy::Auto (the cost model's
// engine::cost_model_planner): a step of n tokens splits when n <= split_max_tokens, else
// computes on the cpu when n <= cpu_max_tokens, else streams. `split_fraction` is the share of a
// split linear's output rows the cpu computes (also used under OffloadPolicy::Split).
struct UnitPlan {
  std::int64_t cpu_max_tokens = 0;
  std::int64_t split_max_tokens = 0;
  double split_fraction = 0.5;
};
using UnitPlanner = std::function<UnitPlan(const UnitProfile&)>;

// The cpu rows of a split linear of `rows` output rows: fraction x rows rounded; when rows >= 64
// to a multiple of 16 (whole kernel blocks) in [16, rows - 16 rounded down to 16], else in
// [1, rows - 1]; 0 when rows < 2 (nothing to split).
std::int64_t split_cpu_rows(std::int64_t rows, double fraction);

}  // namespace strata::placement

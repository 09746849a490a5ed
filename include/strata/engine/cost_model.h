#pragma once
// The cost model behind the offload policy and `strata plan`'s predictions
// (docs/hybrid-execution.md). Every prediction is a formula over measured machine constants
// (machine_constants.h): a unit reads its weights once per step at the rate of where it computes,
// does 2 FLOPs per parameter and token, and, when it computes on the cpu while the model runs on
// a GPU, sends its activations down and back over PCIe.

#include <cstdint>
#include <string>
#include <vector>

#include "strata/engine/machine_constants.h"
#include "strata/placement/execution_policy.h"

namespace strata::engine {

// Where a unit's weights live.
enum class Tier : std::uint8_t { Gpu, Cpu, Disk };
std::string_view tier_name(Tier tier);

// One unit's work per token.
struct UnitWork {
  std::int64_t bytes = 0;            // weights read once per step
  std::int64_t flops_per_token = 0;  // 2 x parameters for products; 0 for a lookup (embedding)
  std::int64_t activation_bytes_per_token = 0;  // entering the unit (the same leave it)
  Tier tier = Tier::Cpu;
  bool disk_cached = true;  // a Disk unit's file is in the page cache (else read from the disk)
  // An embedding: computing reads tokens x activation bytes of rows, no FLOPs (streaming still
  // copies all of its bytes).
  bool lookup = false;
  // Linear layers a split step divides (0: the unit cannot split). Each costs two small
  // host <-> GPU transfers per split step (its input down, its cpu rows back).
  std::int64_t split_linears = 0;
  // Ops (kernel launches on a GPU, op dispatches on the cpu) a step runs through the unit; each
  // costs gpu_launch_us or cpu_op_us. ops_of_modules estimates it from the unit's module count.
  std::int64_t ops = 0;
  // KV cache bytes per token of context (a decoder layer: 2 x kv heads x head dim x element) and
  // the bytes of KV the step reads (predict_plan: that x decode context x batch), read where the
  // unit computes, at the rate of its weights.
  std::int64_t kv_bytes_per_context_token = 0;
  std::int64_t kv_read_bytes = 0;
  // Routed experts (a sparse block's `experts`, moe-execution.md): `experts` experts of equal
  // size of which each token selects `top_k`; a step of n tokens reads only the experts its
  // tokens selected, E x (1 - (1 - k/E)^n) of them under uniform routing (k/E of the bytes at
  // one token), runs only their ops (`ops` x that share: an expert that received no token runs
  // nothing), and does k/E of the FLOPs per token. 0: not routed experts.
  std::int64_t experts = 0, top_k = 0;
  // The share of the selected experts' reads that the GPU expert cache serves (they compute on
  // the GPU from the cache); the rest compute under the unit's policy.
  double cache_hit_rate = 0.0;
  // The share of the activations' round trip (cpu computes behind a GPU) this unit pays: 1 for a
  // unit run through its own hook, 1 / block_projections for a routed expert's projection whose
  // block moves its activations once per step for all its cpu experts (unit_work_of).
  double round_trip_share = 1.0;
};

// Ops a step runs through a unit of `modules` modules (its tree, itself included): 3/2 per module,
// rounded up (a Llama decoder layer: 13 modules, about 20 ops at decode: two norms, seven
// products, two rotary embeddings, two cache writes, attention, the activation, a product and two
// residual adds).
std::int64_t ops_of_modules(std::int64_t modules);

// The share of a unit's bytes a step of `tokens` tokens reads (1 unless routed experts).
double selected_fraction(const UnitWork& unit, std::int64_t tokens);
// Routed experts: the tokens each selected expert gets in a step of `tokens` (tokens x top_k
// over the experts selected; 32 for a 512-token prefill of Qwen3-30B-A3B's 128 experts, top 8).
// Any other unit: `tokens`.
double tokens_per_selected_expert(const UnitWork& unit, std::int64_t tokens);

// Largest token count cpu_token_threshold reports: "always on the cpu".
inline constexpr std::int64_t kAlwaysCpu = std::int64_t{1} << 40;

class CostModel {
 public:
  explicit CostModel(MachineConstants constants);
  const MachineConstants& constants() const { return constants_; }

  // Seconds for a step of `tokens` tokens through the unit (GB/s and FLOP/s from constants;
  // `read` is bytes + kv_read_bytes):
  //   on the GPU, weights resident:  max(read / hbm, flops * tokens / gpu_flops)
  //                                  + ops x gpu_launch_us
  //     (a lookup reads tokens x activation bytes instead of bytes, on the GPU and the cpu)
  //   streamed to the GPU:           max(bytes / stream_rate(tier), that GPU time)
  //     stream_rate: Cpu: h2d; Disk: min(h2d, page-cache read) (cached) or min(h2d, disk read)
  //   on the cpu:                    max(read / cpu_rate(tier), flops * tokens / cpu_flops)
  //                                  + ops x cpu_op_us + activation_io(tokens)
  //     cpu_rate: the bf16 matrix-vector rate over layer shapes (cpu_gemv_layer_gbps; without
  //               it the rate at the pool's threads) for Cpu and cached Disk, min(that, disk
  //               read) for a Disk unit out of the page cache; a Gpu unit on a machine without
  //               GPU reads at the Cpu rate
  //     activation_io: with a GPU, 2 x (tokens x activation bytes / h2d + transfer latency)
  //               x round_trip_share; 0 without a GPU (everything is on the cpu already)
  //     routed experts (experts > 0): cpu_rate is the calibrated expert rate (cpu_expert_gbps)
  //               when measured, without the op term (that measurement runs whole steps); with
  //               moe_block_us measured, activation_io is left to expert_block_seconds
  double gpu_seconds(const UnitWork& unit, std::int64_t tokens) const;
  double stream_seconds(const UnitWork& unit, std::int64_t tokens) const;
  double cpu_seconds(const UnitWork& unit, std::int64_t tokens) const;
  // The same with the activation transfer counted or not (a model planned on the cpu alone).
  double cpu_seconds(const UnitWork& unit, std::int64_t tokens, bool activations_cross_pcie) const;
  // A block of offloaded routed experts' fixed cost per step behind a GPU (moe_block_us: the
  // routing read with one wait, the transfers, the cpu dispatch, the k-way sum), paid once per
  // step whatever the cache serves; 0 for other units, resident experts, without a GPU or
  // without the measurement. predict_plan adds it to each such unit's step.
  double expert_block_seconds(const UnitWork& unit) const;
  // Split (a unit with split_linears > 0, on a machine with a GPU): the cpu reads `fraction` of
  // the weights where they are while the rest streams to the GPU, at once. One host thread runs
  // the transfers, the launches and the cpu's rows in turn; the copy engine and the GPU work
  // beside it:
  //   max(host, (1 - fraction) x bytes / split copy rate, GPU time)
  //   host = max(fraction x bytes / split cpu rate, fraction x flops x tokens / cpu_flops)
  //          + split_linears x (2 x (tokens x activation bytes / h2d + latency) + cpu_op_us)
  //          + ops x gpu_launch_us
  //   split cpu rate: split_cpu_gemv_gbps (measured under copies) when known, else cpu_rate;
  //   split copy rate: min(stream_rate, split_h2d_gbps (measured under products) when known).
  // Infinite when the unit cannot split or there is no GPU.
  double split_seconds(const UnitWork& unit, std::int64_t tokens, double fraction) const;
  // The fraction that balances the cpu's read time with the copy's: split cpu rate / (split cpu
  // rate + split copy rate) (0 when there is no GPU).
  double split_fraction(const UnitWork& unit) const;
  // The fastest of stream, cpu and split (split at split_fraction; ties: stream, then cpu; a disk
  // unit never splits here: its streamed rows cost the disk workers' copy too, which the split
  // rates leave out). Without a GPU: Cpu. A block's routed experts (experts > top_k) get what
  // their block runs: never split, and the cpu only where it is faster and each selected expert
  // has at most kCpuExpertQueueRows tokens (tokens_per_selected_expert); else stream.
  placement::ExecutionPolicy best_policy(const UnitWork& unit, std::int64_t tokens) const;
  double best_seconds(const UnitWork& unit, std::int64_t tokens) const;
  // The largest token count for which the cpu is no slower than streaming (cpu time grows
  // faster with tokens than streaming's, so this is a threshold): 0 = never, kAlwaysCpu without
  // a GPU. Searched over [1, 2^20].
  std::int64_t cpu_token_threshold(const UnitWork& unit) const;
  // The largest token count for which split is no slower than both cpu and streaming, searched
  // the same way: 0 = never (no GPU, nothing to split, a disk unit, or it never wins).
  std::int64_t split_token_threshold(const UnitWork& unit) const;

 private:
  double stream_rate(const UnitWork& unit) const;  // GB/s of a copy to the GPU from its tier
  // GB/s of the cpu reading it where it is (under_copies: while a split step's copies run).
  double cpu_rate(const UnitWork& unit, bool under_copies = false) const;
  double split_copy_rate(const UnitWork& unit) const;  // GB/s of a split step's copies
  MachineConstants constants_;
};

// The threshold function the prefetch scheduler asks per unit under OffloadPolicy::Auto: the
// profile's weights in their tier (file views = Disk, assumed in the page cache), 2 FLOPs per
// parameter and token.
placement::CpuTokenThreshold cost_model_threshold(CostModel model);
// The full per-unit plan (cpu and split thresholds, split fraction) for set_offload_planner.
placement::UnitPlanner cost_model_planner(CostModel model);
UnitWork unit_work_of(const placement::UnitProfile& profile);

// ---- plan predictions ----------------------------------------------------------------------

struct PlannedUnit {
  std::string name;  // the device map entry
  UnitWork work;
};

struct PredictOptions {
  std::int64_t prefill_tokens = 512;  // per sequence
  std::int64_t batch = 1;             // sequences in a step
  std::int64_t checkpoint_bytes = 0;  // read from the checkpoint files at load
  bool checkpoint_cached = true;      // ... from the page cache
  bool gpu_main = true;  // the model runs on a GPU (else everything computes on the cpu)
  // Tokens already in the cache at the decode step (its attention reads their KV): 0 predicts a
  // step right after a short prompt, as `strata bench`'s tg test measures.
  std::int64_t decode_context = 0;
};

struct UnitPrediction {
  std::string name;
  Tier tier = Tier::Gpu;
  std::int64_t bytes = 0;
  // Where it computes at prefill and decode under the best policy ("gpu" for resident units).
  std::string prefill, decode;
  std::int64_t cpu_max_tokens = 0;    // its threshold (offloaded units with a GPU main device)
  std::int64_t split_max_tokens = 0;  // ... and its split threshold
  // Routed experts: weight bytes a decode step reads outside the expert cache (on the cpu or
  // over PCIe), 0 for other units.
  std::int64_t decode_expert_bytes = 0;
};

struct PlanPrediction {
  // load: checkpoint_bytes / (page-cache or disk read) + GPU bytes / h2d + cpu bytes / host read
  double load_seconds = 0;
  double prefill_seconds_best = 0, prefill_seconds_stream = 0;  // prefill_tokens x batch tokens
  double decode_seconds_best = 0, decode_seconds_stream = 0;    // one step of batch tokens
  // The decode step with every offloaded unit forced to the cpu (--offload-policy cpu), or split
  // where it can (--offload-policy split; the others stream).
  double decode_seconds_cpu = 0, decode_seconds_split = 0;
  std::int64_t prefill_tokens = 0;  // prefill_tokens x batch
  // The offloaded expert blocks' fixed cost in a step (expert_block_seconds summed; inside each
  // of the step times above).
  double expert_block_seconds = 0;
  std::vector<UnitPrediction> units;
  double prefill_tokens_per_second(bool best) const;
};

// A step's time is the sum of its units' times (units run one after the other; streaming
// overlaps a unit's copy with the previous unit's compute, which max() inside each unit models).
PlanPrediction predict_plan(const CostModel& model, const std::vector<PlannedUnit>& units,
                            const PredictOptions& options);

}  // namespace strata::engine

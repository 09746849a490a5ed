#pragma once
// The decode fast path (docs/decode-graph.md): one token per row for a decoder-family model
// (Llama, Mistral, Qwen2, Qwen3, SmolLM3) whose every weight sits on one CUDA GPU, as fused
// kernels captured once into a CUDA graph and replayed each step. Anything else (other families,
// offloaded or split placements, quantized weights, hooks that would not run, padded batches,
// more than 8 rows) keeps the module path: step() returns nullopt and reason() says why (logged
// once at debug level). STRATA_DECODE_GRAPH=0 in the environment turns the path off.
//
// The step reads the model's weight tensors (resolved once from the module tree, so offload and
// device maps still see the checkpoint's tensors) and writes the new keys and values into the
// KVCache in place; its logits equal the module path's within the rounding of a different
// summation order.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "strata/core/tensor.h"
#include "strata/models/causal_lm.h"
#include "strata/models/kv_cache.h"

namespace strata::models {

// False when STRATA_DECODE_GRAPH is set to 0 (or "off", "false").
bool decode_graph_allowed_by_environment();

inline constexpr const char* kDefaultL2Prefetch = "o@qkv:32,gu@o:8,qkv@down:8";

// How the fused step runs (tests compare the variants; each gives the same tokens).
struct DecodeGraphOptions {
  bool use_graph = true;     // false: launch the fused kernels each step without capturing them
  bool flash_decode = true;  // false (or STRATA_DECODE_ATTENTION=own): the step's own attention
  // Programmatic dependent launch of the GEMVs on sm_90+ (STRATA_DECODE_PDL=0 turns it off).
  bool pdl = true;
  // RMSNorm inside the following GEMV (off: measured slower; STRATA_DECODE_FUSED_NORM=1 or 0
  // overrides this).
  bool fused_norm = false;
  // L2 prefetch of later GEMVs' weights while the small kernels run (cuda::L2PrefetchPlan's spec,
  // docs/decode-graph.md; "" none). STRATA_DECODE_L2=SPEC overrides it (STRATA_DECODE_L2= none).
  // A bad spec refuses the model with the parser's message as reason(). The default is the
  // session-7 sweep's best on the 7B step (H100: 5.504 ms/token against 5.649 without, batch 1):
  // all of o_proj during attention, 8 MiB of gate/up during the post-attention norm, 8 MiB of the
  // next q/k/v during the input norm, each in a branch of the graph.
  std::string l2_prefetch = kDefaultL2Prefetch;
  // The norms after o_proj and down_proj in those GEMVs' last block instead of norm kernels
  // (cuda::DecodeWeights::tail_norm; STRATA_DECODE_TAIL_NORM=1 or 0 overrides it). Off: slower.
  bool tail_norm = false;
  // o_proj and down_proj as split-K GEMVs of this many segments (cuda::DecodeWeights::split_k; 0
  // off; STRATA_DECODE_SPLIT_K=S or SxR, R rows per warp task, overrides it). Session 12's sweep
  // of the 7B step (H100, with fused rope and the early key fetch) measured 2 at 5.139 ms/token
  // (86.4% of the copy rate) against 5.314 (83.6%) without; session 13 made it the default (bf16
  // at batch 1 only: another summation order, within the module path's rounding), and its H100
  // run measured 5.243 / 5.207 ms with it against 5.202 without (84.7-85.4%: even).
  int split_k = 2;
  bool split_down_only = false;  // split_k for down_proj alone (STRATA_DECODE_SPLIT_K=SxR@down)
  // rope_kv_write in the q/k/v GEMV's store: one launch fewer per layer, the same bits
  // (cuda::DecodeWeights::fused_rope; STRATA_DECODE_FUSED_ROPE=1 or 0 overrides it).
  // Flash decoding fetches its first key tiles before its PDL wait
  // (cuda::DecodeWeights::flash_prefetch; STRATA_DECODE_FLASH_PREFETCH=1 or 0 overrides it).
  // Both on: session 11's sweep of the 7B step (H100) measured 5.335 ms/token with them against
  // 5.435 without (83.8% of the copy rate against 82.2%).
  bool fused_rope = true;
  bool flash_prefetch = true;
};

class DecodeGraphRunner {
 public:
  // The same with every option (environment variables still turn features off; the tuning
  // sweep's STRATA_GEMV_SHAPE=RxU picks the GEMVs' rows per warp and loads in flight,
  // STRATA_GEMV_PREFETCH=N the weight passes they fetch into L2 before waiting under PDL,
  // STRATA_GEMV_PREFETCH_BLOCKS=N only the first N blocks prefetching,
  // STRATA_GEMV_SHAPE_RESIDUAL=RxU the same for o_proj and down_proj only,
  // STRATA_GEMV_GRID=N a grid-stride GEMV of at most N blocks, STRATA_GEMV_PRELOAD=1 the first
  // weight loads into registers before that wait, STRATA_GEMV_LATE_TRIGGER=1 the next kernel
  // launched once a GEMV's blocks are past their loads, STRATA_GEMV_PREFETCH_DOWN=P or PxB
  // down_proj's own prefetch passes (and blocks), STRATA_DECODE_SPLIT_K=SxR@down split-K for
  // down_proj alone).
  DecodeGraphRunner(CausalLM& model, const DecodeGraphOptions& options);
  // Checks once whether `model` can take the fused step. `use_graph` false launches the fused
  // kernels each step without capturing them (tests compare the two). `flash_decode` false (or
  // STRATA_DECODE_ATTENTION=own) keeps every layer on the step's own split-key attention kernel
  // instead of launch_flash_decode.
  explicit DecodeGraphRunner(CausalLM& model, bool use_graph = true, bool flash_decode = true);
  ~DecodeGraphRunner();
  DecodeGraphRunner(const DecodeGraphRunner&) = delete;
  DecodeGraphRunner& operator=(const DecodeGraphRunner&) = delete;

  // Whether the model takes the fused step at all (reason() says why not).
  bool usable() const { return reason_.empty(); }
  // Why the last refused model or step takes the module path ("" when none was refused).
  const std::string& reason() const { return reason_.empty() ? step_reason_ : reason_; }

  // One decode step: `input_ids` int64 [batch, 1] (any device; the cpu saves a copy) extending
  // `cache` (every layer filled to the same length on the model's GPU, batch rows, no padding).
  // Returns the logits [batch, 1, vocab] on the GPU with the cache one token longer, or nullopt
  // (nothing run, the cache untouched) when this step must take the module path.
  std::optional<Tensor> step(const Tensor& input_ids, KVCache& cache);

  // How many times the step was captured into a graph (0 without CUDA).
  int captures() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string reason_;       // why the model is refused
  std::string step_reason_;  // why the last step was refused
};

}  // namespace strata::models

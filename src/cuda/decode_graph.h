#pragma once
// The decode step of a decoder-family model as fused CUDA kernels, captured once into a CUDA
// graph and replayed every token (src/cuda/decode_graph.cc). Backend-internal: the models layer
// (src/models/decode_graph.cc) resolves the weights from the module tree and drives it; this
// header has no CUDA types so that layer compiles without the CUDA headers.
//
// One step, rows 1..8 of one token each, all tensors on one GPU in one float dtype:
//   hidden = embed[ids]
//   per layer: q|k|v = one grouped GEMV of rms_norm(hidden) (three weights, the norm in its
//              prologue, one launch);
//              per-head norm + rotary + K/V cache write at `past` (one kernel);
//              split-key attention over past + 1 keys; hidden += o_proj(attn) (GEMV epilogue);
//              act = silu(gate(x)) * up(x) with x = rms_norm(hidden) (one launch);
//              hidden += down(act) (GEMV epilogue)
//   logits = lm_head(rms_norm(hidden))
// The token ids and `past` are copied into fixed device words before each replay; everything
// else the graph touches has a fixed address until the caches reallocate, the batch changes or
// the rope table is rebuilt, which re-capture.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::cuda {

struct DecodeLayer {
  Tensor input_norm, post_norm;           // [hidden]
  Tensor q, k, v, o;                      // [out, in]
  Tensor q_bias, k_bias, v_bias, o_bias;  // [out] or undefined
  Tensor q_norm, k_norm;                  // [head_dim] (Qwen3) or undefined
  Tensor gate, up, down;
  Tensor gate_bias, up_bias, down_bias;
  // Quantized projections (models::QuantizedLinear, docs/quantization.md): where set, the dense
  // tensor of that name stays undefined (its bias is used as is) and the step runs the quantized
  // GEMV (cuda::quantized_linear) plus the separate norm / SiLU / multiply / residual-add kernels
  // the fused GEMV epilogues do for dense weights. q/k/v and gate/up are quantized together.
  std::optional<ops::QuantizedWeight> q_quant, k_quant, v_quant, o_quant;
  std::optional<ops::QuantizedWeight> gate_quant, up_quant, down_quant;
  bool rope = true;         // false: a NoPE layer (SmolLM3)
  std::int64_t window = 0;  // sliding window, 0: full attention
};

// Where the step fetches later GEMVs' weights into L2 (kernels::l2_prefetch) while the small
// kernels between the GEMVs (rotary, attention, norms) leave HBM idle. A spec is a comma list
// (parse_l2_prefetch): `TARGET@AFTER:MB` (TARGET, AFTER one of qkv, o, gu, down: the GEMVs of a
// layer in order) launches, right after AFTER's GEMV, a prefetch of the first MB mebibytes TARGET
// reads (the next layer's when TARGET is not later in the layer than AFTER; the head's after the
// last layer), in the order its warps start. The prefetch kernel runs in a parallel branch of
// the graph, or with the suffix `/chain` in the step's kernel chain (a PDL node that waits for
// AFTER's GEMV), or `/early` in the chain prefetching before that wait (overlapping AFTER's
// tail). The items `chain` and `early` set that for every fetch without a suffix, `last` marks the
// lines evict-last, `blocks=N` sets the prefetch kernel's grid.
struct L2PrefetchPlan {
  enum Gemv : int { Qkv = 0, O = 1, GateUp = 2, Down = 3 };
  enum class Mode { Branch, Chain, Early };
  struct Fetch {
    int target = O, after = Qkv;
    std::int64_t bytes = 0;
    Mode mode = Mode::Branch;
  };
  std::vector<Fetch> fetches;
  bool evict_last = false;
  int blocks = 0;
  bool empty() const { return fetches.empty(); }
  bool branches() const {
    for (const Fetch& f : fetches) {
      if (f.mode == Mode::Branch) return true;
    }
    return false;
  }
};
// InvalidArgument naming the spec and the bad item otherwise.
L2PrefetchPlan parse_l2_prefetch(const std::string& spec);

struct DecodeWeights {
  Tensor embed;  // [vocab, hidden]
  std::vector<DecodeLayer> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]
  std::int64_t q_heads = 0, kv_heads = 0, head_dim = 0, rotary_dim = 0;
  double norm_eps = 1e-6;
  // Attention of full-attention layers through launch_flash_decode (src/cuda/flash_decode.cu)
  // where it takes the shapes (bf16/f16); false, windowed layers and float32 use decode_attention.
  bool flash_decode = true;
  // Programmatic dependent launch of the step's kernels (sm_90 and newer; ignored before) at
  // batch 1, where it measured faster; batched steps launch ordinarily (decode_graph.cc).
  bool pdl = true;
  // The RMSNorms before q/k/v, gate/up and the head computed in those GEMVs' prologue (the same
  // bits) where the rows fit its shared memory (kernels::gemv_fused_norm_fits); false: separate
  // rms_norm kernels. Off by default: every block's prologue cost more than the kernel it saves
  // (H100: 7B step 5.66 ms with it, 5.52 ms without, docs/decode-graph.md).
  bool fused_norm = false;
  // Tuning sweep: the GEMVs' rows per warp and loads in flight (kernels::Gemv::rows / unroll;
  // 0 = the defaults; a shape not built for the batch takes the default).
  int gemv_rows = 0, gemv_unroll = 0;
  // The same for o_proj and down_proj alone (the GEMVs with the residual epilogue: 4096 rows at
  // 7B, where the sweep's best shape differs from the wide ones'); 0 = gemv_rows / gemv_unroll.
  int residual_rows = 0, residual_unroll = 0;
  int gemv_prefetch = -1;        // kernels::Gemv::prefetch_passes (-1: the default)
  int gemv_grid = 0;             // kernels::Gemv::grid_blocks (0: a warp per task)
  bool gemv_preload = false;     // kernels::Gemv::preload
  int gemv_prefetch_blocks = 0;  // kernels::Gemv::prefetch_blocks (0: every block)
  // L2 prefetch of later GEMVs' weights (L2PrefetchPlan; "" none), at 1-4 rows (it cost a little
  // at 8). A hint: the same bits.
  std::string l2_prefetch;
  // The RMSNorm after o_proj and after down_proj (the next layer's input norm, the final norm)
  // computed by the last block of that GEMV (kernels::Gemv::tail_norm_out; the same bits) instead
  // of a norm kernel: two launches fewer per layer. bf16/f16 with dense projections only.
  bool tail_norm = false;
  // o_proj and down_proj as split-K GEMVs (kernels::gemv_split_k: `split_k` segments of k, more and
  // shorter warp tasks for these one-wave launches; bf16 at batch 1, else the default kernel).
  // 0: off. split_rows: rows per warp task (1 or 2; 0: 2).
  int split_k = 0, split_rows = 0;
  bool split_down_only = false;  // split-K for down_proj alone (o_proj takes the default kernel)
  // rope_kv_write done in the q/k/v GEMV's store (kernels::GemvEpilogue::RopeKv; the same bits):
  // one launch fewer per layer. Dense q/k/v, no per-head q/k norm, rotation over the whole head.
  bool fused_rope = false;
  // Flash decoding requests its first key tiles before its PDL wait
  // (kernels::FlashDecodeArgs::pdl_prefetch). A hint: the same bits.
  bool flash_prefetch = false;
  bool gemv_late_trigger = false;  // kernels::Gemv::late_trigger for every GEMV of the step
  // down_proj's own kernels::Gemv::prefetch_passes / prefetch_blocks (-1: gemv_prefetch's): its
  // blocks start during gate/up's last wave, the only GEMV that follows a GEMV directly.
  int down_prefetch = -1, down_prefetch_blocks = 0;
  // The same for o_proj (its blocks are placed once flash decoding is past its loads).
  int o_prefetch = -1, o_prefetch_blocks = 0;
};

class DecodeGraph {
 public:
  // Checks that every tensor is contiguous, on the embedding's GPU, in its dtype (f32/bf16/f16),
  // with the shapes the dimensions imply (InvalidArgument naming the tensor otherwise).
  // `use_graph` false launches the kernels every step instead (the same work, for tests).
  explicit DecodeGraph(DecodeWeights weights, bool use_graph = true);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // One token per row: ids [batch] (1..8, inside the vocabulary), `past` tokens already cached;
  // keys/values: each layer's whole cache storage [batch, kv_heads, capacity, head_dim] with
  // capacity > past; cos/sin: [positions >= capacity, rotary_dim] in the model dtype on the GPU.
  // Writes the new keys and values at `past` and returns the logits [batch, vocab] (a fresh
  // tensor), queued on the compute stream.
  Tensor step(std::span<const std::int64_t> ids, std::int64_t past, std::span<const Tensor> keys,
              std::span<const Tensor> values, const Tensor& cos, const Tensor& sin);

  // How many times the step was captured (tests: re-capture on a reallocated cache).
  int captures() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::cuda

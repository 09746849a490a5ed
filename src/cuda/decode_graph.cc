// The fused decode step and its CUDA graph (decode_graph.h).

#include "cuda/decode_graph.h"

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "cuda/decode_prefetch.h"
#include "cuda/kernels.h"
#include "cuda/matvec_splitk.h"
#include "cuda/stream_internal.h"
#include "strata/core/error.h"
#include "strata/cuda/device.h"

namespace strata::cuda {
namespace {

using kernels::Type;

// Keys per split of the decode attention: enough splits to fill the GPU at short lengths, few
// enough partials to combine at long ones.
constexpr std::int64_t kAttentionChunk = 128;

// Rows up to which the step takes its L2 prefetch plan: on the H100 7B step it saved 1.7% at batch
// 1, 2.6% at 2 and 1.9% at 4, and cost 0.2-0.7% at 8 (session 7, docs/decode-graph.md), where the
// batched GEMVs are bound by their input reads rather than HBM.
constexpr std::int64_t kL2PrefetchMaxRows = 4;

Type type_of(DType dtype) { return static_cast<Type>(dtype); }

const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void check_tensor(const Tensor& t, const Shape& shape, DType dtype, Device device,
                  const std::string& name) {
  STRATA_CHECK_ARG(
      t.defined() && t.shape() == shape && t.dtype() == dtype && t.device() == device &&
          t.is_contiguous() && reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0,
      "decode graph: {} is {}; expected a contiguous, 16-byte aligned {} tensor of "
      "shape {} on {}",
      name, t.defined() ? t.describe() : std::string("undefined"), dtype, shape_str(shape), device);
}

void check_optional(const Tensor& t, const Shape& shape, DType dtype, Device device,
                    const std::string& name) {
  if (t.defined()) check_tensor(t, shape, dtype, device, name);
}

// A projection: the dense weight [out, in], or the quantized layer's packed tensors (contiguous,
// on the GPU, of the layer's shape; their formats were checked when the checkpoint loaded).
void check_projection(const Tensor& dense, const std::optional<ops::QuantizedWeight>& quant,
                      std::int64_t out, std::int64_t in, DType dtype, Device device,
                      const std::string& name) {
  if (!quant) {
    check_tensor(dense, {out, in}, dtype, device, name);
    return;
  }
  STRATA_CHECK_ARG(quant->out_features == out && quant->in_features == in,
                   "decode graph: {} is a quantized [{}, {}] layer; expected [{}, {}]", name,
                   quant->out_features, quant->in_features, out, in);
  const auto on_gpu = [&](const Tensor& t, const char* what) {
    STRATA_CHECK_ARG(t.defined() && t.device() == device && t.is_contiguous(),
                     "decode graph: {} {} is {}; expected a contiguous tensor on {}", name, what,
                     t.defined() ? t.describe() : std::string("undefined"), device);
  };
  on_gpu(quant->weight, "packed weight");
  on_gpu(quant->scale, "scale");
  if (quant->zeros) on_gpu(*quant->zeros, "zeros");
  if (quant->g_idx) on_gpu(*quant->g_idx, "g_idx");
}

std::optional<Tensor> optional_of(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

}  // namespace

struct DecodeGraph::Impl {
  DecodeWeights w;
  bool use_graph = true;
  // Programmatic dependent launch for the bound batch: w.pdl on a GPU that has it (pdl_capable),
  // at one row only. The H100 step (7B bf16, device call 2 of session 6) took 5.58 ms/token with
  // it and 5.64 without at batch 1, but 5.70 against 5.48 at batch 2, 6.46 against 6.33 at 4 and
  // 7.20 against 6.66 at 8: the waiting blocks of the next kernels cost the batched GEMVs more
  // than the launch gaps they hide.
  bool pdl = false;
  bool pdl_capable = false;
  DType dtype;
  Device device;
  int gpu = 0;
  std::int64_t hidden = 0, vocab = 0, intermediate = 0, q_out = 0, kv_out = 0;

  // What the captured graph baked in; a change re-captures.
  std::int64_t batch = 0, capacity = 0;
  int multiprocessors = 0;
  Tensor flash_scratch;  // launch_flash_decode's partials for the bound capacity
  std::vector<const void*> bound;
  int captures = 0;

  Tensor ids_past, host_ids_past, bad;
  Tensor ticket;  // the tail norm's block counter (kernels::Gemv::ticket), zero between launches
  Tensor split_partials, split_tickets;  // the split-K GEMV's (w.split_k), sized for 8 rows
  // Set while `normed` already holds the norm the next GEMV needs (a GEMV's tail norm wrote it).
  bool normed_ready = false;
  Tensor hidden_buf, normed, qkv, q_rot, attn, act, logits, partial_acc, partial_max, partial_sum;
  // Quantized layers: the projections' outputs ([rows, n] each).
  bool quantized = false;
  Tensor q_buf, k_buf, v_buf, gate_buf;
  std::vector<Tensor> keys, values;
  Tensor cos, sin;

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t copied = nullptr;

  // L2 prefetches (w.l2_prefetch): in a branch of the graph, `side` forks from the step's stream
  // after a GEMV and joins it at the end of the step.
  L2PrefetchPlan l2;
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  bool side_used = false;

  ~Impl() {
    DeviceGuard guard(gpu);
    release_graph();
    if (copied != nullptr) cudaEventDestroy(copied);
    if (fork != nullptr) cudaEventDestroy(fork);
    if (join != nullptr) cudaEventDestroy(join);
    if (side != nullptr) cudaStreamDestroy(side);
  }

  // After GEMV `after` (L2PrefetchPlan::Gemv) of `layer`: the plan's prefetches of that point,
  // one launch per mode (branch, chain, early).
  void prefetch_after(std::size_t layer, int after, cudaStream_t stream) {
    if (l2.empty() || batch > kL2PrefetchMaxRows) return;
    const auto check = [&](cudaError_t status, const char* what) {
      detail::check(status, what, gpu);
    };
    using Mode = L2PrefetchPlan::Mode;
    for (const Mode mode : {Mode::Branch, Mode::Chain, Mode::Early}) {
      kernels::L2Prefetch a = l2_fetches_after(l2, w.layers, w.lm_head, layer, after, mode);
      if (a.count == 0) continue;
      if (mode != Mode::Branch) {
        a.pdl = pdl;
        a.early = mode == Mode::Early && pdl;
        check(kernels::l2_prefetch(a, stream), "decode graph: L2 prefetch");
        continue;
      }
      check(cudaEventRecord(fork, stream), "decode graph: cudaEventRecord (L2 prefetch fork)");
      check(cudaStreamWaitEvent(side, fork, 0), "decode graph: cudaStreamWaitEvent (L2 prefetch)");
      check(kernels::l2_prefetch(a, side), "decode graph: L2 prefetch");
      side_used = true;
    }
  }

  // The prefetch branch rejoins the step (a capture must end on its origin stream).
  void join_prefetches(cudaStream_t stream) {
    if (!side_used) return;
    detail::check(cudaEventRecord(join, side), "decode graph: cudaEventRecord (L2 join)", gpu);
    detail::check(cudaStreamWaitEvent(stream, join, 0), "decode graph: cudaStreamWaitEvent", gpu);
    side_used = false;
  }

  void release_graph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    exec = nullptr;
    graph = nullptr;
  }

  // launch_flash_decode's arguments for `layer` (its attention) at the bound batch and capacity.
  kernels::FlashDecodeArgs flash_args(std::size_t layer) const {
    kernels::FlashDecodeArgs f;
    const std::int64_t d = w.head_dim;
    f.q = q_rot.data_ptr();
    f.k = keys[layer].data_ptr();
    f.v = values[layer].data_ptr();
    f.out = attn.data_ptr();
    f.type = type_of(dtype);
    f.batch = static_cast<int>(batch);
    f.q_heads = static_cast<int>(w.q_heads);
    f.kv_heads = static_cast<int>(w.kv_heads);
    f.q_len = 1;
    f.head_dim = f.v_dim = static_cast<int>(d);
    const std::int64_t q_strides[3] = {w.q_heads * d, d, d};
    const std::int64_t kv_strides[3] = {w.kv_heads * capacity * d, capacity * d, d};
    for (int i = 0; i < 3; ++i) {
      f.q_strides[i] = f.out_strides[i] = q_strides[i];
      f.k_strides[i] = f.v_strides[i] = kv_strides[i];
    }
    // The key count lives after the ids and `past` (see step()).
    f.kv_len = reinterpret_cast<const std::int32_t*>(ids_past.data<std::int64_t>() + batch + 1);
    f.max_kv_len = static_cast<int>(capacity);
    f.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    f.pdl = pdl;  // placed while rope_kv_write finishes; waits for it before reading
    // The length comes from the host copy before the replay and the keys it fetches early from
    // earlier steps: nothing the kernels before it in the step write.
    f.pdl_prefetch = pdl && w.flash_prefetch;
    return f;
  }

  bool flash_for(std::size_t layer) const {
    if (!w.flash_decode || w.layers[layer].window > 0 || capacity > INT32_MAX) return false;
    return kernels::flash_decode_supported(flash_args(layer));
  }

  void allocate(std::int64_t rows, std::int64_t cap) {
    const std::int64_t splits = kernels::decode_attention_splits(cap, kAttentionChunk);
    if (rows != batch) {
      // ids [rows], past, then the key count as int32 (launch_flash_decode's kv_len).
      ids_past = Tensor::empty({rows + 2}, DType::Int64, device);
      host_ids_past = Tensor::empty({rows + 2}, DType::Int64, Device::cpu(), MemoryKind::Pinned);
      hidden_buf = Tensor::empty({rows, hidden}, dtype, device);
      normed = Tensor::empty({rows, hidden}, dtype, device);
      qkv = Tensor::empty({rows, q_out + 2 * kv_out}, dtype, device);
      q_rot = Tensor::empty({rows, q_out}, dtype, device);
      attn = Tensor::empty({rows, q_out}, dtype, device);
      act = Tensor::empty({rows, intermediate}, dtype, device);
      logits = Tensor::empty({rows, vocab}, dtype, device);
      if (quantized) {
        q_buf = Tensor::empty({rows, q_out}, dtype, device);
        k_buf = Tensor::empty({rows, kv_out}, dtype, device);
        v_buf = Tensor::empty({rows, kv_out}, dtype, device);
        gate_buf = Tensor::empty({rows, intermediate}, dtype, device);
        // The GEMVs' split-K scratch, sized before a capture allocates nothing.
        for (const DecodeLayer& l : w.layers) {
          for (const auto* q : {&l.q_quant, &l.k_quant, &l.v_quant, &l.o_quant, &l.gate_quant,
                                &l.up_quant, &l.down_quant}) {
            if (*q) reserve_quantized_gemv(**q, rows);
          }
          if (l.q_quant)
            reserve_quantized_gemv_group({&*l.q_quant, &*l.k_quant, &*l.v_quant}, rows);
        }
      }
    }
    if (rows != batch || cap != capacity) {
      const std::int64_t heads = rows * w.q_heads * splits;
      partial_acc = Tensor::empty({heads * w.head_dim}, DType::Float32, device);
      partial_max = Tensor::empty({heads}, DType::Float32, device);
      partial_sum = Tensor::empty({heads}, DType::Float32, device);
    }
    batch = rows;
    capacity = cap;
    flash_scratch = Tensor();
  }

  // Scratch for the flash decode kernel's splits at this capacity (the same for every layer).
  void prepare_flash() {
    if (multiprocessors == 0) {
      detail::check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, gpu),
                    "cudaDeviceGetAttribute", gpu);
    }
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      if (!flash_for(l)) continue;
      kernels::FlashDecodeArgs f = flash_args(l);
      f.splits = kernels::flash_decode_splits(f, multiprocessors);
      const std::size_t bytes = kernels::flash_decode_scratch_bytes(f);
      flash_splits = f.splits;
      if (bytes > 0) {
        // Zeros: the flash kernel's ticket counters must start at zero (each launch leaves them
        // so).
        flash_scratch = Tensor::zeros({static_cast<std::int64_t>((bytes + 15) / 16) * 4},
                                      DType::Float32, device);
      }
      return;
    }
  }
  int flash_splits = 1;

  kernels::Gemv gemv(const void* x, std::int64_t k) const {
    kernels::Gemv g;
    g.type = type_of(dtype);
    g.batch = batch;
    g.k = k;
    g.x = x;
    g.ldx = k;
    g.pdl = pdl;
    g.rows = w.gemv_rows;
    g.unroll = w.gemv_unroll;
    g.prefetch_passes = w.gemv_prefetch;
    g.grid_blocks = w.gemv_grid;
    g.prefetch_blocks = w.gemv_prefetch_blocks;
    g.preload = w.gemv_preload;
    g.late_trigger = w.gemv_late_trigger;
    return g;
  }

  // The layer's q/k/v GEMV does rope_kv_write's work in its store (w.fused_rope): dense bf16/f16
  // weights, no per-head norm, the whole head rotated (or none: a NoPE layer), the norm kernel
  // before it (the RopeKv kernels are built without the fused norm).
  bool rope_in_gemv(const DecodeLayer& layer) const {
    return w.fused_rope && !layer.q_quant && !layer.q_norm.defined() && !layer.k_norm.defined() &&
           (!layer.rope || w.rotary_dim == w.head_dim) && dtype != DType::Float32 && !fuse_norm();
  }

  // o_proj / down_proj: the residual GEMVs' own tuning shape where one is set.
  kernels::Gemv residual_gemv(const void* x, std::int64_t k) const {
    kernels::Gemv g = gemv(x, k);
    if (w.residual_rows > 0) {
      g.rows = w.residual_rows;
      g.unroll = w.residual_unroll;
    }
    return g;
  }

  // A GEMV of rms_norm(hidden_buf, gamma): the norm in the GEMV's prologue where it fits, else
  // the rms_norm kernel into `normed` first.
  kernels::Gemv normed_gemv(const Tensor& gamma, cudaStream_t stream, const char* what) {
    if (normed_ready) {
      normed_ready = false;
      return gemv(normed.data_ptr(), hidden);
    }
    if (fuse_norm()) {
      kernels::Gemv g = gemv(hidden_buf.data_ptr(), hidden);
      g.norm_weight = gamma.data_ptr();
      g.norm_eps = static_cast<float>(w.norm_eps);
      return g;
    }
    detail::check(kernels::rms_norm(hidden_buf.data_ptr(), gamma.data_ptr(), normed.data_ptr(),
                                    type_of(dtype), batch, hidden, static_cast<float>(w.norm_eps),
                                    stream, pdl),
                  what, gpu);
    return gemv(normed.data_ptr(), hidden);
  }

  // o_proj / down_proj: the split-K kernel where it is asked for and built, else the GEMV.
  cudaError_t residual(const kernels::Gemv& g, cudaStream_t stream, bool down) {
    if (w.split_k > 1 && (down || !w.split_down_only)) {
      kernels::GemvSplitK s;
      s.g = g;
      s.g.rows = w.split_rows;
      s.g.unroll = 0;
      s.split = w.split_k;
      s.partials = split_partials.data<float>();
      s.tickets = static_cast<unsigned*>(split_tickets.data_ptr());
      if (kernels::gemv_split_k_supported(s)) return kernels::gemv_split_k(s, stream);
    }
    return kernels::gemv(g, stream);
  }

  // o_proj / down_proj writing rms_norm(hidden, gamma) into `normed` from its last block, for a
  // dense GEMV whose reader takes `normed` (w.tail_norm; bf16/f16, the norm not fused forward).
  void tail_norm_into(kernels::Gemv& g, const Tensor& gamma, bool reader_dense) {
    if (!w.tail_norm || !reader_dense || fuse_norm() || dtype == DType::Float32) return;
    g.tail_norm_weight = gamma.data_ptr();
    g.tail_norm_out = normed.data_ptr();
    g.norm_eps = static_cast<float>(w.norm_eps);
    g.ticket = static_cast<unsigned*>(ticket.data_ptr());
    normed_ready = true;
  }

  bool fuse_norm() const {
    return w.fused_norm && kernels::gemv_fused_norm_fits(type_of(dtype), batch, hidden);
  }

  // decode_attention (decode_step.cu) for `layer`: windows, float32, or flash decode refused.
  void record_own_attention(std::size_t l, const std::int64_t* past, cudaStream_t stream) {
    const DecodeLayer& layer = w.layers[l];
    const Type type = type_of(dtype);
    kernels::DecodeAttention at;
    at.type = type;
    at.batch = batch;
    at.q_heads = w.q_heads;
    at.kv_heads = w.kv_heads;
    at.head_dim = w.head_dim;
    at.capacity = capacity;
    at.window = layer.window;
    at.chunk = kAttentionChunk;
    at.splits = kernels::decode_attention_splits(capacity, kAttentionChunk);
    at.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w.head_dim)));
    at.q = q_rot.data_ptr();
    at.k_cache = keys[l].data_ptr();
    at.v_cache = values[l].data_ptr();
    at.past = past;
    at.partial_acc = partial_acc.data<float>();
    at.partial_max = partial_max.data<float>();
    at.partial_sum = partial_sum.data<float>();
    at.out = attn.data_ptr();
    detail::check(kernels::decode_attention(at, stream), "decode graph: attention", gpu);
  }

  // ---- quantized layers: the quantized GEMV, then the ops the dense epilogues fuse ----
  // rms_norm(hidden_buf, gamma) -> normed.
  void norm_into_normed(const Tensor& gamma, cudaStream_t stream, const char* what) {
    detail::check(kernels::rms_norm(hidden_buf.data_ptr(), gamma.data_ptr(), normed.data_ptr(),
                                    type_of(dtype), batch, hidden, static_cast<float>(w.norm_eps),
                                    stream, pdl),
                  what, gpu);
  }

  // q, k, v of a quantized layer into q_buf, k_buf, v_buf.
  void quantized_qkv(const DecodeLayer& layer, cudaStream_t stream) {
    norm_into_normed(layer.input_norm, stream, "decode graph: input_layernorm");
    // One launch for the three where the tensor-core kernels take them (a 4096 x 4096 int4 layer
    // is ~3 us of reading and took 6-8 us on its own: docs/quantization.md); else one by one.
    const std::optional<Tensor> q_bias = optional_of(layer.q_bias),
                                k_bias = optional_of(layer.k_bias),
                                v_bias = optional_of(layer.v_bias);
    quantized_linear_group_pdl(normed,
                               {{&*layer.q_quant, &q_bias, &q_buf},
                                {&*layer.k_quant, &k_bias, &k_buf},
                                {&*layer.v_quant, &v_bias, &v_buf}},
                               pdl);
  }

  // act = silu(gate(x)) * up(x), x = rms_norm(hidden_buf), for a quantized layer: the SiLU and
  // the product in the up GEMV's store.
  void quantized_gate_up(const DecodeLayer& layer, cudaStream_t stream) {
    norm_into_normed(layer.post_norm, stream, "decode graph: post_attention_layernorm");
    quantized_linear_pdl(normed, *layer.gate_quant, optional_of(layer.gate_bias), gate_buf, pdl);
    quantized_linear_pdl(normed, *layer.up_quant, optional_of(layer.up_bias), act, pdl, nullptr,
                         &gate_buf);
  }

  // rope_kv_write of layer l (per-head norm + rotary + cache write) from the q/k/v buffers.
  void record_rope(std::size_t l, cudaStream_t stream) {
    const DecodeLayer& layer = w.layers[l];
    const Type type = type_of(dtype);
    const std::int64_t qkv_width = q_out + 2 * kv_out;
    auto* qkv_base = static_cast<char*>(qkv.data_ptr());
    const auto elem = static_cast<std::int64_t>(dtype_size(dtype));
    const std::int64_t* past = static_cast<const std::int64_t*>(ids_past.data_ptr()) + batch;
    const auto eps = static_cast<float>(w.norm_eps);
    kernels::RopeKvWrite rope;
    rope.type = type;
    rope.batch = batch;
    rope.q_heads = w.q_heads;
    rope.kv_heads = w.kv_heads;
    rope.head_dim = w.head_dim;
    rope.rotary_dim = w.rotary_dim;
    rope.capacity = capacity;
    rope.q = qkv_base;
    rope.k = qkv_base + q_out * elem;
    rope.v = qkv_base + (q_out + kv_out) * elem;
    rope.ldq = rope.ldk = rope.ldv = qkv_width;
    if (layer.q_quant) {  // the quantized GEMVs wrote q, k, v apart
      rope.q = q_buf.data_ptr();
      rope.k = k_buf.data_ptr();
      rope.v = v_buf.data_ptr();
      rope.ldq = q_out;
      rope.ldk = rope.ldv = kv_out;
    }
    rope.q_norm = ptr_or_null(layer.q_norm);
    rope.k_norm = ptr_or_null(layer.k_norm);
    rope.eps = eps;
    rope.cos = layer.rope ? cos.data_ptr() : nullptr;
    rope.sin = layer.rope ? sin.data_ptr() : nullptr;
    rope.past = past;
    rope.q_out = q_rot.data_ptr();
    rope.k_cache = keys[l].data_ptr();
    rope.v_cache = values[l].data_ptr();
    rope.pdl = pdl;
    detail::check(kernels::rope_kv_write(rope, stream), "decode graph: rotary and cache write",
                  gpu);
  }

  // Every kernel of one step on `stream` (captured, or run as is).
  void record(cudaStream_t stream) {
    side_used = false;  // a capture that failed half way may have left it set
    normed_ready = false;
    const auto check = [&](cudaError_t status, const char* what) {
      detail::check(status, what, gpu);
    };
    auto* ids = static_cast<std::int64_t*>(ids_past.data_ptr());
    const std::int64_t* past = ids + batch;
    kernels::Strided id_view;
    id_view.data = ids;
    id_view.type = Type::Int64;
    id_view.rank = 1;
    id_view.sizes[0] = batch;
    id_view.strides[0] = 1;
    check(kernels::embedding(id_view, batch, w.embed.data_ptr(), vocab,
                             hidden * static_cast<std::int64_t>(dtype_size(dtype)),
                             hidden_buf.data_ptr(),
                             static_cast<unsigned long long*>(bad.data_ptr()), stream),
          "decode graph: embedding");
    const std::int64_t qkv_width = q_out + 2 * kv_out;
    auto* qkv_base = static_cast<char*>(qkv.data_ptr());
    const auto elem = static_cast<std::int64_t>(dtype_size(dtype));
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      const DecodeLayer& layer = w.layers[l];
      if (layer.q_quant) {
        quantized_qkv(layer, stream);
      } else {
        kernels::Gemv proj = normed_gemv(layer.input_norm, stream, "decode graph: input_layernorm");
        proj.group_count = 3;
        proj.groups[0] = {layer.q.data_ptr(), ptr_or_null(layer.q_bias), qkv_base, q_out,
                          qkv_width};
        proj.groups[1] = {layer.k.data_ptr(), ptr_or_null(layer.k_bias), qkv_base + q_out * elem,
                          kv_out, qkv_width};
        proj.groups[2] = {layer.v.data_ptr(), ptr_or_null(layer.v_bias),
                          qkv_base + (q_out + kv_out) * elem, kv_out, qkv_width};
        if (rope_in_gemv(layer)) {
          proj.epilogue = kernels::GemvEpilogue::RopeKv;
          proj.groups[0].out = q_rot.data_ptr();
          proj.groups[0].ldo = q_out;
          kernels::GemvRope& r = proj.rope;
          r.cos = layer.rope ? cos.data_ptr() : nullptr;
          r.sin = layer.rope ? sin.data_ptr() : nullptr;
          r.past = past;
          r.k_cache = keys[l].data_ptr();
          r.v_cache = values[l].data_ptr();
          r.head_dim = w.head_dim;
          r.kv_heads = w.kv_heads;
          r.capacity = capacity;
        }
        check(kernels::gemv(proj, stream), "decode graph: q/k/v projections");
      }
      prefetch_after(l, L2PrefetchPlan::Qkv, stream);
      if (!rope_in_gemv(layer)) record_rope(l, stream);

      if (flash_for(l)) {
        kernels::FlashDecodeArgs f = flash_args(l);
        f.splits = flash_splits;
        f.scratch = flash_scratch.defined() ? flash_scratch.data<float>() : nullptr;
        check(kernels::launch_flash_decode(f, stream), "decode graph: flash decode attention");
      } else {
        record_own_attention(l, past, stream);
      }

      if (layer.o_quant) {
        // hidden += o_proj(attn): the add in the GEMV's store, as the dense epilogue.
        quantized_linear_pdl(attn, *layer.o_quant, optional_of(layer.o_bias), hidden_buf, pdl,
                             &hidden_buf);
      } else {
        kernels::Gemv o = residual_gemv(attn.data_ptr(), q_out);
        o.groups[0] = {layer.o.data_ptr(), ptr_or_null(layer.o_bias), hidden_buf.data_ptr(), hidden,
                       hidden};
        o.epilogue = kernels::GemvEpilogue::AddResidual;
        o.residual = hidden_buf.data_ptr();
        if (w.o_prefetch >= 0) {
          o.prefetch_passes = w.o_prefetch;
          o.prefetch_blocks = w.o_prefetch_blocks;
        }
        tail_norm_into(o, layer.post_norm, !layer.gate_quant);
        check(residual(o, stream, false), "decode graph: o_proj");
      }
      prefetch_after(l, L2PrefetchPlan::O, stream);

      if (layer.gate_quant) {
        quantized_gate_up(layer, stream);
      } else {
        kernels::Gemv gate_up =
            normed_gemv(layer.post_norm, stream, "decode graph: post_attention_layernorm");
        gate_up.group_count = 2;
        gate_up.groups[0] = {layer.gate.data_ptr(), ptr_or_null(layer.gate_bias), act.data_ptr(),
                             intermediate, intermediate};
        gate_up.groups[1] = {layer.up.data_ptr(), ptr_or_null(layer.up_bias), nullptr, intermediate,
                             intermediate};
        gate_up.epilogue = kernels::GemvEpilogue::SiluMul;
        check(kernels::gemv(gate_up, stream), "decode graph: gate/up projections");
      }
      prefetch_after(l, L2PrefetchPlan::GateUp, stream);

      if (layer.down_quant) {
        quantized_linear_pdl(act, *layer.down_quant, optional_of(layer.down_bias), hidden_buf, pdl,
                             &hidden_buf);
      } else {
        kernels::Gemv down = residual_gemv(act.data_ptr(), intermediate);
        down.groups[0] = {layer.down.data_ptr(), ptr_or_null(layer.down_bias),
                          hidden_buf.data_ptr(), hidden, hidden};
        down.epilogue = kernels::GemvEpilogue::AddResidual;
        down.residual = hidden_buf.data_ptr();
        if (w.down_prefetch >= 0) {
          down.prefetch_passes = w.down_prefetch;
          down.prefetch_blocks = w.down_prefetch_blocks;
        }
        if (l + 1 < w.layers.size()) {
          tail_norm_into(down, w.layers[l + 1].input_norm, !w.layers[l + 1].q_quant);
        } else {
          tail_norm_into(down, w.final_norm, true);
        }
        check(residual(down, stream, true), "decode graph: down_proj");
      }
      prefetch_after(l, L2PrefetchPlan::Down, stream);
    }
    kernels::Gemv head = normed_gemv(w.final_norm, stream, "decode graph: final norm");
    head.groups[0] = {w.lm_head.data_ptr(), nullptr, logits.data_ptr(), vocab, vocab};
    check(kernels::gemv(head, stream), "decode graph: lm_head");
    join_prefetches(stream);
  }

  void capture(cudaStream_t stream) {
    release_graph();
    detail::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                  "cudaStreamBeginCapture", gpu);
    try {
      record(stream);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      throw;
    }
    detail::check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture", gpu);
    detail::check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate", gpu);
    ++captures;
  }
};

DecodeGraph::DecodeGraph(DecodeWeights weights, bool use_graph) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.w = std::move(weights);
  m.use_graph = use_graph;
  const DecodeWeights& w = m.w;
  STRATA_CHECK_ARG(w.embed.defined() && w.embed.dim() == 2 && w.embed.is_cuda(),
                   "decode graph: the embedding must be a [vocab, hidden] tensor on a GPU, got {}",
                   w.embed.defined() ? w.embed.describe() : std::string("undefined"));
  m.dtype = w.embed.dtype();
  STRATA_CHECK_ARG(
      m.dtype == DType::BFloat16 || m.dtype == DType::Float16 || m.dtype == DType::Float32,
      "decode graph: weights in {}; it takes bfloat16, float16 or float32", m.dtype);
  m.device = w.embed.device();
  m.gpu = m.device.index();
  m.vocab = w.embed.size(0);
  m.hidden = w.embed.size(1);
  STRATA_CHECK_ARG(!w.layers.empty() && w.q_heads > 0 && w.kv_heads > 0 &&
                       w.q_heads % w.kv_heads == 0 && w.head_dim > 0 && w.head_dim <= 256 &&
                       w.rotary_dim >= 0 && w.rotary_dim <= w.head_dim && w.rotary_dim % 2 == 0,
                   "decode graph: {} layers, {} query heads over {} key/value heads of {} "
                   "dimensions ({} rotated) are not a shape it runs",
                   w.layers.size(), w.q_heads, w.kv_heads, w.head_dim, w.rotary_dim);
  m.q_out = w.q_heads * w.head_dim;
  m.kv_out = w.kv_heads * w.head_dim;
  const DecodeLayer& first = w.layers[0];
  m.intermediate = first.gate.defined() ? first.gate.size(0)
                   : first.gate_quant   ? first.gate_quant->out_features
                                        : 0;
  const std::int64_t per16 = 16 / static_cast<std::int64_t>(dtype_size(m.dtype));
  STRATA_CHECK_ARG(m.hidden % per16 == 0 && m.q_out % per16 == 0 && m.intermediate % per16 == 0,
                   "decode graph: hidden {}, attention width {} and intermediate {} must be "
                   "multiples of {} elements (16-byte loads)",
                   m.hidden, m.q_out, m.intermediate, per16);
  const DType t = m.dtype;
  const Device d = m.device;
  const std::int64_t h = m.hidden, in = m.intermediate;
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const DecodeLayer& l = w.layers[i];
    const auto name = [&](const char* what) { return "layer " + std::to_string(i) + " " + what; };
    check_tensor(l.input_norm, {h}, t, d, name("input_layernorm"));
    check_tensor(l.post_norm, {h}, t, d, name("post_attention_layernorm"));
    STRATA_CHECK_ARG(l.q_quant.has_value() == l.k_quant.has_value() &&
                         l.q_quant.has_value() == l.v_quant.has_value() &&
                         l.gate_quant.has_value() == l.up_quant.has_value(),
                     "decode graph: layer {} quantizes only some of q/k/v or gate/up", i);
    m.quantized = m.quantized || l.q_quant || l.o_quant || l.gate_quant || l.down_quant;
    check_projection(l.q, l.q_quant, m.q_out, h, t, d, name("q_proj"));
    check_projection(l.k, l.k_quant, m.kv_out, h, t, d, name("k_proj"));
    check_projection(l.v, l.v_quant, m.kv_out, h, t, d, name("v_proj"));
    check_projection(l.o, l.o_quant, h, m.q_out, t, d, name("o_proj"));
    check_optional(l.q_bias, {m.q_out}, t, d, name("q_proj bias"));
    check_optional(l.k_bias, {m.kv_out}, t, d, name("k_proj bias"));
    check_optional(l.v_bias, {m.kv_out}, t, d, name("v_proj bias"));
    check_optional(l.o_bias, {h}, t, d, name("o_proj bias"));
    check_optional(l.q_norm, {w.head_dim}, t, d, name("q_norm"));
    check_optional(l.k_norm, {w.head_dim}, t, d, name("k_norm"));
    check_projection(l.gate, l.gate_quant, in, h, t, d, name("gate_proj"));
    check_projection(l.up, l.up_quant, in, h, t, d, name("up_proj"));
    check_projection(l.down, l.down_quant, h, in, t, d, name("down_proj"));
    check_optional(l.gate_bias, {in}, t, d, name("gate_proj bias"));
    check_optional(l.up_bias, {in}, t, d, name("up_proj bias"));
    check_optional(l.down_bias, {h}, t, d, name("down_proj bias"));
  }
  check_tensor(w.embed, {m.vocab, h}, t, d, "embed_tokens");
  check_tensor(w.final_norm, {h}, t, d, "norm");
  check_tensor(w.lm_head, {m.vocab, h}, t, d, "lm_head");
  m.bad = Tensor::zeros({1}, DType::Int64, d);
  m.ticket = Tensor::zeros({1}, DType::Int32, d);
  if (w.split_k > 1) {
    STRATA_CHECK_ARG(w.split_k <= 16 && w.split_rows >= 0 && w.split_rows <= 2,
                     "decode graph: split-K of {} segments and {} rows per task; it takes 2 to 16 "
                     "segments of 1 or 2 rows",
                     w.split_k, w.split_rows);
    m.split_partials = Tensor::empty({w.split_k * kernels::kMaxGemvBatch * h}, DType::Float32, d);
    m.split_tickets = Tensor::zeros({h}, DType::Int32, d);
  }
  DeviceGuard guard(m.gpu);
  detail::check(cudaEventCreateWithFlags(&m.copied, cudaEventDisableTiming), "cudaEventCreate",
                m.gpu);
  // Programmatic dependent launch needs sm_90; before it the attribute would be refused.
  int major = 0;
  detail::check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, m.gpu),
                "cudaDeviceGetAttribute", m.gpu);
  m.pdl_capable = w.pdl && major >= 9;
  m.l2 = parse_l2_prefetch(w.l2_prefetch);
  if (m.l2.branches()) {
    detail::check(cudaStreamCreateWithFlags(&m.side, cudaStreamNonBlocking), "cudaStreamCreate",
                  m.gpu);
    detail::check(cudaEventCreateWithFlags(&m.fork, cudaEventDisableTiming), "cudaEventCreate",
                  m.gpu);
    detail::check(cudaEventCreateWithFlags(&m.join, cudaEventDisableTiming), "cudaEventCreate",
                  m.gpu);
  }
}

DecodeGraph::~DecodeGraph() = default;

int DecodeGraph::captures() const { return impl_->captures; }

Tensor DecodeGraph::step(std::span<const std::int64_t> ids, std::int64_t past,
                         std::span<const Tensor> keys, std::span<const Tensor> values,
                         const Tensor& cos, const Tensor& sin) {
  Impl& m = *impl_;
  const auto rows = static_cast<std::int64_t>(ids.size());
  STRATA_CHECK_ARG(rows >= 1 && rows <= kernels::kMaxGemvBatch,
                   "decode graph: {} rows; it runs 1 to {}", rows, kernels::kMaxGemvBatch);
  STRATA_CHECK_ARG(keys.size() == m.w.layers.size() && values.size() == m.w.layers.size(),
                   "decode graph: {} key and {} value caches for {} layers", keys.size(),
                   values.size(), m.w.layers.size());
  const std::int64_t cap = keys[0].defined() && keys[0].dim() == 4 ? keys[0].size(2) : 0;
  STRATA_CHECK_ARG(past >= 0 && past < cap, "decode graph: {} cached tokens in a capacity of {}",
                   past, cap);
  const Shape cache_shape{rows, m.w.kv_heads, cap, m.w.head_dim};
  for (std::size_t l = 0; l < keys.size(); ++l) {
    check_tensor(keys[l], cache_shape, m.dtype, m.device, "key cache " + std::to_string(l));
    check_tensor(values[l], cache_shape, m.dtype, m.device, "value cache " + std::to_string(l));
  }
  const Shape table{cos.defined() ? cos.size(0) : 0, m.w.rotary_dim};
  STRATA_CHECK_ARG(table[0] >= cap,
                   "decode graph: rope tables of {} positions for a capacity of {}", table[0], cap);
  check_tensor(cos, table, m.dtype, m.device, "rope cos table");
  check_tensor(sin, table, m.dtype, m.device, "rope sin table");

  std::vector<const void*> bound;
  bound.reserve(2 * keys.size() + 2);
  for (std::size_t l = 0; l < keys.size(); ++l) {
    bound.push_back(keys[l].data_ptr());
    bound.push_back(values[l].data_ptr());
  }
  bound.push_back(cos.data_ptr());
  bound.push_back(sin.data_ptr());

  DeviceGuard guard(m.gpu);
  cudaStream_t stream = detail::compute_stream_handle(m.gpu);
  const bool rebind = rows != m.batch || cap != m.capacity || bound != m.bound;
  if (rebind) {
    m.allocate(rows, cap);
    m.pdl = m.pdl_capable && rows == 1;
    m.keys.assign(keys.begin(), keys.end());
    m.values.assign(values.begin(), values.end());
    m.cos = cos;
    m.sin = sin;
    m.bound = std::move(bound);
    m.release_graph();
    m.prepare_flash();
  }
  // The previous step's copy must have read the pinned words before they are rewritten.
  detail::check(cudaEventSynchronize(m.copied), "cudaEventSynchronize", m.gpu);
  auto* host = m.host_ids_past.data<std::int64_t>();
  for (std::int64_t r = 0; r < rows; ++r) host[r] = ids[static_cast<std::size_t>(r)];
  host[rows] = past;
  const auto keys_now = static_cast<std::int32_t>(past + 1);
  std::memcpy(host + rows + 1, &keys_now, sizeof keys_now);  // flash decode's int32 kv_len
  detail::check(cudaMemcpyAsync(m.ids_past.data_ptr(), host,
                                static_cast<std::size_t>(rows + 2) * sizeof(std::int64_t),
                                cudaMemcpyHostToDevice, stream),
                "decode graph: cudaMemcpyAsync of the token ids", m.gpu);
  detail::check(cudaEventRecord(m.copied, stream), "cudaEventRecord", m.gpu);
  if (m.use_graph) {
    if (m.exec == nullptr) m.capture(stream);
    detail::check(cudaGraphLaunch(m.exec, stream), "cudaGraphLaunch", m.gpu);
  } else {
    m.record(stream);
  }
  Tensor out = Tensor::empty({rows, m.vocab}, m.dtype, m.device);
  out.copy_(m.logits);
  return out;
}

}  // namespace strata::cuda

#pragma once
// Launchers of the CUDA kernels (src/cuda/*.cu). C++17 and free of strata's C++20 headers so the
// .cu files can include it; the host entry points (cuda_ops*.cc) turn Tensors into these
// arguments. Every launcher queues work on `stream` and returns the launch status.

#include <cuda_runtime.h>

#include <cstdint>

namespace strata::cuda::kernels {

// strata::DType ids (checked against the enum in cuda_ops.cc).
enum class Type : std::uint8_t {
  Bool = 0,
  UInt8 = 1,
  Int8 = 2,
  Int16 = 3,
  Int32 = 4,
  Int64 = 5,
  Float16 = 6,
  BFloat16 = 7,
  Float32 = 8,
  Float64 = 9,
  Float8E4M3FN = 10,
  Float8E5M2 = 11,
};

inline constexpr int kMaxRank = 8;

// A strided view: element strides, any of them 0 for a broadcast dimension.
struct Strided {
  void* data = nullptr;
  Type type = Type::Float32;
  int rank = 0;
  std::int64_t sizes[kMaxRank] = {};
  std::int64_t strides[kMaxRank] = {};
};

// dst <- src element by element (same shape), converting with PyTorch's rules for every pair.
cudaError_t strided_convert(const Strided& dst, const Strided& src, std::int64_t numel,
                            cudaStream_t stream);

enum class Unary { Silu, GeluErf, GeluTanh, Relu, Tanh };
enum class Binary { Add, Mul };
// Contiguous x and out of one float dtype (f32/bf16/f16).
cudaError_t unary(Unary op, const void* x, void* out, Type type, std::int64_t n,
                  cudaStream_t stream);
// a and b have out's shape (stride 0 where broadcast); out contiguous.
cudaError_t binary(Binary op, const Strided& a, const Strided& b, void* out, std::int64_t n,
                   cudaStream_t stream);

// out = ((parts[0] + parts[1]) + parts[2]) + ... over `count` contiguous tensors of n elements
// of one float type, every partial sum rounded to it as a chain of binary adds rounds (the same
// bits in one launch; a mixture-of-experts token sums its top-k outputs so). out may be a part.
inline constexpr int kMaxSumParts = 16;
struct SumParts {
  const void* parts[kMaxSumParts] = {};
  int count = 0;
};
cudaError_t sum_in_order(const SumParts& parts, void* out, Type type, std::int64_t n,
                         cudaStream_t stream);

// Row-wise over the last dimension of contiguous [rows, dim] tensors. weight/bias may be null for
// layer_norm.
// `pdl`: programmatic dependent launch (Gemv::pdl; the kernel waits before reading anything).
cudaError_t rms_norm(const void* x, const void* weight, void* out, Type type, std::int64_t rows,
                     std::int64_t dim, float eps, cudaStream_t stream, bool pdl = false);
cudaError_t layer_norm(const void* x, const void* weight, const void* bias, void* out, Type type,
                       std::int64_t rows, std::int64_t dim, float eps, cudaStream_t stream);
// Contiguous x viewed as [outer, dim, inner]; softmax along the middle dimension.
cudaError_t softmax(const void* x, void* out, Type type, std::int64_t outer, std::int64_t dim,
                    std::int64_t inner, cudaStream_t stream);

// x, cos, sin: [B, H, S, D] views (unit stride in D, stride 0 where broadcast); cos/sin are
// float32 or x's type; out contiguous in x's type.
cudaError_t rotary(const Strided& x, const Strided& cos, const Strided& sin, void* out,
                   cudaStream_t stream);

// out[i] = table row ids[i] (row_bytes each). The smallest offending position is written to
// *bad (initialised by the caller to n) when an id is outside [0, vocab).
cudaError_t embedding(const Strided& ids, std::int64_t n, const void* table, std::int64_t vocab,
                      std::int64_t row_bytes, void* out, unsigned long long* bad,
                      cudaStream_t stream);

// Contiguous x viewed as [outer, dim, inner]; NaN is largest, the first index wins ties.
cudaError_t argmax(const void* x, Type type, std::int64_t outer, std::int64_t dim,
                   std::int64_t inner, std::int64_t* out, cudaStream_t stream);
cudaError_t topk(const void* x, Type type, std::int64_t outer, std::int64_t dim, std::int64_t inner,
                 std::int64_t k, void* values, std::int64_t* indices, cudaStream_t stream);

// out[r, c] += bias[c] on a contiguous [rows, cols] matrix of one float type.
cudaError_t add_bias_rows(void* out, const void* bias, Type type, std::int64_t rows,
                          std::int64_t cols, cudaStream_t stream);

// Skinny products for decode: out[b, n] = dot(weight[n, :], x[b, :]) (+ bias[n]) for 1..8 input
// rows, reading each weight once for all of them (src/cuda/matvec.cu). k a multiple of 16 bytes'
// worth of elements and every pointer 16-byte aligned (the caller checks); float32 accumulation,
// one rounding to the output type, then the epilogue:
//   Store        out = y
//   AddResidual  out = residual + y (each rounded as separate ops would; out may be residual)
//   SiluMul      groups[0] is the gate, groups[1] the up projection (same n):
//                groups[0].out = silu(gate) * up
//   RopeKv       rope_kv_write in the store (Gemv::rope): groups q, k, v over one x; q rotated
//                into groups[0].out, k rotated and v as is into the caches at row *past. Each
//                warp owns rotation pairs (d, d + head_dim / 2) of q and k, so the q/k/v GEMV and
//                the rotary kernel are one launch (the same bits as gemv then rope_kv_write).
//                bf16/f16, default shapes, no fused norm (else cudaErrorInvalidValue).
inline constexpr int kMaxGemvBatch = 8;
inline constexpr int kMaxGemvGroups = 3;
enum class GemvEpilogue : std::uint8_t { Store, AddResidual, SiluMul, RopeKv };
// GemvEpilogue::RopeKv's side: the rotation over the whole head (rotary_dim == head_dim; cos/sin
// [positions, head_dim] in x's type, null: no rotation, a NoPE layer) at position *past, and the
// caches [batch, kv_heads, capacity, head_dim] (KVCache's layout) the key and value rows go to.
struct GemvRope {
  const void* cos = nullptr;
  const void* sin = nullptr;
  const std::int64_t* past = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  std::int64_t head_dim = 0, kv_heads = 0, capacity = 0;
};
struct GemvGroup {
  const void* weight = nullptr;  // [n, k] row-major
  const void* bias = nullptr;    // [n] or null
  void* out = nullptr;           // [batch, ldo]
  std::int64_t n = 0;
  std::int64_t ldo = 0;  // elements between output rows
};
struct Gemv {
  Type type = Type::BFloat16;  // of x, weights, biases and outputs
  std::int64_t batch = 1, k = 0;
  const void* x = nullptr;  // [batch, ldx]
  std::int64_t ldx = 0;
  GemvGroup groups[kMaxGemvGroups];  // several weights over the same x in one launch (q/k/v)
  int group_count = 1;
  GemvEpilogue epilogue = GemvEpilogue::Store;
  const void* residual = nullptr;  // AddResidual: [batch, groups[0].ldo]
  GemvRope rope;                   // RopeKv
  // Fused RMSNorm: x is the raw hidden state and each block first computes rms_norm(x,
  // norm_weight [k], norm_eps) into shared memory with rms_norm's exact summation order and
  // rounding (the same bits), so the norm kernel before the product goes away. Needs
  // batch * k * sizeof(type) bytes of shared memory and bf16/f16 (gemv_fused_norm_fits).
  const void* norm_weight = nullptr;
  float norm_eps = 1e-6f;
  // RMSNorm of the result in the last block (AddResidual, bf16/f16): once every block has stored
  // its rows, the last to finish writes rms_norm(out rows, tail_norm_weight [n], norm_eps) to
  // tail_norm_out [batch, groups[0].ldo] with rms_norm's order and roundings (the same bits), so
  // the norm kernel before the next GEMV goes away. `ticket`: a device counter, zero before the
  // launch and left zero after it.
  const void* tail_norm_weight = nullptr;
  void* tail_norm_out = nullptr;
  unsigned* ticket = nullptr;
  // Programmatic dependent launch (sm_90): launched with programmatic stream serialization, the
  // kernel issues its first weight loads (weights do not depend on the previous kernel), then
  // waits for the previous kernel (griddepcontrol.wait) before it reads x or the residual or
  // writes anything, so its start overlaps the previous kernel's tail. Off: an ordinary launch.
  bool pdl = false;
  // With pdl: let the next kernel launch (griddepcontrol.launch_dependents) only once this block
  // has issued its last weight loads instead of right after the wait, so the next kernel's blocks
  // (and what they fetch before their own wait) arrive during this one's tail rather than its
  // whole run. A scheduling hint: the same bits.
  bool late_trigger = false;
  // Passes of the weight rows (each `unroll` 16-byte loads per lane) fetched into L2 before the
  // wait; -1: the default (2 with pdl, none without: there is nothing to wait for). A tuning
  // knob of the sweep.
  int prefetch_passes = -1;
  // Only blocks below this index prefetch (0: all). The whole next GEMV can be resident while it
  // waits, and all of it prefetching evicts the running kernel's lines; the first wave alone
  // bounds what is fetched ahead.
  int prefetch_blocks = 0;
  // Issue the first pass of weight loads into registers before the PDL wait (besides or instead
  // of the L2 prefetch); the same sums in the same order. A tuning knob of the sweep: built for
  // bf16 at the default shapes of batches 1, 2, 4 and 8 without the fused norm, ignored otherwise.
  bool preload = false;
  // At most this many blocks, each warp looping over tasks (grid stride), so the fused norm's
  // prologue and the block start are paid once per block, not per task; 0: a warp per task.
  int grid_blocks = 0;
  // Tuning sweep (bench): weight rows per warp and 16-byte loads in flight per row; 0 takes the
  // default for the batch. A shape not built (gemv_shape_built) falls back to the default.
  int rows = 0, unroll = 0;
};
cudaError_t gemv(const Gemv& args, cudaStream_t stream);
// True when the (type, batch, rows, unroll) override of the tuning sweep has a kernel.
bool gemv_shape_built(Type type, std::int64_t batch, int rows, int unroll);
// True when a fused-norm gemv of this type, batch and k is built (bf16/f16) and fits the 48 KB
// of shared memory a block takes without opting in.
bool gemv_fused_norm_fits(Type type, std::int64_t batch, std::int64_t k);
// gemv for one row and one weight.
cudaError_t matvec(const void* weight, const void* x, const void* bias, void* out, Type type,
                   std::int64_t n_out, std::int64_t k, cudaStream_t stream);

// The engine's sampler (src/engine/sampling_rows.h): logits contiguous [batch, vocab] of a float
// type; rows: `batch` RowParams; penalties: the PenaltyEntry array they index; workspace: float
// [batch, vocab]; ids: one per row; probs (nullable): float [batch, vocab], the distribution drawn.
cudaError_t sample_rows(const void* logits, Type type, std::int64_t batch, std::int64_t vocab,
                        const void* rows, const void* penalties, float* workspace,
                        std::int64_t* ids, float* probs, cudaStream_t stream);

struct Attention {
  const void* q = nullptr;  // [b, hq, lq, d] with the strides below (unit stride in d)
  const void* k = nullptr;  // [b, hkv, lk, d]
  const void* v = nullptr;  // [b, hkv, lk, dv]
  void* out = nullptr;      // contiguous [b, hq, lq, dv]
  Type type = Type::Float32;
  const void* mask = nullptr;  // additive, [b, hq, lq, lk] strides (0 where broadcast)
  Type mask_type = Type::Float32;
  std::int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, k_len = 0, head_dim = 0, v_dim = 0;
  std::int64_t q_strides[4] = {}, k_strides[4] = {}, v_strides[4] = {}, mask_strides[4] = {};
  bool causal = false;
  float scale = 1.0f;
  const float* sinks = nullptr;  // [hq] float32 attention sinks (a zero-value key), or null
};
// Bytes of float workspace the split-key path needs (0: none); the caller allocates it.
std::size_t attention_workspace_bytes(const Attention& args, int multiprocessors);
cudaError_t attention(const Attention& args, void* workspace, int multiprocessors,
                      cudaStream_t stream);

// ---- Flash decoding (src/cuda/flash_decode.cu) -------------------------------------------
// Attention of a few query positions per sequence (decode: q_len 1..kFlashDecodeMaxQ) against a
// KV cache, bfloat16 or float16, float32 softmax and accumulation. The keys of each (batch, kv
// head) are cut into `splits` equal chunks, one block each, which also covers every query head of
// the kv head's group (K and V are read from HBM once); each block leaves a partial (max, sum,
// unnormalised output) in float32 in `scratch`, and the last block of each head to finish merges
// them (variant 0, flash_decode_fused.cu; variant 1: a small combine kernel). With splits == 1
// the block writes the output itself.
//
// Layout (src/models/kv_cache.cc): a layer's cache is k/v [batch, kv_heads, capacity, head_dim]
// (v: v_dim), contiguous, filled for tokens [0, length); pass the cache base pointers and its
// strides (token stride = head_dim, head stride = capacity * head_dim, ...), not a narrowed copy.
// A captured graph keeps the pointers: reserve the capacity first (KVCache's reserve_tokens) so
// the cache never regrows under it.
// Rows of K and V must be 16-byte aligned (pointers and strides * element size multiples of 16)
// and head_dim, v_dim multiples of 8 up to 256: flash_decode_supported() says whether they are.
//
// CUDA-graph use: the number of valid keys is read on the device from kv_len[b * kv_len_stride]
// (kv_len_stride 0: one length for every sequence), at most max_kv_len; `splits` is fixed when
// the graph is captured (flash_decode_splits for max_kv_len) and each launch spreads the real
// length over them (chunks of at least kFlashDecodeMinChunk keys; splits past the length exit at
// once and the combine skips them). The launcher neither allocates nor synchronises; its only
// host work is choosing the kernel instantiation. Call flash_decode_splits before capturing: it
// also sizes the scratch and loads the kernels (an occupancy query, made once per instantiation).
// kv_len null: max_kv_len keys (the op's path).
// `causal`: query position i of q_len sees keys [0, length - q_len + i] (speculative decoding).
inline constexpr int kFlashDecodeMaxQ = 8;
inline constexpr int kFlashDecodeMinChunk = 64;
inline constexpr int kFlashDecodeMaxSplits = 128;
struct FlashDecodeArgs {
  const void* q = nullptr;     // [batch, q_heads, q_len, head_dim]: q_strides (unit stride in d)
  const void* k = nullptr;     // [batch, kv_heads, >= max_kv_len, head_dim]: k_strides
  const void* v = nullptr;     // [batch, kv_heads, >= max_kv_len, v_dim]: v_strides
  void* out = nullptr;         // [batch, q_heads, q_len, v_dim]: out_strides (unit stride in d)
  Type type = Type::BFloat16;  // BFloat16 or Float16 (q, k, v and out)
  int batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, head_dim = 0, v_dim = 0;
  std::int64_t q_strides[3] = {}, k_strides[3] = {}, v_strides[3] = {}, out_strides[3] = {};
  const std::int32_t* kv_len = nullptr;  // device; null: max_kv_len
  int kv_len_stride = 0;                 // elements between two sequences' lengths (0: shared)
  int max_kv_len = 0;
  const void* mask = nullptr;      // additive, [b, hq, lq, key] with mask_strides (0: broadcast)
  Type mask_type = Type::Float32;  // Float32 or `type`
  std::int64_t mask_strides[4] = {};
  bool causal = false;
  float scale = 1.0f;
  const float* sinks = nullptr;  // [q_heads] float32 attention sinks, or null
  int splits = 1;                // flash_decode_splits(); fixed for a captured graph
  float* scratch = nullptr;      // flash_decode_scratch_bytes() bytes, 16-byte aligned
  // Which kernel: 0 the default (the one-kernel flash decoding: 7 for 32 or more (batch, kv head,
  // row chunk) groups and 8k or more keys on sm_90, else 4), 1 the split-K kernel with its
  // combine kernel, 2-5 the one-kernel's tile configurations, 6-9 the one-kernel with a head's
  // splits in one thread-block cluster (sm_90; splits capped at the largest cluster the device
  // runs, 16 on H100), 10-12 the one-kernel with the scores and P V on the tensor cores (mma.sync,
  // 8 query rows a block; 10: 64-key tiles 3 deep, 11: 64-key tiles 2 deep, 12: 128-key tiles 2
  // deep, 14: 256 threads with 128-key tiles 2 deep), 13 the tensor-core kernel with the cluster
  // merge (cuda_attention_bench sweeps them).
  int variant = 0;
  // Programmatic dependent launch (one-kernel variants): the blocks are placed while the previous
  // kernel finishes and wait for it before reading anything (Gemv::pdl).
  bool pdl = false;
  // With pdl, one-kernel variants: read the key length and request the first tiles of keys before
  // waiting for the previous kernel, for the keys older than the last q_len (the newest are the
  // ones this step writes). Only where no kernel the launch may overlap writes kv_len or those
  // keys: the decode graph (kv_len comes from a host copy before the graph is launched; older keys
  // from earlier steps).
  bool pdl_prefetch = false;
};
// Whether the kernel takes these shapes, dtypes and alignments (else use attention()).
bool flash_decode_supported(const FlashDecodeArgs& args);
// Splits that fill `multiprocessors` SMs for args.max_kv_len keys (args.splits is ignored).
int flash_decode_splits(const FlashDecodeArgs& args, int multiprocessors);
// Scratch for args.splits splits (0 when splits == 1). It ends with the one-kernel variant's
// ticket counters, which must be zero before the first launch (flash_decode_clear_scratch, once
// after allocating it); every launch leaves them zero again, so a captured graph replays.
std::size_t flash_decode_scratch_bytes(const FlashDecodeArgs& args);
cudaError_t flash_decode_clear_scratch(const FlashDecodeArgs& args, cudaStream_t stream);
cudaError_t launch_flash_decode(const FlashDecodeArgs& args, cudaStream_t stream);

// ---- Flash attention for prefill (src/cuda/flash_prefill.cu) --------------------------------
// Tensor-core (mma.sync m16n8k16) attention with online softmax, bf16/f16 (the other fields of
// Attention as attention() takes them: causal aligned to the end of the keys, additive mask,
// sinks, GQA). Needs head_dim and v_dim multiples of 8 up to 256 and 16-byte aligned K/V rows.
// rows_per_warp: query rows each warp owns, 16 or 32 (0: kFlashPrefillRowsPerWarp, which measured
// faster on H100; the bench times both); 32 halves shared-memory reads per flop but halves the keys
// per tile and the blocks per SM. Head dims over 128 always use 16.
inline constexpr int kFlashPrefillRowsPerWarp = 16;
bool flash_prefill_supported(const Attention& args);
cudaError_t launch_flash_prefill(const Attention& args, cudaStream_t stream, int rows_per_warp = 0);

// The fused decode step (src/cuda/decode_step.cu). Both read `past`, the tokens cached before
// this step (one device word), so a CUDA graph replays them unchanged from token to token. The
// cache is KVCache's layout: [batch, kv_heads, capacity, head_dim] contiguous, one dtype.
//
// rope_kv_write: for each (row, head) of q [batch, ldq] and k [batch, ldk] (heads of head_dim
// side by side), an optional per-head RMSNorm (q_norm / k_norm weights [head_dim], Qwen3), then
// the rotation of the first rotary_dim dimensions with the tables cos/sin [positions, rotary_dim]
// (x's dtype, row `past`; null: no rotation) as rotate_half does. q goes to q_out [batch, q_heads,
// head_dim]; k, and v [batch, ldv] unchanged, go to the caches at position `past`.
struct RopeKvWrite {
  Type type = Type::BFloat16;
  std::int64_t batch = 1, q_heads = 0, kv_heads = 0, head_dim = 0, rotary_dim = 0, capacity = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  std::int64_t ldq = 0, ldk = 0, ldv = 0;
  const void* q_norm = nullptr;
  const void* k_norm = nullptr;
  float eps = 1e-6f;
  const void* cos = nullptr;
  const void* sin = nullptr;
  const std::int64_t* past = nullptr;
  void* q_out = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  bool pdl = false;  // programmatic dependent launch (Gemv::pdl): waits before reading anything
};
cudaError_t rope_kv_write(const RopeKvWrite& args, cudaStream_t stream);

// Fetches byte ranges into L2 (src/cuda/decode_step.cu): the decode step warms a later GEMV's
// first weight bytes while the small kernels before it (rotary, attention, norms) leave HBM idle.
// A hint only: nothing is read into registers or written, so results never change. sm_90 issues
// one bulk prefetch (cp.async.bulk.prefetch.L2) per 16 KB chunk, older GPUs one prefetch per
// 128-byte line. Pointers 16-byte aligned; each range is rounded down to a multiple of 16 bytes.
// 12: a quantized q/k/v's three packed weights, scales and zero points (decode_prefetch.cc).
inline constexpr int kMaxL2Ranges = 12;
struct L2Prefetch {
  const void* ptr[kMaxL2Ranges] = {};
  std::int64_t bytes[kMaxL2Ranges] = {};
  int count = 0;
  int blocks = 0;  // 0: one per 32 chunks, at most 132
  // Programmatic dependent launch (a node of the step's chain): the blocks wait for the previous
  // kernel, then prefetch (`early`: prefetch first, then wait, overlapping its tail).
  bool pdl = false;
  bool early = false;
  bool evict_last = false;  // the lines stay ahead of the streamed weights (L2::evict_last)
};
cudaError_t l2_prefetch(const L2Prefetch& args, cudaStream_t stream);

// Attention of one query token per row over the cache's first past + 1 keys (the last `window`
// of them when window > 0), every split of `chunk` keys in its own block, then a combine that
// rounds once: out [batch, q_heads, head_dim]. partial_*: float workspaces of batch * q_heads *
// splits (* head_dim for acc), splits = decode_attention_splits(capacity, chunk) so any length up
// to the capacity is covered; splits past the live keys exit at once.
struct DecodeAttention {
  Type type = Type::BFloat16;
  std::int64_t batch = 1, q_heads = 0, kv_heads = 0, head_dim = 0, capacity = 0;
  std::int64_t window = 0, chunk = 128, splits = 0;
  float scale = 1.0f;
  const void* q = nullptr;  // [batch, q_heads, head_dim]
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const std::int64_t* past = nullptr;
  float* partial_acc = nullptr;
  float* partial_max = nullptr;
  float* partial_sum = nullptr;
  void* out = nullptr;
};
std::int64_t decode_attention_splits(std::int64_t capacity, std::int64_t chunk);
cudaError_t decode_attention(const DecodeAttention& args, cudaStream_t stream);

}  // namespace strata::cuda::kernels

#pragma once
// Tensor operations. Each op checks its inputs once (shapes, dtypes, devices), allocates the
// output and dispatches by device and dtype; an unsupported combination throws NotSupported
// naming the op, the device and the dtype.
//
// Floating-point ops take and return float32, bfloat16 or float16 and compute in float32.
// Inputs may be non-contiguous; outputs are contiguous and on the inputs' device (except `cast`,
// which, like Tensor::to, returns its input unchanged when the dtype already matches).

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::ops {

// ---- linear algebra --------------------------------------------------------------------
// y = x @ weight^T + bias, with weight stored as PyTorch's Linear stores it: [out, in].
// x: [..., in]; bias: [out] or none. Result [..., out].
Tensor linear(const Tensor& x, const Tensor& weight,
              const std::optional<Tensor>& bias = std::nullopt);
// The first half of a SwiGLU MLP: silu(linear(x, gate_weight)) * linear(x, up_weight), with the
// roundings of those four ops (the same bits). gate_weight and up_weight [inter, in], no bias.
// On a GPU, up to 8 rows are one launch of the decode GEMV (both weights read in one pass, the
// SiLU and the product in its epilogue); otherwise the four ops.
Tensor swiglu(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight);
// Several linear layers over consecutive row ranges of one x (a mixture-of-experts step, its
// rows grouped by expert): rows [r_g, r_g + rows[g]) of the result are linear(those rows of x,
// weights[g]), with r_g the sum of the rows before. x [R, in] with R = sum(rows); weights
// [out, in] each, no bias. On a GPU one cuBLAS grouped product (one launch for every group
// instead of one per group; each group's numbers are a product's, not necessarily linear's
// bits); elsewhere linear on each group.
Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights,
                      const std::vector<std::int64_t>& rows);
// Batched matrix product a: [..., m, k] @ b: [..., k, n]; batch dimensions broadcast.
// 1-D operands follow numpy (a vector is [1, k] or [k, 1], the added dimension dropped).
Tensor matmul(const Tensor& a, const Tensor& b);

// A linear layer's weight as a quantized checkpoint stores it (docs/quantization.md): the packed
// tensors under their checkpoint names, dequantised on the fly by quantized_linear.
enum class QuantFormat : std::uint8_t {
  FP8,                // weight [out, in] float8_e4m3fn; scale = weight_scale_inv, per block or 1
  AWQ,                // qweight [in, out/8] int32 (order 0,2,4,6,1,3,5,7), qzeros, scales f16
  GPTQ,               // qweight [in*bits/32, out] int32, qzeros (stored minus one), scales, g_idx
  CompressedTensors,  // weight_packed [out, ceil(in*bits/32)] int32, weight_scale, zero point
};
struct QuantizedWeight {
  QuantFormat format = QuantFormat::FP8;
  std::int64_t in_features = 0, out_features = 0;
  int bits = 4;                              // AWQ 4; GPTQ and compressed-tensors 4 or 8 (FP8: 8)
  std::int64_t group_size = 0;               // inputs per scale group; 0 = one group (per channel)
  std::int64_t block_out = 0, block_in = 0;  // FP8 block; 0, 0 = per-tensor scale
  Tensor weight;                             // fp8 weight / qweight / weight_packed
  Tensor scale;                              // weight_scale_inv / scales / weight_scale
  std::optional<Tensor> zeros;  // qzeros / weight_zero_point (compressed-tensors: asymmetric)
  std::optional<Tensor> g_idx;  // GPTQ: group of each input row
  // GPTQ, set by a caller that has checked g_idx's values once (check_gptq_g_idx; QuantizedLinear
  // does, once per layer): whether g_idx[k] == k / group_size for every k (no act-order), which
  // lets the kernels hoist zeros and scales per group. Set only after checking: the CPU's
  // act-order path indexes by g_idx's values. Unset, quantized_linear checks g_idx on every call
  // (on a GPU a device-to-host copy).
  std::optional<bool> g_idx_sequential;
};
// Checks the values of w.g_idx (each a group in [0, groups)): a CheckpointError naming the first
// bad value otherwise. Returns whether g_idx[k] == k / group_size for every k. Reads g_idx on the
// host (a copy when it is on a GPU).
bool check_gptq_g_idx(const QuantizedWeight& w);
// y = x @ dequantise(weight)^T + bias, dequantising inside the product (the dense weight is
// never materialised whole). x: [..., in_features] float32/bfloat16/float16; result [..., out] in
// x's dtype. Shapes and dtypes of the packed tensors are checked against the format
// (CheckpointError naming the tensor). CPU and CUDA.
Tensor quantized_linear(const Tensor& x, const QuantizedWeight& weight,
                        const std::optional<Tensor>& bias = std::nullopt);

// ---- lookup and normalisation ----------------------------------------------------------
// Rows of `table` [vocab, dim] (any dtype: rows are copied bit for bit) picked by integer `ids`
// of any shape -> [..., dim].
// An id outside [0, vocab) is an InvalidArgument naming the id and the vocabulary size.
Tensor embedding(const Tensor& ids, const Tensor& table);
// x * rsqrt(mean(x^2) + eps) * weight over the last dimension (transformers' LlamaRMSNorm:
// normalise in float32, cast to the input dtype, then multiply by the weight).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
// LayerNorm over the last dimension; weight and bias [dim] optional.
Tensor layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps);
// Rotary position embedding, transformers' `rotate_half` convention:
//   out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]).
// x: [batch, heads, seq, head_dim]; cos, sin: [batch or 1, seq, head_dim] (broadcast over heads)
// or [seq, head_dim], or already unsqueezed as [batch or 1, 1 or heads, seq, head_dim]. cos and
// sin may be float32 with a bfloat16/float16 x (the product is computed in float32 and rounded
// once; transformers rounds after each step in the input dtype, so bf16 results can differ from
// it by one bf16 step).
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin);

// ---- attention -------------------------------------------------------------------------
Tensor softmax(const Tensor& x, std::int64_t dim = -1);

struct AttentionOptions {
  // Causal masking aligned to the end of the keys: query i (of q_len) sees keys
  // [0, k_len - q_len + i], which is what a KV cache needs. With q_len == k_len this is the usual
  // lower-triangular mask.
  bool causal = false;
  // Additive mask broadcastable to [batch, q_heads, q_len, k_len] (float32 or the query dtype),
  // e.g. 0 / -inf padding masks. Applied on top of `causal`.
  std::optional<Tensor> mask;
  // Defaults to 1 / sqrt(head_dim).
  std::optional<double> scale;
  // Attention sinks (gpt-oss): one learned logit per query head, [q_heads] (float32 or the query
  // dtype), that joins every row's softmax as an extra key whose value is zero. The row's weights
  // then sum to less than one: out = sum_j exp(s_j) v_j / (sum_j exp(s_j) + exp(sink)).
  std::optional<Tensor> sinks;
};
// softmax(q k^T * scale + mask) v with grouped-query heads.
// q: [batch, q_heads, q_len, head_dim]; k, v: [batch, kv_heads, k_len, head_dim] with
// q_heads a multiple of kv_heads (query head h reads kv head h / (q_heads / kv_heads)). v's last
// dimension may differ from head_dim; the result is [batch, q_heads, q_len, v_dim].
// Rows whose every key is masked yield zeros (not NaN), with or without sinks.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

// ---- elementwise -----------------------------------------------------------------------
Tensor silu(const Tensor& x);
enum class GeluApproximation { None, Tanh };
Tensor gelu(const Tensor& x, GeluApproximation approximation = GeluApproximation::None);
Tensor relu(const Tensor& x);
// torch.tanh (Gemma's logit soft-capping: cap * tanh(x / cap)).
Tensor tanh(const Tensor& x);
// Broadcasting (numpy rules). Both operands must have the same dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// parts[0] + parts[1] + parts[2] + ... added left to right, every partial sum rounded to the
// dtype: the bits of chained add calls, in one pass (one launch on a GPU; a mixture-of-experts
// token's top-k outputs are summed so). At least one part; all of one shape, float dtype and
// device.
Tensor sum_in_order(const std::vector<Tensor>& parts);
// Same as Tensor::to(dtype): every pair of dtypes, bit-exact with PyTorch.
Tensor cast(const Tensor& x, DType dtype);

// ---- reductions and selection ----------------------------------------------------------
// argmax and topk also accept float64 inputs.
// Index (int64) of the largest element along `dim`; the first one on ties, NaN counts as largest
// (PyTorch's rule). The dimension is removed unless keepdim.
Tensor argmax(const Tensor& x, std::int64_t dim = -1, bool keepdim = false);
// The k largest elements along `dim`, sorted descending, and their int64 indices. Ties keep
// the lower index first; NaN counts as largest.
std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t dim = -1);

}  // namespace strata::ops

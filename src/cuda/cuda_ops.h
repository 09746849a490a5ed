#pragma once
// CUDA implementations of the ops, with the signatures of the CPU kernels (src/cpu/*.h) so a
// front end dispatches with one line. The front ends have validated everything and allocated
// `out` (contiguous, on the inputs' GPU). Work runs on the device's compute stream.

#include <cstdint>
#include <optional>
#include <vector>

#include "cpu/attention_elementwise.h"
#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::cuda {

void unary_float(cpu::UnaryKind kind, const Tensor& x, const Tensor& out);
void binary_float(cpu::BinaryKind kind, const Tensor& a, const Tensor& b, const Tensor& out);
// out = parts[0] + parts[1] + ... added left to right (ops::sum_in_order): contiguous parts of
// out's shape and dtype.
void sum_in_order(const std::vector<Tensor>& parts, const Tensor& out);
void softmax(const Tensor& x, std::int64_t dim, const Tensor& out);
// sinks, when given, is contiguous float32 [hq] on q's GPU (attention sinks, see ops.h).
void scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor* mask, bool causal, float scale, const Tensor& out,
                                  const Tensor* sinks = nullptr);
void argmax(const Tensor& x, std::int64_t dim, const Tensor& out);
void topk(const Tensor& x, std::int64_t k, std::int64_t dim, const Tensor& values,
          const Tensor& indices);

void linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
            const Tensor& out);
// ops::swiglu's one launch where the decode GEMV takes it (x [m <= kMaxGemvBatch, k] with k a
// multiple of 16 bytes' worth of elements, 16-byte aligned pointers): out = silu(x gate^T) *
// (x up^T) with the separate ops' roundings (GemvEpilogue::SiluMul). False, with nothing
// launched, otherwise (the caller composes the ops).
bool swiglu_gemv(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& out);
void matmul(const Tensor& a, const Tensor& b, const Tensor& out);
// ops::grouped_linear in one cuBLAS grouped product (cublasGemmGroupedBatchedEx): out rows of
// group g = x rows of group g (rows[g] of them, groups in order) @ weights[g]^T. x [R, k], out
// [R, n] contiguous, weights [n, k] contiguous, one float dtype. False, with nothing launched,
// where cuBLAS does not take the dtype (the caller runs one product per group).
bool grouped_linear(const Tensor& x, const std::vector<Tensor>& weights,
                    const std::vector<std::int64_t>& rows, const Tensor& out);

// Row-major c[m, n] (row stride ldc) = a[m, k] (row stride lda) @ b^T with b [n, k] (row stride
// ldb), one float dtype, on `device`'s compute stream (src/cuda/blas.cc).
void gemm_nt(const void* a, std::int64_t lda, const void* b, std::int64_t ldb, void* c,
             std::int64_t ldc, std::int64_t m, std::int64_t n, std::int64_t k, DType dtype,
             int device);
// ops::quantized_linear on a GPU (src/cuda/quant_linear.cc): x, bias, out contiguous of one float
// dtype; the packed tensors checked and contiguous on x's device.
void quantized_linear(const Tensor& x, const ops::QuantizedWeight& w,
                      const std::optional<Tensor>& bias, const Tensor& out);
// The same for decode rows (at most kernels::kQuantMaxRows) in the fused decode graph: `pdl`
// launches with programmatic dependent launch; `residual` (like out, may be out itself) makes it
// out = residual + x w^T + bias with the separate add's rounding; `gate` (like out) makes it
// out = silu(gate) * (x w^T + bias) with the separate SiLU's and multiply's roundings.
void quantized_linear_pdl(const Tensor& x, const ops::QuantizedWeight& w,
                          const std::optional<Tensor>& bias, const Tensor& out, bool pdl,
                          const Tensor* residual = nullptr, const Tensor* gate = nullptr);
// Grows the per-GPU scratch of quantized_linear's decode GEMV to what `rows` rows of x need on
// w's GPU, so that a later call (inside a CUDA graph capture) allocates nothing.
void reserve_quantized_gemv(const ops::QuantizedWeight& w, std::int64_t rows);
// Layers that read the same x (q, k, v of a quantized attention): out_i = x w_i^T + bias_i.
struct QuantizedProjection {
  const ops::QuantizedWeight* weight = nullptr;
  const std::optional<Tensor>* bias = nullptr;  // null: none
  const Tensor* out = nullptr;
};
// quantized_linear_pdl for each projection of `group` (2 or 3), in one launch of the tensor-core
// decode GEMV where it takes every layer at x's rows (bf16 x, one format, k and groups alike; see
// docs/quantization.md), else one call after another. reserve_quantized_gemv_group grows the
// scratch as reserve_quantized_gemv does.
void quantized_linear_group_pdl(const Tensor& x, const std::vector<QuantizedProjection>& group,
                                bool pdl);
void reserve_quantized_gemv_group(const std::vector<const ops::QuantizedWeight*>& weights,
                                  std::int64_t rows);
void embedding(const Tensor& ids, const Tensor& table, const Tensor& out);
void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out);
void layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                const std::optional<Tensor>& bias, double eps, const Tensor& out);
void rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out);

// The engine's sampler (src/engine/sampler.cc): `logits` contiguous [batch, vocab] float32 /
// bfloat16 / float16; `rows` a uint8 tensor on the same GPU holding batch RowParams followed by
// `penalty_count` PenaltyEntry (src/engine/sampling_rows.h); `ids` int64 [batch]; `probs`
// (nullable) float32 [batch, vocab].
void sample_rows(const Tensor& logits, const Tensor& rows, std::int64_t penalty_count,
                 const Tensor& ids, const Tensor* probs);

// dst <- src on one GPU: any strides (0 for broadcast), any pair of dtypes (PyTorch's rules).
void copy_strided(const Tensor& dst, const Tensor& src);

}  // namespace strata::cuda

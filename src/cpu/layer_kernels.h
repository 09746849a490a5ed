#pragma once
// CPU kernels for the dense layers of a transformer: linear / matmul, embedding, RMSNorm,
// LayerNorm, rotary embeddings. The front ends in src/ops/ have already checked shapes, dtypes
// and devices and allocated `out` (contiguous); these only compute.

#include <optional>

#include "strata/core/tensor.h"

namespace strata::cpu {

// out[M, N] = x[M, K] @ weight[N, K]^T (+ bias[N]). x, weight, bias contiguous, one float dtype.
void linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
            const Tensor& out);
// out[batch..., m, n] = a[batch..., m, k] @ b[batch..., k, n]. a and b have the batch shape of
// out already (broadcast dimensions as stride-0 views); any strides.
void matmul(const Tensor& a, const Tensor& b, const Tensor& out);
// out[i, :] = table[ids[i], :]. ids: any integer dtype, any layout; table: contiguous [V, D].
// Throws InvalidArgument naming the first id outside [0, V).
void embedding(const Tensor& ids, const Tensor& table, const Tensor& out);
// Row-wise over the last dimension of contiguous x (see ops.h for the rounding rules).
void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out);
void layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                const std::optional<Tensor>& bias, double eps, const Tensor& out);
// x: [B, H, S, D] with unit stride in D (other strides free); cos, sin: [B, H, S, D] views
// (stride 0 where broadcast), unit stride in D; out contiguous [B, H, S, D].
void rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out);

}  // namespace strata::cpu

#pragma once
// CPU kernels for softmax, attention, activations, add/mul, argmax and topk. The front ends in
// src/ops/ have validated shapes, dtypes and devices and allocated the contiguous outputs; these
// only compute. Floating-point kernels take float32/bfloat16/float16 and compute in float32.

#include <cstdint>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::cpu {

enum class UnaryKind { Silu, GeluErf, GeluTanh, Relu, Tanh };
enum class BinaryKind { Add, Mul };

// out = f(x); out has x's shape and dtype.
void unary_float(UnaryKind kind, const Tensor& x, const Tensor& out);
// out = a (op) b; a and b are already expanded (stride-0 views) to out's shape.
void binary_float(BinaryKind kind, const Tensor& a, const Tensor& b, const Tensor& out);
// out = parts[0] + parts[1] + ... left to right, each partial sum rounded to out's dtype
// (binary_float's adds in turn); contiguous parts of out's shape and dtype.
void sum_in_order(const std::vector<Tensor>& parts, const Tensor& out);

// Softmax of x along `dim` (already wrapped; 0 for a rank-0 x) into out (x's shape).
void softmax(const Tensor& x, std::int64_t dim, const Tensor& out);

// q [b, hq, lq, d], k [b, hkv, lk, d], v [b, hkv, lk, dv] of one dtype; mask, when given, is a
// view expanded to [b, hq, lq, lk] (float32 or q's dtype). out is [b, hq, lq, dv] in q's dtype.
// sinks, when given, is contiguous float32 [hq]: one extra logit per head with a zero value.
void scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor* mask, bool causal, float scale, const Tensor& out,
                                  const Tensor* sinks = nullptr);

// Index of the largest element along `dim` for every other position, written in row-major order
// of the remaining dimensions into out (int64).
void argmax(const Tensor& x, std::int64_t dim, const Tensor& out);
// The k largest along `dim`, descending, into values (x's dtype) and indices (int64), both of
// x's shape with `dim` resized to k.
void topk(const Tensor& x, std::int64_t k, std::int64_t dim, const Tensor& values,
          const Tensor& indices);

}  // namespace strata::cpu

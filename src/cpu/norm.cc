// rms_norm and layer_norm on the CPU, row by row over the last dimension, in parallel over rows.
// Each row is widened to float32 once, reduced, normalised and rounded back.

#include <cmath>
#include <vector>

#include "cpu/float_io.h"
#include "cpu/layer_kernels.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

// Sums with independent partial sums: vectorisable without reassociation flags, and more
// accurate than one running sum for long rows.
constexpr int kLanes = 16;

float sum_of_squares(const float* v, std::int64_t n) {
  float part[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += v[i + l] * v[i + l];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += v[i] * v[i];
  for (int l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

float sum_of(const float* v, std::int64_t n) {
  float part[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += v[i + l];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += v[i];
  for (int l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

// The optional [dim] parameter as float32 (empty when absent).
template <typename T>
std::vector<float> param_as_float(const Tensor* t) {
  std::vector<float> out;
  if (t != nullptr) {
    out.resize(static_cast<std::size_t>(t->numel()));
    convert_row_to_float(t->data<T>(), out.data(), t->numel());
  }
  return out;
}

std::int64_t row_grain(std::int64_t dim) { return std::max<std::int64_t>(1, 16384 / dim); }

template <typename T>
void rms_norm_typed(const Tensor& x, const Tensor& weight, double eps, const Tensor& out) {
  const std::int64_t dim = x.size(-1);
  const std::int64_t rows = x.numel() / dim;
  const std::vector<float> w = param_as_float<T>(&weight);
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  const auto eps_f = static_cast<float>(eps);  // torch adds the Python float to a float32 tensor
  parallel_for(rows, row_grain(dim), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> h(static_cast<std::size_t>(dim));
    std::vector<T> rounded(static_cast<std::size_t>(dim));
    for (std::int64_t r = begin; r < end; ++r) {
      convert_row_to_float(src + r * dim, h.data(), dim);
      const float variance = sum_of_squares(h.data(), dim) / static_cast<float>(dim);
      const float inv_rms = 1.0f / std::sqrt(variance + eps_f);
      for (std::int64_t i = 0; i < dim; ++i) h[i] *= inv_rms;
      // transformers: `weight * hidden_states.to(input_dtype)`. The normalised row is rounded to
      // the input dtype first and the product rounded again (a no-op pair for float32).
      if constexpr (!std::is_same_v<T, float>) {
        store_row_from_float(h.data(), rounded.data(), dim);
        convert_row_to_float(rounded.data(), h.data(), dim);
      }
      for (std::int64_t i = 0; i < dim; ++i) h[i] *= w[i];
      store_row_from_float(h.data(), dst + r * dim, dim);
    }
  });
}

template <typename T>
void layer_norm_typed(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps,
                      const Tensor& out) {
  const std::int64_t dim = x.size(-1);
  const std::int64_t rows = x.numel() / dim;
  const std::vector<float> w = param_as_float<T>(weight);
  const std::vector<float> b = param_as_float<T>(bias);
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  const auto eps_f = static_cast<float>(eps);
  parallel_for(rows, row_grain(dim), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> v(static_cast<std::size_t>(dim));
    for (std::int64_t r = begin; r < end; ++r) {
      convert_row_to_float(src + r * dim, v.data(), dim);
      // Two passes (mean, then centred squares): no cancellation for rows with a large mean.
      const float mean = sum_of(v.data(), dim) / static_cast<float>(dim);
      for (std::int64_t i = 0; i < dim; ++i) v[i] -= mean;
      const float variance = sum_of_squares(v.data(), dim) / static_cast<float>(dim);
      const float inv_std = 1.0f / std::sqrt(variance + eps_f);
      for (std::int64_t i = 0; i < dim; ++i) v[i] *= inv_std;
      if (!w.empty()) {
        for (std::int64_t i = 0; i < dim; ++i) v[i] *= w[i];
      }
      if (!b.empty()) {
        for (std::int64_t i = 0; i < dim; ++i) v[i] += b[i];
      }
      store_row_from_float(v.data(), dst + r * dim, dim);  // the one rounding
    }
  });
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, double eps, const Tensor& out) {
  if (x.numel() == 0) return;
  visit_compute_float(x.dtype(),
                      [&]<typename T>(TypeTag<T>) { rms_norm_typed<T>(x, weight, eps, out); });
}

void layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                const std::optional<Tensor>& bias, double eps, const Tensor& out) {
  if (x.numel() == 0) return;
  visit_compute_float(x.dtype(), [&]<typename T>(TypeTag<T>) {
    layer_norm_typed<T>(x, weight ? &*weight : nullptr, bias ? &*bias : nullptr, eps, out);
  });
}

}  // namespace strata::cpu

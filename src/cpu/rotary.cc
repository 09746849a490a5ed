// rotary_embedding on the CPU: out = x * cos + rotate_half(x) * sin per [head_dim] row, computed
// in float32 and rounded once. x may be a strided view (transformers' q/k are usually
// [b, s, h, d] transposed to [b, h, s, d]); cos and sin are broadcast views.

#include <vector>

#include "cpu/float_io.h"
#include "cpu/layer_kernels.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

// Element offset of row r (row-major over [B, H, S]) in the [B, H, S, D] view t.
std::int64_t row_offset(const Tensor& t, std::int64_t r, std::int64_t heads, std::int64_t seq) {
  const std::int64_t s = r % seq;
  const std::int64_t h = (r / seq) % heads;
  const std::int64_t b = r / (seq * heads);
  return b * t.stride(0) + h * t.stride(1) + s * t.stride(2);
}

template <typename T, typename C>
void rotary_typed(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out) {
  const std::int64_t heads = x.size(1), seq = x.size(2), dim = x.size(3);
  const std::int64_t half = dim / 2;
  const std::int64_t rows = x.size(0) * heads * seq;
  const T* xp = x.data<T>();
  const C* cp = cos.data<C>();
  const C* sp = sin.data<C>();
  T* dst = out.data<T>();
  const std::int64_t grain = std::max<std::int64_t>(1, 8192 / dim);
  parallel_for(rows, grain, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> buf(static_cast<std::size_t>(4 * dim));
    float* xf = buf.data();
    float* cf = xf + dim;
    float* sf = cf + dim;
    float* yf = sf + dim;
    for (std::int64_t r = begin; r < end; ++r) {
      convert_row_to_float(xp + row_offset(x, r, heads, seq), xf, dim);
      convert_row_to_float(cp + row_offset(cos, r, heads, seq), cf, dim);
      convert_row_to_float(sp + row_offset(sin, r, heads, seq), sf, dim);
      // rotate_half(x) = cat(-x[half:], x[:half])
      for (std::int64_t i = 0; i < half; ++i) yf[i] = xf[i] * cf[i] - xf[i + half] * sf[i];
      for (std::int64_t i = half; i < dim; ++i) yf[i] = xf[i] * cf[i] + xf[i - half] * sf[i];
      store_row_from_float(yf, dst + r * dim, dim);
    }
  });
}

}  // namespace

void rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out) {
  if (x.numel() == 0) return;
  visit_compute_float(x.dtype(), [&]<typename T>(TypeTag<T>) {
    visit_compute_float(cos.dtype(),
                        [&]<typename C>(TypeTag<C>) { rotary_typed<T, C>(x, cos, sin, out); });
  });
}

}  // namespace strata::cpu

// Softmax along any dimension: each row is gathered as floats, shifted by its maximum (so exp
// never overflows), exponentiated, normalised and stored once.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/attention_elementwise.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {

void softmax(const Tensor& x, std::int64_t dim, const Tensor& out) {
  visit_compute_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows rows = rows_along(x.shape(), x.strides(), dim);
    const std::int64_t n = rows.length;
    if (n == 0) return;
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    const std::int64_t grain = std::max<std::int64_t>(1, (1 << 14) / n);
    parallel_for(rows.count(), grain, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> buffer(static_cast<std::size_t>(n));
      float* e = buffer.data();
      for_each_row(rows, begin, end, [&](std::int64_t row, std::int64_t offset) {
        const float* v = load_floats(src + offset, rows.stride, n, e);
        float max = -std::numeric_limits<float>::infinity();
        for (std::int64_t i = 0; i < n; ++i) max = v[i] > max ? v[i] : max;
        // A row of -inf gives NaN (-inf - -inf), as in PyTorch; attention handles masked rows.
        double sum = 0.0;  // cheap next to exp, and exact enough for 100k-wide rows
        for (std::int64_t i = 0; i < n; ++i) {
          e[i] = std::exp(v[i] - max);
          sum += e[i];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (std::int64_t i = 0; i < n; ++i) e[i] *= inv;
        store_floats(e, dst + rows.contiguous_start(row, n), rows.inner, n);
      });
    });
  });
}

}  // namespace strata::cpu

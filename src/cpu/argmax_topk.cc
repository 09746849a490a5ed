// argmax and topk along any dimension, for float and integer dtypes. Values are compared as a
// key that holds them exactly (float for 16-bit floats, the type itself otherwise); NaN ranks
// above everything and ties go to the lower index (PyTorch's rules).

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/attention_elementwise.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

template <typename T>
inline constexpr bool kSelectable = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                    std::is_same_v<T, Half> || std::is_same_v<T, BFloat16> ||
                                    (std::is_integral_v<T> && !std::is_same_v<T, bool>);

template <typename T>
using Key = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, float, T>;

template <typename K>
bool is_nan(K v) {
  if constexpr (std::is_floating_point_v<K>) {
    return std::isnan(v);
  } else {
    return false;
  }
}

// Calls f(TypeTag<T>{}) for the dtypes argmax and topk accept (the front end checked).
template <typename F>
void visit_selectable(DType dtype, F&& f) {
  visit_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (kSelectable<T>) {
      f(tag);
    } else {
      STRATA_THROW(InternalError, "argmax/topk CPU kernel reached with dtype {}", dtype);
    }
  });
}

template <typename T>
struct Entry {
  Key<T> key;
  std::int64_t index;
};

// Strict total order: NaN first, then larger values, then lower indices.
template <typename T>
bool ranks_before(const Entry<T>& a, const Entry<T>& b) {
  const bool a_nan = is_nan(a.key);
  const bool b_nan = is_nan(b.key);
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a.key != b.key) return a.key > b.key;
  return a.index < b.index;
}

}  // namespace

void argmax(const Tensor& x, std::int64_t dim, const Tensor& out) {
  visit_selectable(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows rows = rows_along(x.shape(), x.strides(), dim);
    const std::int64_t n = rows.length;
    const std::int64_t stride = rows.stride;
    const T* src = x.data<T>();
    std::int64_t* dst = out.data<std::int64_t>();
    const std::int64_t grain = std::max<std::int64_t>(1, (1 << 15) / std::max<std::int64_t>(n, 1));
    parallel_for(rows.count(), grain, [&](std::int64_t begin, std::int64_t end) {
      for_each_row(rows, begin, end, [&](std::int64_t row, std::int64_t offset) {
        const T* p = src + offset;
        Key<T> best = static_cast<Key<T>>(p[0]);
        std::int64_t best_index = 0;
        for (std::int64_t i = 1; i < n && !is_nan(best); ++i) {
          const Key<T> v = static_cast<Key<T>>(p[i * stride]);
          if (v > best || is_nan(v)) {
            best = v;
            best_index = i;
          }
        }
        dst[row] = best_index;
      });
    });
  });
}

void topk(const Tensor& x, std::int64_t k, std::int64_t dim, const Tensor& values,
          const Tensor& indices) {
  visit_selectable(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows rows = rows_along(x.shape(), x.strides(), dim);
    const std::int64_t n = rows.length;
    if (k == 0) return;
    const T* src = x.data<T>();
    T* value_dst = values.data<T>();
    std::int64_t* index_dst = indices.data<std::int64_t>();
    const std::int64_t grain = std::max<std::int64_t>(1, (1 << 14) / n);
    // Small k: one pass keeping the k best in a heap whose top is the worst of them, so most
    // elements cost one comparison. Large k: select with nth_element, then sort the k.
    const bool use_heap = k * 8 <= n;
    parallel_for(rows.count(), grain, [&](std::int64_t begin, std::int64_t end) {
      std::vector<Entry<T>> entries(static_cast<std::size_t>(use_heap ? k : n));
      for_each_row(rows, begin, end, [&](std::int64_t row, std::int64_t offset) {
        const T* p = src + offset;
        const auto key = [&](std::int64_t i) { return static_cast<Key<T>>(p[i * rows.stride]); };
        if (use_heap) {
          for (std::int64_t i = 0; i < k; ++i) entries[i] = {key(i), i};
          std::make_heap(entries.begin(), entries.end(), ranks_before<T>);
          for (std::int64_t i = k; i < n; ++i) {
            const Entry<T> e{key(i), i};
            if (!ranks_before(e, entries.front())) continue;
            std::pop_heap(entries.begin(), entries.end(), ranks_before<T>);
            entries.back() = e;
            std::push_heap(entries.begin(), entries.end(), ranks_before<T>);
          }
        } else {
          for (std::int64_t i = 0; i < n; ++i) entries[i] = {key(i), i};
          if (k < n) {
            std::nth_element(entries.begin(), entries.begin() + (k - 1), entries.end(),
                             ranks_before<T>);
          }
        }
        std::sort(entries.begin(), entries.begin() + k, ranks_before<T>);
        const std::int64_t start = rows.contiguous_start(row, k);
        for (std::int64_t j = 0; j < k; ++j) {
          const std::int64_t at = start + j * rows.inner;
          value_dst[at] = p[entries[j].index * rows.stride];  // the element itself, bit for bit
          index_dst[at] = entries[j].index;
        }
      });
    });
  });
}

}  // namespace strata::cpu

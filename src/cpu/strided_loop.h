#pragma once
// The one iteration mechanism behind the CPU elementwise ops (activations, add, mul) and the
// row-wise ops (softmax, argmax, topk): a loop over a shape with per-operand element strides,
// coalesced so that contiguous (or broadcast) operands run as long inner stretches, and split
// across threads by linear index.

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "cpu/float_io.h"
#include "strata/core/dtype_traits.h"
#include "strata/core/error.h"
#include "strata/core/shape.h"

namespace strata::cpu {

// Calls f(TypeTag<T>{}) for the float32/bfloat16/float16 dtypes (the front ends reject others).
template <typename F>
decltype(auto) visit_compute_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      return f(TypeTag<float>{});
    case DType::BFloat16:
      return f(TypeTag<BFloat16>{});
    case DType::Float16:
      return f(TypeTag<Half>{});
    default:
      break;
  }
  STRATA_THROW(InternalError,
               "CPU kernel reached with dtype {}; the op front end should have "
               "rejected it",
               dtype);
}

// A shape with N operands' strides after coalescing: size-1 dimensions dropped and neighbours
// merged wherever every operand steps through them as one dimension. Never empty.
template <std::size_t N>
struct StridedLoop {
  Shape sizes;
  std::array<Shape, N> strides;
  std::int64_t numel = 1;

  std::int64_t inner_size() const { return sizes.back(); }
  std::int64_t inner_stride(std::size_t operand) const { return strides[operand].back(); }
};

template <std::size_t N>
StridedLoop<N> make_strided_loop(const Shape& sizes, const std::array<Shape, N>& strides) {
  StridedLoop<N> loop;
  loop.numel = shape_numel(sizes);
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    bool merge = !loop.sizes.empty();
    for (std::size_t k = 0; k < N && merge; ++k) {
      merge = loop.strides[k].back() == strides[k][d] * sizes[d];
    }
    if (merge) {
      loop.sizes.back() *= sizes[d];
      for (std::size_t k = 0; k < N; ++k) loop.strides[k].back() = strides[k][d];
      continue;
    }
    loop.sizes.push_back(sizes[d]);
    for (std::size_t k = 0; k < N; ++k) loop.strides[k].push_back(strides[k][d]);
  }
  if (loop.sizes.empty()) {
    loop.sizes.push_back(1);
    for (std::size_t k = 0; k < N; ++k) loop.strides[k].push_back(0);
  }
  return loop;
}

// Calls run(linear_begin, offsets, n) for each stretch of the innermost dimension that falls in
// the linear range [begin, end): element t of the stretch sits at offsets[k] + t * inner_stride(k)
// for operand k.
template <std::size_t N, typename Run>
void for_each_run(const StridedLoop<N>& loop, std::int64_t begin, std::int64_t end, Run&& run) {
  if (begin >= end) return;
  const std::size_t rank = loop.sizes.size();
  Shape index(rank);
  std::array<std::int64_t, N> offsets{};
  std::int64_t rest = begin;
  for (std::size_t d = rank; d-- > 0;) {
    index[d] = rest % loop.sizes[d];
    rest /= loop.sizes[d];
    for (std::size_t k = 0; k < N; ++k) offsets[k] += index[d] * loop.strides[k][d];
  }
  const std::size_t last = rank - 1;
  for (std::int64_t pos = begin; pos < end;) {
    const std::int64_t n = std::min(loop.sizes[last] - index[last], end - pos);
    run(pos, offsets, n);
    pos += n;
    index[last] += n;
    for (std::size_t k = 0; k < N; ++k) offsets[k] += n * loop.strides[k][last];
    // Carry into the outer dimensions.
    for (std::size_t d = last; d > 0 && index[d] == loop.sizes[d]; --d) {
      index[d] = 0;
      ++index[d - 1];
      for (std::size_t k = 0; k < N; ++k) {
        offsets[k] += loop.strides[k][d - 1] - loop.sizes[d] * loop.strides[k][d];
      }
    }
  }
}

// p[0], p[stride], ..., p[(n-1)*stride] as floats: `p` itself when it already is a contiguous
// float row, otherwise converted into `buffer` (n floats).
template <typename T>
const float* load_floats(const T* p, std::int64_t stride, std::int64_t n, float* buffer) {
  if (stride == 1) {
    if constexpr (std::is_same_v<T, float>) {
      return p;
    } else {
      convert_row_to_float(p, buffer, n);
      return buffer;
    }
  }
  if (stride == 0) {
    std::fill(buffer, buffer + n, load_as_float(p, 0));
    return buffer;
  }
  for (std::int64_t i = 0; i < n; ++i) buffer[i] = load_as_float(p, i * stride);
  return buffer;
}

// Stores n floats to p[0], p[stride], ... (one rounding each).
template <typename T>
void store_floats(const float* values, T* p, std::int64_t stride, std::int64_t n) {
  if (stride == 1) {
    store_row_from_float(values, p, n);
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) store_from_float(p, i * stride, values[i]);
}

// The rows of a tensor along one dimension, for the row-wise ops: each row has `length` elements
// `stride` apart; rows are numbered in row-major order of the other dimensions.
struct Rows {
  std::int64_t length = 1;
  std::int64_t stride = 0;
  std::int64_t inner = 1;  // product of the sizes after the dimension
  StridedLoop<1> starts;   // over the other dimensions: where each row begins

  std::int64_t count() const { return starts.numel; }
  // Where row `row` begins in a contiguous tensor of the same shape with the dimension resized
  // to `size` (its elements are then `inner` apart).
  std::int64_t contiguous_start(std::int64_t row, std::int64_t size) const {
    return (row / inner) * size * inner + row % inner;
  }
};

// `dim` is already wrapped; a rank-0 tensor is one row of one element.
inline Rows rows_along(const Shape& shape, const Shape& strides, std::int64_t dim) {
  Rows rows;
  Shape other_sizes;
  Shape other_strides;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (static_cast<std::int64_t>(d) == dim) {
      rows.length = shape[d];
      rows.stride = strides[d];
      continue;
    }
    other_sizes.push_back(shape[d]);
    other_strides.push_back(strides[d]);
    if (static_cast<std::int64_t>(d) > dim) rows.inner *= shape[d];
  }
  rows.starts = make_strided_loop<1>(other_sizes, {other_strides});
  return rows;
}

// Calls fn(row, offset_of_first_element) for the rows in [begin, end).
template <typename Fn>
void for_each_row(const Rows& rows, std::int64_t begin, std::int64_t end, Fn&& fn) {
  const std::int64_t step = rows.starts.inner_stride(0);
  for_each_run(rows.starts, begin, end,
               [&](std::int64_t first, const std::array<std::int64_t, 1>& offsets, std::int64_t n) {
                 for (std::int64_t t = 0; t < n; ++t) fn(first + t, offsets[0] + t * step);
               });
}

}  // namespace strata::cpu

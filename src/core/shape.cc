#include "strata/core/shape.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "strata/core/error.h"

namespace strata {

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  std::int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<std::int64_t>(shape[i], 1);
  }
  return strides;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::int64_t wrap_dim(std::int64_t dim, std::int64_t rank, const char* what) {
  const std::int64_t lo = rank == 0 ? -1 : -rank;
  const std::int64_t hi = rank == 0 ? 0 : rank - 1;
  STRATA_CHECK_ARG(dim >= lo && dim <= hi,
                   "{}: dimension {} is out of range for a tensor of rank {} (expected {}..{})",
                   what, dim, rank, lo, hi);
  return dim < 0 ? dim + std::max<std::int64_t>(rank, 1) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    STRATA_CHECK_ARG(da == db || da == 1 || db == 1,
                     "{}: shapes {} and {} cannot be broadcast together (dimension {} is {} vs {})",
                     what, shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace strata

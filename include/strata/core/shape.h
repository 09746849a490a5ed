#pragma once
// Shapes and strides, in elements.

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

using Shape = std::vector<std::int64_t>;

std::int64_t shape_numel(const Shape& shape);
// Row-major strides for `shape`.
Shape contiguous_strides(const Shape& shape);
// "[2, 3, 4]"
std::string shape_str(const Shape& shape);
// Maps a possibly negative dimension into [0, rank). `what` names the caller for the error.
std::int64_t wrap_dim(std::int64_t dim, std::int64_t rank, const char* what);
// The broadcast of two shapes (numpy rules); throws InvalidArgument naming `what` when they clash.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what);

}  // namespace strata

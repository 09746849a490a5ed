#pragma once
// Element conversion between any two dtypes, bit-exact with PyTorch's CPU casts (see
// docs/dtype-conversions.md for the rules, including the ones PyTorch leaves to the platform).

#include <cstddef>
#include <cstdint>

#include "strata/core/dtype.h"

namespace strata {

// Converts `count` contiguous elements. `src` and `dst` must not overlap unless they are the
// same pointer with the same dtype (then it is a no-op).
void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                      std::size_t count);

// Converts `count` elements with element strides (in elements, may be 0 for broadcast reads).
void convert_elements_strided(const void* src, DType src_dtype, std::int64_t src_stride,
                              void* dst, DType dst_dtype, std::int64_t dst_stride,
                              std::size_t count);

}  // namespace strata

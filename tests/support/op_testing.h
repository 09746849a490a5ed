#pragma once
// Helpers for op tests: seeded random inputs, non-contiguous copies, and comparison of an op's
// result with an independent naive reference computed in double precision.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::testing {

// The dtypes every floating-point op supports.
inline const std::vector<DType> kFloatDTypes = {DType::Float32, DType::BFloat16, DType::Float16};

// Absolute and relative tolerance: |actual - expected| <= atol + rtol * |expected|.
struct Tolerance {
  double atol;
  double rtol;
};
// Per-dtype tolerance for results computed in float32 and rounded to `dtype` once.
Tolerance tolerance_for(DType dtype);

// Uniform values in [lo, hi), already rounded to `dtype` so a double reference sees exactly the
// values the op sees. Deterministic for a seed.
Tensor random_tensor(const Shape& shape, DType dtype, std::uint64_t seed, double lo = -1.0,
                     double hi = 1.0);
// Random integers in [lo, hi) of an integer dtype.
Tensor random_int_tensor(const Shape& shape, DType dtype, std::uint64_t seed, std::int64_t lo,
                         std::int64_t hi);
// Same values, non-contiguous layout: the data sits in a larger buffer with padding in the last
// dimension, and the first two dimensions are stored transposed when rank >= 2.
Tensor make_noncontiguous(const Tensor& t);

// Expects `actual` (any dtype, any device) to match `expected` (row-major doubles) within `tol`.
// Reports the number of mismatches and the first few with their indices. `what` names the case.
::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected,
                                     Tolerance tol, const std::string& what = "");

// "float32" etc., for parameterised test names.
std::string dtype_test_name(DType dtype);

}  // namespace strata::testing

#pragma once
// Helpers for op tests: seeded random inputs, non-contiguous copies, and comparison of an op's
// result with an independent naive reference computed in double precision.

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "strata/core/device.h"
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

// One instance of a device-parameterised op test: the device the op runs on and the dtype.
struct OpCase {
  Device device;
  DType dtype;
};
void PrintTo(const OpCase& c, std::ostream* os);

// Every dtype of `dtypes` on the CPU and on cuda:0. The CUDA cases are always instantiated and
// skip themselves where no GPU is usable, so test names do not depend on the machine.
std::vector<OpCase> op_cases(const std::vector<DType>& dtypes = kFloatDTypes);
// "cpu_float32", "cuda0_bfloat16": the test-name suffix of a case.
std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info);
// Whether tensors can live on `device` in this process (a CUDA build with a GPU, for cuda:N).
bool device_available(Device device);

// Base fixture of the device-parameterised op tests. Inputs are built on the CPU (random_tensor
// and friends) and moved with on_device(); results are compared on the CPU by all_close against
// a double reference computed from the CPU inputs.
class OpTest : public ::testing::TestWithParam<OpCase> {
 protected:
  void SetUp() override;
  Device device() const { return GetParam().device; }
  DType dtype() const { return GetParam().dtype; }
  Tensor on_device(const Tensor& t) const { return t.to(device()); }
};

// INSTANTIATE_TEST_SUITE_P(Devices, SomeTest, STRATA_OP_CASES()) or STRATA_OP_CASES(dtypes).
#define STRATA_OP_CASES(...) \
  ::testing::ValuesIn(::strata::testing::op_cases(__VA_ARGS__)), ::strata::testing::op_case_name

}  // namespace strata::testing

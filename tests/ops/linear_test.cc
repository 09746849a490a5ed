// linear and matmul against naive double-precision references computed from the inputs' values.

#include <cmath>
#include <optional>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

// y[m, n] = sum_k x[m, k] * w[n, k] + bias[n], in double.
std::vector<double> reference_linear(const Tensor& x, const Tensor& w,
                                     const std::optional<Tensor>& bias) {
  const std::int64_t k = w.size(1), n = w.size(0), m = x.numel() / std::max<std::int64_t>(k, 1);
  const std::vector<double> xv = x.to_doubles(), wv = w.to_doubles();
  const std::vector<double> bv = bias ? bias->to_doubles() : std::vector<double>(n, 0.0);
  std::vector<double> y(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = bv[j];
      for (std::int64_t t = 0; t < k; ++t) sum += xv[i * k + t] * wv[j * k + t];
      y[i * n + j] = sum;
    }
  }
  return y;
}

// The largest sum_k |x[m, k] * w[n, k]| over the outputs: the scale of float32 accumulation error.
double max_abs_dot(const Tensor& x, const Tensor& w) {
  const std::int64_t k = w.size(1), n = w.size(0), m = x.numel() / k;
  const std::vector<double> xv = x.to_doubles(), wv = w.to_doubles();
  double worst = 0.0;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (std::int64_t t = 0; t < k; ++t) sum += std::abs(xv[i * k + t] * wv[j * k + t]);
      worst = std::max(worst, sum);
    }
  }
  return worst;
}

// The per-dtype tolerance (one rounding of the output) plus float32 accumulation over k terms:
// each of the k additions rounds once, with errors that grow like sqrt(k) * 2^-24 * sum |x w|
// for random signs (4x margin). Only matters for long rows; for k <= 64 it is below 1e-6.
Tolerance accumulation_tolerance(DType dtype, std::int64_t k, double abs_dot) {
  Tolerance tol = tolerance_for(dtype);
  tol.atol += 4.0 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24) * abs_dot;
  return tol;
}

class LinearTest : public OpTest {
 protected:
  // Inputs are drawn on the CPU, where the reference is computed; the op runs on the device.
  void check(const Shape& x_shape, std::int64_t out_features, bool with_bias, std::uint64_t seed,
             bool noncontiguous = false) {
    const DType dtype = this->dtype();
    const std::int64_t in_features = x_shape.back();
    Tensor x = random_tensor(x_shape, dtype, seed);
    Tensor w = random_tensor({out_features, in_features}, dtype, seed + 1);
    std::optional<Tensor> bias;
    if (with_bias) bias = random_tensor({out_features}, dtype, seed + 2);
    const std::vector<double> expected = reference_linear(x, w, bias);
    const Tolerance tol = accumulation_tolerance(dtype, in_features, max_abs_dot(x, w));
    x = on_device(x);
    w = on_device(w);
    if (bias) bias = on_device(*bias);
    if (noncontiguous) {
      x = make_noncontiguous(x);
      w = make_noncontiguous(w);
      if (bias) bias = make_noncontiguous(*bias);
    }
    const Tensor y = ops::linear(x, w, bias);
    EXPECT_EQ(y.device(), device());
    Shape y_shape = x_shape;
    y_shape.back() = out_features;
    EXPECT_EQ(y.shape(), y_shape);
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_TRUE(all_close(
        y, expected, tol,
        fmt::format("linear x{} out={} bias={}", shape_str(x_shape), out_features, with_bias)));
  }
};

TEST_P(LinearTest, WithAndWithoutBias) {
  check({2, 3, 17}, 5, true, 10);  // 6 rows: the GEMM path
  check({2, 3, 17}, 5, false, 20);
  check({17}, 3, true, 30);  // 1-D x: one row
}

TEST_P(LinearTest, DecodeRowsUseEveryMatvecShape) {
  // 1..16 rows take the matvec kernel (groups of four x rows, 4- and 2-row weight tiles plus the
  // leftovers, and a k tail past the vector width); 17 rows are the first GEMM case.
  for (std::int64_t rows = 1; rows <= 17; ++rows) {
    check({rows, 33}, 19, true, 100 + rows);
    check({rows, 70}, 4, false, 200 + rows);
  }
}

TEST_P(LinearTest, SmallBatchesSplitOverThreads) {
  // Enough output features for several 64-feature blocks (the unit the threads share), the last
  // one partial, and k long enough for the vector loop plus a tail.
  for (const std::int64_t rows : {1, 3, 4, 5, 8, 16}) check({rows, 515}, 1000, rows % 2 == 1, 300);
}

TEST_P(LinearTest, PrefillRowsBeyondTheMatvecKernel) {
  // More than 16 rows: sgemm for float32/float16, AMX (blocks of 16 x rows, the last one
  // partial, k and n tails) or the widened sgemm tiles for bfloat16; k < 32 never takes AMX.
  check({17, 70}, 37, true, 400);
  check({2, 20, 515}, 130, false, 401);
  check({33, 31}, 20, true, 402);
  check({48, 64}, 32, true, 403);
}

TEST_P(LinearTest, SingleRowsOfAlignedWidth) {
  // One row whose width is a multiple of 16 bytes: the GPU's matrix-vector kernel (16-byte
  // loads), with and without bias, short and long rows.
  check({1, 96}, 40, true, 110);
  check({96}, 7, false, 111);
  check({1, 4096}, 70, false, 112);
  check({1, 1, 1024}, 33, true, 113);
}

TEST_P(LinearTest, OddSizes) {
  check({1, 1}, 1, true, 40);
  check({3, 1}, 3, false, 41);
  check({1, 3}, 17, true, 42);
  check({17, 3}, 1, true, 43);
}

TEST_P(LinearTest, LongRows) { check({2, 4097}, 3, true, 50); }

TEST_P(LinearTest, SeveralWeightTiles) {
  // The bf16/f16 GEMM path widens 2^20 floats of weight at a time: 32 rows of 32768, so 34 rows
  // take two tiles, the second one partial.
  check({5, 32768}, 34, true, 55);
}

TEST_P(LinearTest, NonContiguousInputs) {
  check({3, 4, 9}, 6, true, 60, true);
  check({2, 21}, 7, true, 61, true);
}

TEST_P(LinearTest, EmptyDimensions) {
  const Tensor w = on_device(random_tensor({4, 3}, dtype(), 70));
  const Tensor none = ops::linear(Tensor::zeros({0, 3}, dtype(), device()), w);
  EXPECT_EQ(none.shape(), (Shape{0, 4}));
  // No input features: every output is the bias.
  const Tensor bias = random_tensor({4}, dtype(), 71);
  const Tensor y = ops::linear(Tensor::zeros({2, 0}, dtype(), device()),
                               Tensor::zeros({4, 0}, dtype(), device()), on_device(bias));
  std::vector<double> expected = bias.to_doubles();
  expected.insert(expected.end(), expected.begin(), expected.end());
  EXPECT_TRUE(all_close(y, expected, {0.0, 0.0}, "linear with in_features = 0"));
}

INSTANTIATE_TEST_SUITE_P(Devices, LinearTest, STRATA_OP_CASES());

// Front-end checks, the same on every device.
class LinearErrors : public ::testing::TestWithParam<DType> {};

TEST_P(LinearErrors, RejectsBadInputs) {
  const DType dtype = GetParam();
  const Tensor x = random_tensor({2, 5}, dtype, 80);
  const Tensor w = random_tensor({3, 5}, dtype, 81);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::linear(x, random_tensor({3, 4}, dtype, 82));
      },
      {"linear", "in_features"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::linear(x, random_tensor({5}, dtype, 83)); },
                                             {"linear", "weight"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { ops::linear(x, w, random_tensor({4}, dtype, 84)); }, {"linear", "bias"}));
  const DType other = dtype == DType::Float32 ? DType::BFloat16 : DType::Float32;
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::linear(x, w.to(other)); },
                                             {"linear", "weight", "dtype"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { ops::linear(x, w, random_tensor({3}, other, 85)); }, {"linear", "bias", "dtype"}));
  const Tensor meta = Tensor::empty({3, 5}, dtype, Device::meta());
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { ops::linear(x, meta); }, {"linear", "weight", "meta"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [&] { ops::linear(x.to(DType::Int32), w.to(DType::Int32)); }, {"linear", "int32"}));
}

// ---- matmul -------------------------------------------------------------------------------

// a: [..., m, k] and b: [..., k, n] already expanded to one batch shape; row-major result.
std::vector<double> reference_matmul(const Tensor& a, const Tensor& b) {
  const std::int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const std::int64_t batches = shape_numel(Shape(a.shape().begin(), a.shape().end() - 2));
  const std::vector<double> av = a.to_doubles(), bv = b.to_doubles();
  std::vector<double> out(static_cast<std::size_t>(batches * m * n), 0.0);
  for (std::int64_t p = 0; p < batches; ++p) {
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (std::int64_t t = 0; t < k; ++t) {
          sum += av[(p * m + i) * k + t] * bv[(p * k + t) * n + j];
        }
        out[(p * m + i) * n + j] = sum;
      }
    }
  }
  return out;
}

class MatmulTest : public OpTest {
 protected:
  // Checks matmul(a, b) on the device against the reference; `batch` is the broadcast batch
  // shape and `expected_shape` the result shape (numpy's 1-D rules applied). a and b are on the
  // CPU; `da` and `db` hold their values on the device, in any layout (default: moved there).
  void check(const Tensor& a, const Tensor& b, const Shape& batch, const Shape& expected_shape,
             const Tensor& da = Tensor(), const Tensor& db = Tensor()) {
    const Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
    const Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    Shape a_full = batch, b_full = batch;
    a_full.insert(a_full.end(), {a2.size(-2), a2.size(-1)});
    b_full.insert(b_full.end(), {b2.size(-2), b2.size(-1)});
    const std::vector<double> expected = reference_matmul(a2.expand(a_full), b2.expand(b_full));
    const Tensor y =
        ops::matmul(da.defined() ? da : on_device(a), db.defined() ? db : on_device(b));
    EXPECT_EQ(y.device(), device());
    EXPECT_EQ(y.shape(), expected_shape);
    EXPECT_EQ(y.dtype(), a.dtype());
    EXPECT_TRUE(
        all_close(y, expected, tolerance_for(a.dtype()),
                  fmt::format("matmul {} @ {}", shape_str(a.shape()), shape_str(b.shape()))));
  }
  Tensor rand(const Shape& shape, std::uint64_t seed) {
    return random_tensor(shape, dtype(), seed);
  }
  // `t`'s values in make_noncontiguous's layout on the device.
  Tensor strided(const Tensor& t) { return make_noncontiguous(on_device(t)); }
};

TEST_P(MatmulTest, Matrices) {
  check(rand({3, 17}, 1), rand({17, 5}, 2), {}, {3, 5});
  check(rand({1, 1}, 3), rand({1, 1}, 4), {}, {1, 1});
  check(rand({17, 1}, 5), rand({1, 3}, 6), {}, {17, 3});
  check(rand({1, 40}, 7), rand({40, 17}, 8), {}, {1, 17});
}

TEST_P(MatmulTest, BatchedAndBroadcast) {
  check(rand({2, 3, 4, 5}, 10), rand({2, 3, 5, 6}, 11), {2, 3}, {2, 3, 4, 6});
  check(rand({2, 1, 4, 5}, 12), rand({3, 5, 6}, 13), {2, 3}, {2, 3, 4, 6});
  check(rand({4, 5}, 14), rand({3, 5, 2}, 15), {3}, {3, 4, 2});
  check(rand({3, 1, 2, 7}, 16), rand({1, 4, 7, 3}, 17), {3, 4}, {3, 4, 2, 3});
}

TEST_P(MatmulTest, VectorOperands) {
  check(rand({17}, 20), rand({17}, 21), {}, {});           // dot product -> scalar
  check(rand({5}, 22), rand({5, 3}, 23), {}, {3});         // row vector @ matrix
  check(rand({4, 5}, 24), rand({5}, 25), {}, {4});         // matrix @ column vector
  check(rand({2, 4, 5}, 26), rand({5}, 27), {2}, {2, 4});  // batched matrix @ vector
  check(rand({5}, 28), rand({2, 5, 3}, 29), {2}, {2, 3});  // vector @ batched matrix
}

TEST_P(MatmulTest, StridedOperands) {
  const Tensor a1 = rand({3, 17}, 30), b1 = rand({17, 4}, 31);
  check(a1, b1, {}, {3, 4}, strided(a1), strided(b1));
  // b as the transpose of a contiguous [n, k] matrix (x @ W^T, q @ k^T).
  const Tensor a2 = rand({2, 3, 8}, 32), b2 = rand({2, 6, 8}, 33);
  check(a2, b2.transpose(1, 2), {2}, {2, 3, 6}, on_device(a2), on_device(b2).transpose(1, 2));
  const Tensor a3 = rand({8, 3}, 34), b3 = rand({8, 5}, 35);
  check(a3.transpose(0, 1), b3, {}, {3, 5}, on_device(a3).transpose(0, 1), on_device(b3));
  const Tensor a4 = rand({2, 3, 4, 5}, 36), b4 = rand({2, 3, 5, 2}, 37);
  check(a4, b4, {2, 3}, {2, 3, 4, 2}, strided(a4), strided(b4));
}

TEST_P(MatmulTest, EmptyInnerDimensionGivesZeros) {
  check(rand({3, 0}, 40), rand({0, 2}, 41), {}, {3, 2});
  EXPECT_EQ(ops::matmul(on_device(rand({0, 4}, 42)), on_device(rand({4, 2}, 43))).shape(),
            (Shape{0, 2}));
}

INSTANTIATE_TEST_SUITE_P(Devices, MatmulTest, STRATA_OP_CASES());

class MatmulErrors : public ::testing::TestWithParam<DType> {
 protected:
  Tensor rand(const Shape& shape, std::uint64_t seed) {
    return random_tensor(shape, GetParam(), seed);
  }
};

TEST_P(MatmulErrors, RejectsBadInputs) {
  const DType dtype = GetParam();
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::matmul(rand({3, 4}, 50), rand({5, 2}, 51));
      },
      {"matmul", "inner"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::matmul(rand({2, 3, 4}, 52), rand({3, 4, 2}, 53));
      },
      {"matmul", "batch"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { ops::matmul(Tensor::zeros({}, dtype), rand({3}, 54)); }, {"matmul", "1 dim"}));
  const DType other = dtype == DType::Float16 ? DType::Float32 : DType::Float16;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::matmul(rand({3, 4}, 55), random_tensor({4, 2}, other, 56));
      },
      {"matmul", "dtype"}));
  const Tensor meta = Tensor::empty({4, 2}, dtype, Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::matmul(rand({3, 4}, 57), meta);
      },
      {"matmul", "meta"}));
}

INSTANTIATE_TEST_SUITE_P(FloatDTypes, LinearErrors, ::testing::ValuesIn(kFloatDTypes),
                         [](const auto& info) { return dtype_test_name(info.param); });
INSTANTIATE_TEST_SUITE_P(FloatDTypes, MatmulErrors, ::testing::ValuesIn(kFloatDTypes),
                         [](const auto& info) { return dtype_test_name(info.param); });

}  // namespace
}  // namespace strata::testing

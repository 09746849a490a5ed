#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::throws_naming;

// PyTorch's order for selection: NaN above everything, then larger values, then lower indices.
bool ranks_before(double a, std::int64_t ia, double b, std::int64_t ib) {
  if (std::isnan(a) != std::isnan(b)) return std::isnan(a);
  if (!std::isnan(a) && a != b) return a > b;
  return ia < ib;
}

// The rows of row-major values along `dim`: row r's element j sits at index(r, j).
struct RowLayout {
  std::int64_t n, inner, count;
  RowLayout(const Shape& shape, std::int64_t dim) {
    n = shape.empty() ? 1 : shape[dim];
    inner = 1;
    for (std::size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
    count = n == 0 ? 0 : shape_numel(shape) / n;
  }
  std::int64_t index(std::int64_t r, std::int64_t j) const {
    return (r / inner * n + j) * inner + r % inner;
  }
};

// Row order of the reference's rows, sorted by rank: a plain sort of (value, index) pairs.
std::vector<std::int64_t> ranked(const std::vector<double>& x, const RowLayout& rows,
                                 std::int64_t r) {
  std::vector<std::int64_t> order(rows.n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return ranks_before(x[rows.index(r, a)], a, x[rows.index(r, b)], b);
  });
  return order;
}

// Argmax by a linear scan (independent of the ranking sort above).
std::vector<std::int64_t> argmax_reference(const std::vector<double>& x, const RowLayout& rows) {
  std::vector<std::int64_t> out;
  for (std::int64_t r = 0; r < rows.count; ++r) {
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < rows.n && !std::isnan(x[rows.index(r, best)]); ++j) {
      const double v = x[rows.index(r, j)];
      if (std::isnan(v) || v > x[rows.index(r, best)]) best = j;
    }
    out.push_back(best);
  }
  return out;
}

class SelectionTest : public testing::OpTest {
 protected:
  // Floats in a narrow range (ties appear after rounding to 16 bits) or small integers, on the
  // CPU.
  Tensor input(const Shape& shape, std::uint64_t seed) {
    const DType dt = dtype();
    if (is_floating_point(dt)) return testing::random_tensor(shape, dt, seed, -2.0, 2.0);
    return testing::random_int_tensor(shape, dt, seed, dt == DType::UInt8 ? 0 : -20, 20);
  }

  // x is on the CPU; `dx` (default: x moved) holds its values on the case's device.
  void check_argmax(const Tensor& x, std::int64_t dim, const std::string& what,
                    const Tensor& dx = Tensor()) {
    const std::int64_t d = dim < 0 ? dim + std::max<std::int64_t>(x.dim(), 1) : dim;
    const RowLayout rows(x.shape(), d);
    const std::vector<std::int64_t> expected = argmax_reference(x.to_doubles(), rows);
    for (bool keepdim : {false, true}) {
      const Tensor out = ops::argmax(dx.defined() ? dx : on_device(x), dim, keepdim);
      EXPECT_EQ(out.device(), device()) << what;
      Shape shape = x.shape();
      if (!shape.empty()) {
        if (keepdim)
          shape[d] = 1;
        else
          shape.erase(shape.begin() + d);
      }
      EXPECT_EQ(out.shape(), shape) << what;
      ASSERT_EQ(out.dtype(), DType::Int64) << what;
      EXPECT_EQ(out.to_vector<std::int64_t>(), expected) << what << " keepdim " << keepdim;
    }
  }

  void check_topk(const Tensor& x, std::int64_t k, std::int64_t dim, const std::string& what,
                  const Tensor& dx = Tensor()) {
    const std::int64_t d = dim < 0 ? dim + std::max<std::int64_t>(x.dim(), 1) : dim;
    const std::vector<double> xv = x.to_doubles();
    const RowLayout rows(x.shape(), d);
    Shape shape = x.shape();
    if (!shape.empty()) shape[d] = k;
    const RowLayout out_rows(shape, d);
    std::vector<double> values(shape_numel(shape));
    std::vector<std::int64_t> indices(values.size());
    for (std::int64_t r = 0; r < rows.count; ++r) {
      const std::vector<std::int64_t> order = ranked(xv, rows, r);
      for (std::int64_t j = 0; j < k; ++j) {
        indices[out_rows.index(r, j)] = order[j];
        values[out_rows.index(r, j)] = xv[rows.index(r, order[j])];
      }
    }
    const auto [got_values, got_indices] = ops::topk(dx.defined() ? dx : on_device(x), k, dim);
    EXPECT_EQ(got_values.device(), device()) << what;
    EXPECT_EQ(got_values.shape(), shape) << what;
    EXPECT_EQ(got_values.dtype(), x.dtype()) << what;
    ASSERT_EQ(got_indices.dtype(), DType::Int64) << what;
    EXPECT_EQ(got_indices.to_vector<std::int64_t>(), indices) << what;
    EXPECT_TRUE(all_close(got_values, values, {0.0, 0.0}, what));  // exact, NaN matches NaN
  }
};

TEST_P(SelectionTest, ArgmaxOddSizesAndDims) {
  check_argmax(input({1}, 1), -1, "[1]");
  check_argmax(input({17}, 2), 0, "[17]");
  check_argmax(input({3, 4097}, 3), -1, "[3, 4097]");
  const Tensor x = input({4, 5, 6}, 4);
  for (std::int64_t dim : {0, 1, 2, -2}) check_argmax(x, dim, "dim " + std::to_string(dim));
  check_argmax(input({}, 5), 0, "rank 0");
  check_argmax(input({700, 33}, 6), -1, "many rows");
  // Vocabulary-sized rows (a decode step's argmax): one long row read in packs, and rows whose
  // starts are not 16-byte aligned.
  check_argmax(input({1, 152064}, 8), -1, "one long row");
  check_argmax(input({3, 32003}, 9), -1, "unaligned long rows");
}

TEST_P(SelectionTest, ArgmaxNonContiguous) {
  const Tensor x = input({6, 5, 7}, 7);
  const Tensor strided = testing::make_noncontiguous(on_device(x));
  ASSERT_FALSE(strided.is_contiguous());
  for (std::int64_t dim : {0, 1, 2}) check_argmax(x, dim, "non-contiguous", strided);
}

TEST_P(SelectionTest, TopkSizes) {
  const Tensor x = input({3, 17}, 10);
  for (std::int64_t k : {0, 1, 3, 16, 17}) check_topk(x, k, -1, "k " + std::to_string(k));
  check_topk(input({2, 4097}, 11), 5, -1, "[2, 4097]");
  check_topk(input({4, 9, 5}, 12), 4, 1, "middle dim");
  check_topk(input({4, 9, 5}, 13), 2, 0, "first dim");
  check_topk(input({}, 14), 1, 0, "rank 0");
  check_topk(input({900, 20}, 15), 3, -1, "many rows");
}

TEST_P(SelectionTest, TopkNonContiguous) {
  const Tensor x = input({6, 5, 7}, 16);
  const Tensor strided = testing::make_noncontiguous(on_device(x));
  for (std::int64_t dim : {0, 1, 2}) check_topk(x, 3, dim, "non-contiguous", strided);
}

TEST_P(SelectionTest, TiesPickLowerIndexFirst) {
  const Tensor x = on_device(Tensor::from_doubles({1, 3, 2, 3, 3, 0, 2}, {7}, dtype()));
  EXPECT_EQ(ops::argmax(x).item(), 1.0);
  const auto [values, indices] = ops::topk(x, 5);
  EXPECT_EQ(indices.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 4, 2, 6}));
  EXPECT_EQ(values.to_doubles(), (std::vector<double>{3, 3, 3, 2, 2}));
}

INSTANTIATE_TEST_SUITE_P(Devices, SelectionTest,
                         STRATA_OP_CASES({DType::Float32, DType::BFloat16, DType::Float16,
                                          DType::Float64, DType::Int64, DType::Int32, DType::Int16,
                                          DType::Int8, DType::UInt8}));

class SelectionNaNTest : public testing::OpTest {};

TEST_P(SelectionNaNTest, NaNCountsAsLargestAndTheFirstWins) {
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = on_device(Tensor::from_doubles({1, nan, inf, nan, 5, -inf}, {6}, dtype()));
  EXPECT_EQ(ops::argmax(x).item(), 1.0);
  const auto [values, indices] = ops::topk(x, 4);
  EXPECT_EQ(indices.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 2, 4}));
  EXPECT_TRUE(all_close(values, {nan, nan, inf, 5}, {0.0, 0.0}, "topk with NaN"));
  const Tensor no_nan = on_device(Tensor::from_doubles({-inf, -inf, -5}, {3}, dtype()));
  EXPECT_EQ(ops::argmax(no_nan).item(), 2.0);
}

TEST_P(SelectionNaNTest, RandomRowsWithNaNs) {
  // 23 columns take topk's select-and-sort path for k = 6, 200 columns its heap path.
  for (std::int64_t cols : {23, 200}) {
    std::vector<double> v = testing::random_tensor({5, cols}, DType::Float64, 20).to_doubles();
    for (std::size_t i = 3; i < v.size(); i += 7) v[i] = std::nan("");
    const Tensor x = Tensor::from_doubles(v, {5, cols}, dtype());
    const RowLayout rows({5, cols}, 1);
    EXPECT_EQ(ops::argmax(on_device(x), 1).to_vector<std::int64_t>(),
              argmax_reference(x.to_doubles(), rows));
    const std::vector<std::int64_t> indices =
        ops::topk(on_device(x), 6, 1).second.to_vector<std::int64_t>();
    for (std::int64_t r = 0; r < 5; ++r) {
      const std::vector<std::int64_t> order = ranked(x.to_doubles(), rows, r);
      for (std::int64_t j = 0; j < 6; ++j) {
        EXPECT_EQ(indices[r * 6 + j], order[j]) << cols << " columns, row " << r << ", " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, SelectionNaNTest, STRATA_OP_CASES());

TEST(SelectionErrors, RejectsBadInputs) {
  const Tensor x = Tensor::zeros({2, 5}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::topk(x, 6); }, {"topk"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::topk(x, -1); }, {"topk"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::topk(x, 1, 2); }, {"topk"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::argmax(x, -3); }, {"argmax"}));
  const Tensor empty_dim = Tensor::zeros({2, 0}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::argmax(empty_dim); }, {"argmax"}));
  const Tensor meta = Tensor::empty({2, 5}, DType::Float16, Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::argmax(meta); }, {"argmax"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::topk(meta, 1); }, {"topk"}));
  const Tensor flags = Tensor::zeros({4}, DType::Bool);
  EXPECT_TRUE(throws_naming<NotSupported>([&] { ops::argmax(flags); }, {"argmax"}));
  EXPECT_TRUE(throws_naming<NotSupported>([&] { ops::topk(flags, 1); }, {"topk"}));
  const Tensor scalar = Tensor::zeros({}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::topk(scalar, 0); }, {"topk"}));
}

}  // namespace
}  // namespace strata

#include <cmath>
#include <limits>
#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::throws_naming;
using testing::tolerance_for;

// Naive double-precision softmax of row-major values along `dim` (already non-negative).
std::vector<double> softmax_reference(const std::vector<double>& x, const Shape& shape,
                                      std::int64_t dim) {
  const std::int64_t n = shape.empty() ? 1 : shape[dim];
  std::int64_t inner = 1;
  for (std::size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  const std::int64_t outer = static_cast<std::int64_t>(x.size()) / (n * inner);
  std::vector<double> out(x.size());
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = 0; i < inner; ++i) {
      auto at = [&](std::int64_t j) { return (o * n + j) * inner + i; };
      double max = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < n; ++j) max = std::max(max, x[at(j)]);
      double sum = 0.0;
      for (std::int64_t j = 0; j < n; ++j) sum += std::exp(x[at(j)] - max);
      for (std::int64_t j = 0; j < n; ++j) out[at(j)] = std::exp(x[at(j)] - max) / sum;
    }
  }
  return out;
}

class SoftmaxTest : public testing::OpTest {
 protected:
  // x is on the CPU; `input` (default: x moved) holds its values on the case's device.
  void check(const Tensor& x, std::int64_t dim, const std::string& what,
             const Tensor& input = Tensor()) {
    const std::int64_t wrapped = dim < 0 ? dim + std::max<std::int64_t>(x.dim(), 1) : dim;
    const Tensor y = ops::softmax(input.defined() ? input : on_device(x), dim);
    EXPECT_EQ(y.device(), device()) << what;
    EXPECT_EQ(y.shape(), x.shape()) << what;
    EXPECT_EQ(y.dtype(), x.dtype()) << what;
    EXPECT_TRUE(y.is_contiguous()) << what;
    EXPECT_TRUE(all_close(y, softmax_reference(x.to_doubles(), x.shape(), wrapped),
                          tolerance_for(x.dtype()), what));
  }
};

TEST_P(SoftmaxTest, LastDimensionOddSizes) {
  const Shape shapes[] = {{1}, {3}, {2, 17}, {3, 4097}};
  std::uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    check(random_tensor(shape, dtype(), seed++, -4.0, 4.0), -1, shape_str(shape));
  }
}

TEST_P(SoftmaxTest, EveryDimension) {
  const Tensor x = random_tensor({3, 5, 7}, dtype(), 11, -3.0, 3.0);
  for (std::int64_t dim : {0, 1, 2, -1, -2, -3}) check(x, dim, "dim " + std::to_string(dim));
}

TEST_P(SoftmaxTest, NonContiguousInput) {
  const Tensor x = random_tensor({4, 6, 9}, dtype(), 12);
  const Tensor strided = testing::make_noncontiguous(on_device(x));
  ASSERT_FALSE(strided.is_contiguous());
  for (std::int64_t dim : {0, 1, 2}) {
    check(x, dim, "non-contiguous dim " + std::to_string(dim), strided);
  }
}

TEST_P(SoftmaxTest, LargeLogitsDoNotOverflow) {
  // exp(1000) overflows even in double: only a max-shifted softmax gets these right.
  check(random_tensor({5, 33}, dtype(), 13, -1000.0, 1000.0), -1, "large logits");
}

TEST_P(SoftmaxTest, ManyRowsRunInParallel) {
  check(random_tensor({1031, 40}, dtype(), 14, -2.0, 2.0), -1, "1031 rows");
}

TEST_P(SoftmaxTest, ScalarIsOne) {
  const Tensor x = on_device(Tensor::from_doubles({0.25}, {}, dtype()));
  const Tensor y = ops::softmax(x);
  EXPECT_EQ(y.dim(), 0);
  EXPECT_EQ(y.item(), 1.0);
}

TEST_P(SoftmaxTest, NegativeInfinityEntriesGetZero) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = Tensor::from_doubles({0.5, -inf, 1.5, -inf}, {4}, dtype());
  check(x, 0, "-inf entries");
  EXPECT_EQ(ops::softmax(on_device(x)).to_doubles()[1], 0.0);
}

TEST_P(SoftmaxTest, AllNegativeInfinityRowIsNaNLikePyTorch) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = Tensor::from_doubles({-inf, -inf, 1.0, 2.0}, {2, 2}, dtype());
  const std::vector<double> y = ops::softmax(on_device(x)).to_doubles();
  EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
  EXPECT_FALSE(std::isnan(y[2]) || std::isnan(y[3]));
}

INSTANTIATE_TEST_SUITE_P(Devices, SoftmaxTest, STRATA_OP_CASES());

TEST(SoftmaxErrors, RejectsBadInputs) {
  const Tensor meta = Tensor::empty({2, 3}, DType::Float32, Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::softmax(meta); }, {"softmax"}));
  const Tensor ints = Tensor::zeros({2, 3}, DType::Int32);
  EXPECT_TRUE(throws_naming<NotSupported>([&] { ops::softmax(ints); }, {"softmax"}));
  const Tensor x = Tensor::zeros({2, 3}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::softmax(x, 2); }, {"softmax"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::softmax(Tensor()); }, {"softmax"}));
}

}  // namespace
}  // namespace strata

#include <functional>
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

struct BinaryOp {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  double (*reference)(double, double);
};

const std::vector<BinaryOp>& binary_ops() {
  static const std::vector<BinaryOp> list = {
      {"add", [](const Tensor& a, const Tensor& b) { return ops::add(a, b); },
       [](double a, double b) { return a + b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return ops::mul(a, b); },
       [](double a, double b) { return a * b; }},
  };
  return list;
}

// Naive numpy broadcasting: for each output index, the operand index with size-1 dimensions
// pinned to 0 and missing leading dimensions ignored.
std::vector<double> broadcast_reference(const Tensor& a, const Tensor& b, const Shape& out_shape,
                                        double (*f)(double, double)) {
  const std::vector<double> av = a.to_doubles(), bv = b.to_doubles();
  const std::size_t rank = out_shape.size();
  auto flat_index = [&](const Shape& shape, const Shape& index) {
    std::int64_t flat = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      const std::int64_t i = index[rank - shape.size() + d];
      flat = flat * shape[d] + (shape[d] == 1 ? 0 : i);
    }
    return flat;
  };
  std::vector<double> out(static_cast<std::size_t>(shape_numel(out_shape)));
  Shape index(rank, 0);
  for (std::size_t n = 0; n < out.size(); ++n) {
    out[n] = f(av[flat_index(a.shape(), index)], bv[flat_index(b.shape(), index)]);
    for (std::size_t d = rank; d-- > 0;) {
      if (++index[d] < out_shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

class BinaryTest : public testing::OpTest {
 protected:
  // a and b are on the CPU; the ops run on the case's device.
  void check(const Tensor& a, const Tensor& b, const Shape& expected_shape,
             const std::string& what) {
    check(a, b, on_device(a), on_device(b), expected_shape, what);
  }
  // `da` and `db` hold a's and b's values on the device, in any layout.
  void check(const Tensor& a, const Tensor& b, const Tensor& da, const Tensor& db,
             const Shape& expected_shape, const std::string& what) {
    for (const BinaryOp& op : binary_ops()) {
      const std::string label = std::string(op.name) + " " + what;
      const Tensor y = op.op(da, db);
      EXPECT_EQ(y.device(), device()) << label;
      EXPECT_EQ(y.shape(), expected_shape) << label;
      EXPECT_EQ(y.dtype(), a.dtype()) << label;
      EXPECT_TRUE(y.is_contiguous()) << label;
      EXPECT_TRUE(all_close(y, broadcast_reference(a, b, expected_shape, op.reference),
                            tolerance_for(a.dtype()), label));
    }
  }
  Tensor rand(const Shape& shape, std::uint64_t seed) {
    return random_tensor(shape, dtype(), seed, -3.0, 3.0);
  }
  Tensor strided(const Tensor& t) { return testing::make_noncontiguous(on_device(t)); }
};

TEST_P(BinaryTest, SameShapeOddSizes) {
  const Shape shapes[] = {{1}, {3}, {17}, {4097}, {2, 3, 5}, {}};
  std::uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    check(rand(shape, seed), rand(shape, seed + 100), shape, shape_str(shape));
    ++seed;
  }
}

TEST_P(BinaryTest, BroadcastShapes) {
  struct Case {
    Shape a, b, out;
  };
  const Case cases[] = {
      {{5, 7}, {7}, {5, 7}},           // bias over rows
      {{7}, {5, 7}, {5, 7}},           // bias on the left
      {{1}, {4, 6}, {4, 6}},           // scalar-like [1]
      {{4, 6}, {}, {4, 6}},            // rank-0
      {{5, 1}, {1, 6}, {5, 6}},        // outer product
      {{4, 1, 5}, {3, 1}, {4, 3, 5}},  // rank mismatch, both broadcast
      {{2, 3, 1, 4}, {3, 5, 1}, {2, 3, 5, 4}},
      {{300, 257}, {257}, {300, 257}},  // big enough for several threads
  };
  std::uint64_t seed = 10;
  for (const Case& c : cases) {
    check(rand(c.a, seed), rand(c.b, seed + 1), c.out, shape_str(c.a) + " with " + shape_str(c.b));
    seed += 2;
  }
}

TEST_P(BinaryTest, NonContiguousOperands) {
  const Tensor a = rand({6, 4, 9}, 30), b = rand({4, 9}, 31), c = rand({6, 4, 9}, 32);
  ASSERT_FALSE(strided(a).is_contiguous());
  check(a, b, strided(a), strided(b), {6, 4, 9}, "non-contiguous broadcast");
  check(a, c, strided(a), strided(c), {6, 4, 9}, "non-contiguous same");
  const Tensor t = rand({9, 4}, 33), u = rand({4, 1}, 34);
  check(t.transpose(0, 1), u, on_device(t).transpose(0, 1), on_device(u), {4, 9}, "transposed");
}

INSTANTIATE_TEST_SUITE_P(Devices, BinaryTest, STRATA_OP_CASES());

TEST(BinaryErrors, RejectsBadInputs) {
  const Tensor f32 = Tensor::zeros({3}, DType::Float32);
  const Tensor other = Tensor::zeros({4}, DType::Float32);
  const Tensor bf16 = Tensor::zeros({3}, DType::BFloat16);
  const Tensor ints = Tensor::zeros({3}, DType::Int32);
  const Tensor meta = Tensor::empty({3}, DType::Float32, Device::meta());
  for (const BinaryOp& op : binary_ops()) {
    EXPECT_TRUE(throws_naming<InvalidArgument>([&] { op.op(f32, other); }, {op.name}));
    EXPECT_TRUE(throws_naming<InvalidArgument>([&] { op.op(f32, bf16); }, {op.name}));
    EXPECT_TRUE(throws_naming<InvalidArgument>([&] { op.op(meta, f32); }, {op.name}));
    EXPECT_TRUE(throws_naming<InvalidArgument>([&] { op.op(f32, meta); }, {op.name}));
    EXPECT_TRUE(throws_naming<NotSupported>([&] { op.op(ints, ints); }, {op.name}));
  }
}

}  // namespace
}  // namespace strata

// ops::swiglu and ops::sum_in_order: ops that do in one pass what a chain of other ops does, with
// the bits of that chain (each op's rounding where the chain rounds). Checked on every device
// against the chain run on the same device (byte for byte) and against a double reference.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
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

// Both on the cpu, same dtype and shape, every byte equal.
::testing::AssertionResult same_bytes(const Tensor& actual, const Tensor& expected) {
  const Tensor a = actual.to(Device::cpu()).contiguous();
  const Tensor e = expected.to(Device::cpu()).contiguous();
  if (a.dtype() != e.dtype() || a.shape() != e.shape()) {
    return ::testing::AssertionFailure() << a.describe() << " against " << e.describe();
  }
  if (std::memcmp(a.data_ptr(), e.data_ptr(), a.nbytes()) != 0) {
    const std::vector<double> av = a.to_doubles(), ev = e.to_doubles();
    for (std::size_t i = 0; i < av.size(); ++i) {
      if (std::memcmp(static_cast<const char*>(a.data_ptr()) + i * a.element_size(),
                      static_cast<const char*>(e.data_ptr()) + i * e.element_size(),
                      a.element_size()) != 0) {
        return ::testing::AssertionFailure()
               << "element " << i << ": " << av[i] << " against " << ev[i];
      }
    }
  }
  return ::testing::AssertionSuccess();
}

class SumInOrderTest : public testing::OpTest {
 protected:
  // Round to nearest: relative error at most half the spacing of the dtype's significand.
  double unit_roundoff() const {
    switch (dtype()) {
      case DType::BFloat16:
        return std::ldexp(1.0, -8);
      case DType::Float16:
        return std::ldexp(1.0, -11);
      default:
        return std::ldexp(1.0, -24);
    }
  }
  std::vector<Tensor> parts(std::int64_t count, const Shape& shape, std::uint64_t seed) const {
    std::vector<Tensor> out;
    for (std::int64_t i = 0; i < count; ++i) {
      // Magnitudes from 1e-3 to 1e3: the running sum's rounding decides low bits.
      const double scale = std::pow(10.0, static_cast<double>(i % 7) - 3.0);
      out.push_back(on_device(
          random_tensor(shape, dtype(), seed + static_cast<std::uint64_t>(i), -scale, scale)));
    }
    return out;
  }
};

// The bits of ops::add applied left to right, for counts below, at and past one launch's 16.
TEST_P(SumInOrderTest, EqualsChainedAddsBitForBit) {
  const Shape shapes[] = {{1, 2048}, {3, 5}, {4097}, {}};
  std::uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    for (const std::int64_t count : {1, 2, 3, 8, 16, 17, 40}) {
      const std::vector<Tensor> p = parts(count, shape, seed);
      seed += 50;
      Tensor chained = p[0].contiguous();
      // The exact sum, and the bound of its rounded chain: one rounding (relative error at
      // most u) of every partial sum.
      std::vector<double> exact = p[0].to_doubles(), bound(exact.size(), 0.0);
      for (std::size_t i = 1; i < p.size(); ++i) {
        chained = ops::add(chained, p[i]);
        const std::vector<double> v = p[i].to_doubles();
        for (std::size_t j = 0; j < v.size(); ++j) {
          exact[j] += v[j];
          bound[j] += std::abs(exact[j]) * 1.01 * unit_roundoff() + 1e-7;
        }
      }
      const Tensor sum = ops::sum_in_order(p);
      const std::string label = shape_str(shape) + " x" + std::to_string(count);
      EXPECT_EQ(sum.device(), device()) << label;
      EXPECT_EQ(sum.shape(), shape) << label;
      EXPECT_TRUE(same_bytes(sum, chained)) << label;
      const std::vector<double> got = sum.to(Device::cpu()).to_doubles();
      for (std::size_t j = 0; j < got.size(); ++j) {
        ASSERT_LE(std::abs(got[j] - exact[j]), bound[j]) << label << " element " << j;
      }
    }
  }
}

TEST_P(SumInOrderTest, TakesViews) {
  const Tensor whole = on_device(random_tensor({6, 9}, dtype(), 7, -3.0, 3.0));
  const std::vector<Tensor> rows = {whole.narrow(0, 4, 1), whole.narrow(0, 1, 1),
                                    whole.narrow(0, 2, 1)};
  const std::vector<Tensor> columns = {whole.transpose(0, 1).narrow(1, 0, 3),
                                       whole.transpose(0, 1).narrow(1, 3, 3)};
  EXPECT_TRUE(same_bytes(ops::sum_in_order(rows), ops::add(ops::add(rows[0], rows[1]), rows[2])));
  EXPECT_TRUE(same_bytes(ops::sum_in_order(columns), ops::add(columns[0], columns[1])));
}

INSTANTIATE_TEST_SUITE_P(Devices, SumInOrderTest, STRATA_OP_CASES());

TEST(SumInOrderErrors, RejectsBadInputs) {
  const Tensor a = Tensor::zeros({3}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { ops::sum_in_order({}); }, {"sum_in_order"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::sum_in_order({a, Tensor::zeros({4}, DType::Float32)});
      },
      {"sum_in_order", "parts[1]", "same shape"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::sum_in_order({a, a, Tensor::zeros({3}, DType::BFloat16)});
      },
      {"sum_in_order", "parts[2]"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::sum_in_order({a, Tensor::empty({3}, DType::Float32, Device::meta())});
      },
      {"sum_in_order", "parts[1]"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] { ops::sum_in_order({Tensor::zeros({3}, DType::Int32)}); }, {"sum_in_order"}));
}

class SwigluTest : public testing::OpTest {};

// silu(x gate^T) * (x up^T) with the roundings of linear, silu, linear, mul on the same device:
// rows 1-8 (one GEMV launch on a GPU), 9 and 20 (the ops), features a multiple of 16 bytes or
// not (the GEMV needs it), and leading dimensions.
TEST_P(SwigluTest, EqualsTheFourOpsBitForBit) {
  struct Case {
    Shape x;
    std::int64_t inter;
  };
  const Case cases[] = {{{1, 64}, 100},   {{2, 1032}, 72},   {{5, 64}, 33}, {{8, 264}, 40},
                        {{9, 64}, 24},    {{20, 72}, 16},    {{1, 33}, 10}, {{3, 33}, 10},
                        {{2, 3, 64}, 50}, {{1, 1, 2048}, 96}};
  std::uint64_t seed = 100;
  for (const Case& c : cases) {
    const std::int64_t in = c.x.back();
    const Tensor x = random_tensor(c.x, dtype(), seed, -2.0, 2.0);
    const Tensor gate = random_tensor({c.inter, in}, dtype(), seed + 1, -0.2, 0.2);
    const Tensor up = random_tensor({c.inter, in}, dtype(), seed + 2, -0.2, 0.2);
    seed += 3;
    const Tensor dx = on_device(x), dgate = on_device(gate), dup = on_device(up);
    const Tensor fused = ops::swiglu(dx, dgate, dup);
    const Tensor chain = ops::mul(ops::silu(ops::linear(dx, dgate)), ops::linear(dx, dup));
    const std::string label = shape_str(c.x) + " inter " + std::to_string(c.inter);
    Shape out_shape = c.x;
    out_shape.back() = c.inter;
    EXPECT_EQ(fused.device(), device()) << label;
    EXPECT_EQ(fused.shape(), out_shape) << label;
    EXPECT_TRUE(same_bytes(fused, chain)) << label;
    // Against doubles: silu(g) * u of the exact products.
    const std::vector<double> xv = x.to_doubles(), gv = gate.to_doubles(), uv = up.to_doubles();
    const std::int64_t rows = x.numel() / in;
    std::vector<double> reference;
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t o = 0; o < c.inter; ++o) {
        double g = 0.0, u = 0.0;
        for (std::int64_t i = 0; i < in; ++i) {
          const auto xi = static_cast<std::size_t>(r * in + i);
          const auto wi = static_cast<std::size_t>(o * in + i);
          g += xv[xi] * gv[wi];
          u += xv[xi] * uv[wi];
        }
        reference.push_back(g / (1.0 + std::exp(-g)) * u);
      }
    }
    const testing::Tolerance t = tolerance_for(dtype());
    EXPECT_TRUE(all_close(fused, reference, {t.atol * 4, t.rtol * 4}, label));
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, SwigluTest, STRATA_OP_CASES());

TEST(SwigluErrors, RejectsBadInputs) {
  const Tensor x = Tensor::zeros({2, 8}, DType::Float32);
  const Tensor w = Tensor::zeros({4, 8}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::swiglu(x, w, Tensor::zeros({5, 8}, DType::Float32));
      },
      {"swiglu", "gate_weight", "up_weight"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::swiglu(Tensor::zeros({2, 7}, DType::Float32), w, w);
      },
      {"swiglu", "'x'", "8"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::swiglu(x, w.to(DType::BFloat16), w); },
                                             {"swiglu", "gate_weight"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::swiglu(x, Tensor::zeros({8}, DType::Float32), Tensor::zeros({8}, DType::Float32));
      },
      {"swiglu", "gate_weight"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::swiglu(Tensor::empty({2, 8}, DType::Float32, Device::meta()), w, w);
      },
      {"swiglu", "x"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [] {
        ops::swiglu(Tensor::zeros({2, 8}, DType::Int32), Tensor::zeros({4, 8}, DType::Int32),
                    Tensor::zeros({4, 8}, DType::Int32));
      },
      {"swiglu"}));
}

}  // namespace
}  // namespace strata

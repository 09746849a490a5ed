// ops::grouped_linear: linear layers over consecutive row ranges of one x (a mixture-of-experts
// step's rows, grouped by expert). On the cpu it is linear on each group (the same bits); on a GPU
// one cuBLAS grouped product, checked against a double reference of each group's product and
// against linear on the same device within the products' rounding.

#include <gtest/gtest.h>

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

class GroupedLinearTest : public testing::OpTest {};

// Groups of 0 to 40 rows (an expert with no token, decode-sized and prefill-sized groups), input
// features a multiple of 8 or not.
TEST_P(GroupedLinearTest, EachGroupIsItsWeightsProduct) {
  struct Case {
    std::int64_t in, out;
    std::vector<std::int64_t> rows;
  };
  const Case cases[] = {
      {64, 48, {3, 0, 17, 1, 40}}, {33, 10, {2, 5}}, {128, 96, {9}}, {72, 24, {0, 0, 6, 0}}};
  std::uint64_t seed = 300;
  for (const Case& c : cases) {
    std::int64_t total = 0;
    for (const std::int64_t r : c.rows) total += r;
    const Tensor x = random_tensor({total, c.in}, dtype(), seed++, -2.0, 2.0);
    std::vector<Tensor> weights, weights_here;
    for (std::size_t g = 0; g < c.rows.size(); ++g) {
      weights.push_back(random_tensor({c.out, c.in}, dtype(), seed++, -0.2, 0.2));
      weights_here.push_back(on_device(weights.back()));
    }
    const Tensor x_here = on_device(x);
    const Tensor grouped = ops::grouped_linear(x_here, weights_here, c.rows);
    const std::string label = "in " + std::to_string(c.in) + " out " + std::to_string(c.out) +
                              " groups " + std::to_string(c.rows.size());
    ASSERT_EQ(grouped.device(), device()) << label;
    ASSERT_EQ(grouped.shape(), (Shape{total, c.out})) << label;
    // Against doubles, and against linear on each group (bit for bit on the cpu).
    const std::vector<double> xv = x.to_doubles();
    std::vector<double> reference;
    std::int64_t first = 0;
    for (std::size_t g = 0; g < c.rows.size(); ++g) {
      const std::vector<double> wv = weights[g].to_doubles();
      for (std::int64_t r = first; r < first + c.rows[g]; ++r) {
        for (std::int64_t o = 0; o < c.out; ++o) {
          double sum = 0.0;
          for (std::int64_t i = 0; i < c.in; ++i) {
            sum += xv[static_cast<std::size_t>(r * c.in + i)] *
                   wv[static_cast<std::size_t>(o * c.in + i)];
          }
          reference.push_back(sum);
        }
      }
      if (c.rows[g] > 0) {
        const Tensor alone = ops::linear(x_here.narrow(0, first, c.rows[g]), weights_here[g]);
        const Tensor mine = grouped.narrow(0, first, c.rows[g]);
        if (device().is_cpu()) {
          EXPECT_EQ(mine.contiguous().to_doubles(), alone.to_doubles()) << label << " group " << g;
        } else {
          const testing::Tolerance t = tolerance_for(dtype());
          EXPECT_TRUE(all_close(mine, alone.to_doubles(), {t.atol * 2, t.rtol * 2},
                                label + " group " + std::to_string(g)));
        }
      }
      first += c.rows[g];
    }
    const testing::Tolerance t = tolerance_for(dtype());
    EXPECT_TRUE(all_close(grouped, reference, {t.atol * 2, t.rtol * 2}, label));
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, GroupedLinearTest, STRATA_OP_CASES());

TEST(GroupedLinearErrors, RejectsBadInputs) {
  const Tensor x = Tensor::zeros({5, 8}, DType::Float32);
  const Tensor w = Tensor::zeros({4, 8}, DType::Float32);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::grouped_linear(x, {w, w}, {2, 2});
      },
      {"grouped_linear", "add up to 4", "5 rows"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::grouped_linear(x, {w}, {2, 3});
      },
      {"grouped_linear", "1 weights for 2 row counts"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::grouped_linear(x, {w, Tensor::zeros({3, 8}, DType::Float32)}, {2, 3});
      },
      {"grouped_linear", "weights[1]", "[4, 8]"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::grouped_linear(x, {w, w}, {6, -1});
      },
      {"grouped_linear", "rows[1] = -1"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { ops::grouped_linear(x, {w.to(DType::BFloat16)}, {5}); },
                                     {"grouped_linear", "weights[0]"}));
}

}  // namespace
}  // namespace strata

// rotary_embedding (transformers' rotate_half convention) against a naive double reference.

#include <vector>

#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

// out = x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x[d/2:], x[:d/2]); cos and sin
// are [seq, dim] or [batch or 1, seq, dim].
std::vector<double> reference_rotary(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const std::int64_t batch = x.size(0), heads = x.size(1), seq = x.size(2), dim = x.size(3);
  const std::int64_t half = dim / 2;
  const std::vector<double> xv = x.to_doubles();
  // cos/sin as [batch or 1, seq, dim] rows.
  const Tensor c3 = cos.dim() == 2 ? cos.unsqueeze(0) : cos;
  const Tensor s3 = sin.dim() == 2 ? sin.unsqueeze(0) : sin;
  const std::vector<double> cv = c3.to_doubles(), sv = s3.to_doubles();
  std::vector<double> out(xv.size());
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t tb = c3.size(0) == 1 ? 0 : b;
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t s = 0; s < seq; ++s) {
        const double* row = xv.data() + ((b * heads + h) * seq + s) * dim;
        const double* c = cv.data() + (tb * seq + s) * dim;
        const double* sn = sv.data() + (tb * seq + s) * dim;
        double* o = out.data() + ((b * heads + h) * seq + s) * dim;
        for (std::int64_t i = 0; i < dim; ++i) {
          const double rotated = i < half ? -row[i + half] : row[i - half];
          o[i] = row[i] * c[i] + rotated * sn[i];
        }
      }
    }
  }
  return out;
}

class RotaryTest : public OpTest {
 protected:
  Tensor rand(const Shape& shape, std::uint64_t seed) {
    return random_tensor(shape, dtype(), seed);
  }

  // x, cos and sin are on the CPU; `dx` (default: x moved) holds x's values on the device.
  void check(const Tensor& x, const Tensor& cos, const Tensor& sin, const std::string& what,
             const Tensor& dx = Tensor()) {
    check_with(x, cos, sin, dx.defined() ? dx : on_device(x), on_device(cos), on_device(sin), what);
  }
  // The op on device tensors dx, dcos, dsin holding the values of x, cos and sin.
  void check_with(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& dx,
                  const Tensor& dcos, const Tensor& dsin, const std::string& what) {
    const Tensor y = ops::rotary_embedding(dx, dcos, dsin);
    EXPECT_EQ(y.device(), device()) << what;
    EXPECT_EQ(y.shape(), x.shape()) << what;
    EXPECT_EQ(y.dtype(), x.dtype()) << what;
    EXPECT_TRUE(y.is_contiguous()) << what;
    // Computed in float32 and rounded once: the per-dtype tolerance.
    EXPECT_TRUE(all_close(y, reference_rotary(x, cos, sin), tolerance_for(x.dtype()), what));
  }
};

TEST_P(RotaryTest, TableShapes) {
  const Tensor x = rand({2, 3, 5, 8}, 1);
  check(x, rand({5, 8}, 2), rand({5, 8}, 3), "[seq, dim]");
  check(x, rand({1, 5, 8}, 4), rand({1, 5, 8}, 5), "[1, seq, dim]");
  check(x, rand({2, 5, 8}, 6), rand({2, 5, 8}, 7), "[batch, seq, dim]");
}

TEST_P(RotaryTest, UnsqueezedTablesBroadcastOverHeads) {
  const Tensor x = rand({2, 3, 5, 8}, 10);
  const Tensor cos = rand({2, 5, 8}, 11), sin = rand({2, 5, 8}, 12);
  check_with(x, cos, sin, on_device(x), on_device(cos).unsqueeze(1), on_device(sin).unsqueeze(1),
             "[batch, 1, seq, dim]");
}

TEST_P(RotaryTest, OddSizes) {
  check(rand({1, 1, 1, 2}, 20), rand({1, 2}, 21), rand({1, 2}, 22), "head_dim 2");
  check(rand({1, 17, 3, 34}, 23), rand({3, 34}, 24), rand({3, 34}, 25), "17 heads");
  check(rand({1, 1, 2, 4098}, 26), rand({2, 4098}, 27), rand({2, 4098}, 28), "head_dim 4098");
}

TEST_P(RotaryTest, StridedInputs) {
  // transformers' q: [batch, seq, heads, dim] transposed to [batch, heads, seq, dim].
  const Tensor q = rand({2, 5, 3, 8}, 30);
  check(q.transpose(1, 2), rand({5, 8}, 31), rand({5, 8}, 32), "transposed q",
        on_device(q).transpose(1, 2));
  const Tensor x = rand({2, 3, 5, 8}, 33), cos = rand({5, 8}, 34), sin = rand({5, 8}, 35);
  const auto strided = [&](const Tensor& t) { return make_noncontiguous(on_device(t)); };
  check_with(x, cos, sin, strided(x), strided(cos), strided(sin), "noncontiguous");
}

TEST_P(RotaryTest, Float32Tables) {
  check(rand({2, 3, 5, 8}, 40), random_tensor({5, 8}, DType::Float32, 41),
        random_tensor({5, 8}, DType::Float32, 42), "float32 cos/sin");
}

INSTANTIATE_TEST_SUITE_P(Devices, RotaryTest, STRATA_OP_CASES());

// Front-end checks, the same on every device.
class RotaryErrors : public ::testing::TestWithParam<DType> {
 protected:
  Tensor rand(const Shape& shape, std::uint64_t seed) {
    return random_tensor(shape, GetParam(), seed);
  }
};

TEST_P(RotaryErrors, RejectsBadInputs) {
  const DType dtype = GetParam();
  const Tensor x = rand({1, 2, 5, 8}, 50);
  const Tensor table = rand({5, 8}, 51);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(rand({1, 2, 5, 7}, 52), rand({5, 7}, 53), rand({5, 7}, 54));
      },
      {"rotary_embedding", "even"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(x, rand({4, 8}, 55), table);
      },
      {"rotary_embedding", "cos"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(x, table, rand({3, 5, 8}, 56));
      },
      {"rotary_embedding", "sin"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(rand({2, 5, 8}, 57), table, table);
      },
      {"rotary_embedding", "'x'", "4 dimensions"}));
  const DType other = dtype == DType::Float16 ? DType::BFloat16 : DType::Float16;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(x, table, random_tensor({5, 8}, other, 58));
      },
      {"rotary_embedding", "sin", "dtype"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::rotary_embedding(x, random_tensor({5, 8}, other, 59),
                              random_tensor({5, 8}, other, 60));
      },
      {"rotary_embedding", "cos", "dtype"}));
  const Tensor meta = Tensor::empty({1, 2, 5, 8}, dtype, Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { ops::rotary_embedding(meta, table, table); },
                                             {"rotary_embedding", "meta"}));
}

INSTANTIATE_TEST_SUITE_P(FloatDTypes, RotaryErrors, ::testing::ValuesIn(kFloatDTypes),
                         [](const auto& info) { return dtype_test_name(info.param); });

}  // namespace
}  // namespace strata::testing

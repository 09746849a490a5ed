#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

// cast is Tensor::to(dtype) (the conversions are tested in core against PyTorch, and bit for bit
// on the GPU in tests/cuda); this checks the front end on each device, from float32.
class CastTest : public testing::OpTest {};

TEST_P(CastTest, ConvertsLikeTensorTo) {
  const std::vector<double> values = {1.0, -2.5, 0.1, 3.14159, 65504.0, 1e-3};
  const Tensor x = Tensor::from_doubles(values, {2, 3}, DType::Float32);
  for (DType dtype : {DType::BFloat16, DType::Float16, DType::Int32, DType::Float64}) {
    const Tensor y = ops::cast(on_device(x), dtype);
    EXPECT_EQ(y.device(), device());
    EXPECT_EQ(y.dtype(), dtype);
    EXPECT_EQ(y.shape(), x.shape());
    EXPECT_EQ(y.to_doubles(), x.to(dtype).to_doubles()) << dtype_name(dtype);
  }
  // Rounding to bfloat16 matches constructing the values in bfloat16 directly.
  EXPECT_EQ(ops::cast(on_device(x), DType::BFloat16).to_doubles(),
            Tensor::from_doubles(values, {2, 3}, DType::BFloat16).to_doubles());
  const Tensor strided = testing::make_noncontiguous(on_device(x));
  EXPECT_EQ(ops::cast(strided, DType::Float16).to_doubles(),
            Tensor::from_doubles(values, {2, 3}, DType::Float16).to_doubles());
}

INSTANTIATE_TEST_SUITE_P(Devices, CastTest, STRATA_OP_CASES({DType::Float32}));

TEST(Cast, RejectsUndefinedInput) {
  EXPECT_TRUE(testing::throws_naming<InvalidArgument>([] { ops::cast(Tensor(), DType::Float32); },
                                                      {"cast"}));
}

}  // namespace
}  // namespace strata

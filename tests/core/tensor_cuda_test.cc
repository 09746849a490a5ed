// Tensor copies that touch a GPU: every layout and dtype combination between cpu and cuda:0.
// Skipped without a CUDA backend (run on the device machine).

#include <gtest/gtest.h>

#include <numeric>

#include "strata/core/backend.h"
#include "strata/core/tensor.h"

namespace strata {
namespace {

class TensorCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (find_backend(DeviceType::CUDA) == nullptr) GTEST_SKIP() << "no CUDA backend";
  }
  static Tensor iota(const Shape& shape) {
    std::vector<double> v(static_cast<std::size_t>(shape_numel(shape)));
    std::iota(v.begin(), v.end(), 0.0);
    return Tensor::from_doubles(v, shape, DType::Float32);
  }
};

TEST_F(TensorCuda, StridedGpuSourceToCpu) {
  const Tensor host = iota({3, 5});
  const Tensor gpu = host.to(Device::cuda(0));
  const Tensor back = gpu.transpose(0, 1).to(Device::cpu());
  EXPECT_EQ(back.to_doubles(), host.transpose(0, 1).contiguous().to_doubles());
  // Strided and converting at once.
  const Tensor narrowed = gpu.narrow(1, 1, 3).to(Device::cpu(), DType::BFloat16);
  EXPECT_EQ(narrowed.to_doubles(), host.narrow(1, 1, 3).contiguous().to_doubles());
  // Broadcast source (stride 0) on the GPU.
  const Tensor row = iota({5}).to(Device::cuda(0));
  const Tensor dst = Tensor::zeros({3, 5});
  dst.copy_(row);
  EXPECT_EQ(dst.to_doubles(), iota({5}).expand({3, 5}).contiguous().to_doubles());
}

TEST_F(TensorCuda, StridedGpuDestinationFromCpu) {
  const Tensor gpu = Tensor::zeros({5, 3}, DType::Float32, Device::cuda(0));
  gpu.transpose(0, 1).copy_(iota({3, 5}));
  EXPECT_EQ(gpu.to(Device::cpu()).to_doubles(),
            iota({3, 5}).transpose(0, 1).contiguous().to_doubles());
  const Tensor half = Tensor::zeros({4, 6}, DType::Float16, Device::cuda(0));
  half.narrow(1, 2, 3).copy_(iota({4, 3}));
  const Tensor expected = Tensor::zeros({4, 6});
  expected.narrow(1, 2, 3).copy_(iota({4, 3}));
  EXPECT_EQ(half.to(Device::cpu()).to_doubles(), expected.to_doubles());
}

TEST_F(TensorCuda, RoundTripKeepsEveryDtype) {
  for (DType dtype :
       {DType::Float32, DType::BFloat16, DType::Float16, DType::Int64, DType::UInt8}) {
    const Tensor host = iota({2, 7}).to(dtype);
    const Tensor back = host.to(Device::cuda(0)).to(Device::cpu());
    EXPECT_EQ(back.dtype(), dtype);
    EXPECT_EQ(back.to_doubles(), host.to_doubles()) << dtype;
  }
}

}  // namespace
}  // namespace strata

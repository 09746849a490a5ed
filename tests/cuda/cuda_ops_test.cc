// CUDA-only op checks. Every op runs on CUDA in tests/ops (the same device-parameterised tests
// as on the CPU, against double references); what stays here is the byte-for-byte comparison of
// GPU casts with the CPU path for every pair of dtypes.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "strata/cuda/device.h"
#include "strata/ops.h"

namespace strata {
namespace {

Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

// Casts between every pair of dtypes on the GPU give the bytes of the CPU conversion (which is
// proven bit-exact against PyTorch), including NaN, infinities, subnormals and overflow.
TEST(CudaCast, EveryPairBitExactWithTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  std::mt19937 rng(7);
  std::vector<float> values = {0.0f,   -0.0f,   INFINITY, -INFINITY, NAN,      -NAN,   448.0f,
                               464.0f, 480.0f,  57344.0f, 61440.0f,  65536.0f, 1e-45f, 1.5e-9f,
                               2e-3f,  -127.5f, 255.5f,   3e9f,      -3e9f,    1e20f};
  for (std::uint32_t bits = 0; bits < 4096; ++bits) {
    const std::uint32_t random = rng();
    float f;
    std::memcpy(&f, &random, 4);
    values.push_back(f);
    const float mantissa = static_cast<float>(rng() % 2000) - 1000.0f;
    values.push_back(std::ldexp(mantissa, -static_cast<int>(bits % 40)));
  }
  Tensor src = Tensor::empty({static_cast<std::int64_t>(values.size())}, DType::Float32);
  std::memcpy(src.data_ptr(), values.data(), values.size() * 4);
  for (DType from : kAllDTypes) {
    const Tensor host_from = src.to(from);
    const Tensor gpu_from = gpu(host_from);
    for (DType to : kAllDTypes) {
      const Tensor expected = host_from.to(to);
      const Tensor actual = gpu_from.to(to).to(Device::cpu());
      ASSERT_EQ(actual.dtype(), to);
      EXPECT_EQ(std::memcmp(actual.data_ptr(), expected.data_ptr(), expected.nbytes()), 0)
          << from << " -> " << to;
    }
  }
}

}  // namespace
}  // namespace strata

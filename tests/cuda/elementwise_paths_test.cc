// The CUDA elementwise kernels pick a path per call: dense operands move 16-byte packs,
// same-dtype copies with a contiguous innermost dimension are rewritten over packs, other views
// use 32-bit or 64-bit strided indexing, and rows are normalised a pack at a time when aligned.
// Each path against the CPU op (the independent implementation): copies and add/mul are the same
// float arithmetic rounded once, so they must match byte for byte; RMSNorm and rotary within one
// rounding of the dtype.

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "strata/core/shape.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"

namespace strata {
namespace {

Tensor random_tensor(const Shape& shape, DType dtype, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> values(static_cast<std::size_t>(shape_numel(shape)));
  for (double& v : values) v = normal(rng);
  return Tensor::from_doubles(values, shape, dtype);
}

void expect_same_bytes(const Tensor& gpu_result, const Tensor& cpu_result, const char* what) {
  const Tensor actual = gpu_result.to(Device::cpu()).contiguous();
  const Tensor expected = cpu_result.contiguous();
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  EXPECT_EQ(std::memcmp(actual.data_ptr(), expected.data_ptr(), expected.nbytes()), 0) << what;
}

void expect_close(const Tensor& gpu_result, const Tensor& cpu_result, double tolerance,
                  const char* what) {
  const Tensor actual = gpu_result.to(Device::cpu()).to(DType::Float32).contiguous();
  const Tensor expected = cpu_result.to(DType::Float32).contiguous();
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const auto* a = static_cast<const float*>(actual.data_ptr());
  const auto* e = static_cast<const float*>(expected.data_ptr());
  for (std::int64_t i = 0; i < expected.numel(); ++i) {
    ASSERT_NEAR(a[i], e[i], tolerance * (1.0 + std::abs(e[i]))) << what << " at " << i;
  }
}

class CudaElementwisePaths : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

TEST_P(CudaElementwisePaths, StridedCopiesMatchTheCpuOnEveryPath) {
  const DType dtype = GetParam();
  const Device gpu = Device::cuda(0);
  // [B, H, S, D] -> [B, S, H, D]: head dims that are and are not whole 16-byte packs.
  for (std::int64_t head_dim : {128, 64, 12, 7}) {
    const Tensor x = random_tensor({2, 5, 9, head_dim}, dtype, 1);
    expect_same_bytes(x.to(gpu).transpose(1, 2).contiguous(), x.transpose(1, 2).contiguous(),
                      "transpose");
    // A view starting one element in: not 16-byte aligned.
    const Tensor shifted = x.narrow(3, 1, head_dim - 1);
    expect_same_bytes(shifted.to(gpu).contiguous(), shifted.contiguous(), "shifted");
    expect_same_bytes(x.to(gpu).narrow(3, 1, head_dim - 1).contiguous(), shifted.contiguous(),
                      "narrowed on the GPU");
  }
  // Dense: a plain copy and a conversion, with lengths that leave a tail after the packs.
  const Tensor dense = random_tensor({8 * 1000 + 3}, dtype, 2);
  Tensor out = Tensor::empty(dense.shape(), dtype, gpu);
  out.copy_(dense.to(gpu));
  expect_same_bytes(out, dense, "dense copy");
  expect_same_bytes(dense.to(gpu).to(DType::Float32), dense.to(DType::Float32), "dense convert");
  // Broadcast source (stride 0) and a permutation with no contiguous innermost dimension.
  const Tensor row = random_tensor({1, 33}, dtype, 3);
  expect_same_bytes(row.to(gpu).expand({17, 33}).contiguous(), row.expand({17, 33}).contiguous(),
                    "broadcast");
  const Tensor cube = random_tensor({6, 7, 8}, dtype, 4);
  expect_same_bytes(cube.to(gpu).permute({2, 0, 1}).contiguous(),
                    cube.permute({2, 0, 1}).contiguous(), "permute");
}

TEST_P(CudaElementwisePaths, AddAndMulMatchTheCpuOnEveryPath) {
  const DType dtype = GetParam();
  const Device gpu = Device::cuda(0);
  for (std::int64_t n : {8 * 512, 8 * 512 + 5, 3}) {
    const Tensor a = random_tensor({n}, dtype, 5), b = random_tensor({n}, dtype, 6);
    expect_same_bytes(ops::add(a.to(gpu), b.to(gpu)), ops::add(a, b), "dense add");
    expect_same_bytes(ops::mul(a.to(gpu), b.to(gpu)), ops::mul(a, b), "dense mul");
    if (n > 1) {  // misaligned operands take the strided path
      const Tensor a1 = a.narrow(0, 1, n - 1), b1 = b.narrow(0, 0, n - 1);
      expect_same_bytes(ops::add(a.to(gpu).narrow(0, 1, n - 1), b.to(gpu).narrow(0, 0, n - 1)),
                        ops::add(a1, b1), "misaligned add");
    }
  }
  // Broadcasting: a row against a matrix, and a transposed operand.
  const Tensor m = random_tensor({37, 64}, dtype, 7), r = random_tensor({64}, dtype, 8);
  expect_same_bytes(ops::add(m.to(gpu), r.to(gpu)), ops::add(m, r), "broadcast add");
  const Tensor sq = random_tensor({48, 48}, dtype, 9), wide = random_tensor({48, 64}, dtype, 10);
  const Tensor left = wide.narrow(1, 0, 48);  // rows of 48 out of 64: not dense
  expect_same_bytes(ops::mul(sq.to(gpu).transpose(0, 1), wide.to(gpu).narrow(1, 0, 48)),
                    ops::mul(sq.transpose(0, 1), left), "transposed mul");
}

TEST_P(CudaElementwisePaths, SiluMatchesTheCpuPackedAndNot) {
  const DType dtype = GetParam();
  const Tensor x = random_tensor({8 * 300 + 7}, dtype, 10);
  expect_close(ops::silu(x.to(Device::cuda(0))), ops::silu(x), 1e-2, "silu");
  const Tensor shifted = x.narrow(0, 1, x.size(0) - 1);
  expect_close(ops::silu(x.to(Device::cuda(0)).narrow(0, 1, x.size(0) - 1)), ops::silu(shifted),
               1e-2, "silu shifted");
}

TEST_P(CudaElementwisePaths, RmsNormMatchesTheCpuForPackedAndOddRows) {
  const DType dtype = GetParam();
  const Device gpu = Device::cuda(0);
  for (std::int64_t dim : {4096, 64, 36, 13}) {
    for (std::int64_t rows : {1, 5}) {
      const Tensor x = random_tensor({rows, dim}, dtype, 11);
      const Tensor w = random_tensor({dim}, dtype, 12);
      expect_close(ops::rms_norm(x.to(gpu), w.to(gpu), 1e-6), ops::rms_norm(x, w, 1e-6), 1e-2,
                   "rms_norm");
    }
  }
}

TEST_P(CudaElementwisePaths, RotaryMatchesTheCpuOnStridedHeads) {
  const DType dtype = GetParam();
  const Device gpu = Device::cuda(0);
  // q as the projections give it: [B, S, H, D] viewed as [B, H, S, D]. Head dims whose halves are
  // and are not whole 16-byte packs; tables in x's dtype and in float32 (the scalar kernel).
  for (std::int64_t head_dim : {64, 24, 6}) {
    for (DType table_dtype : {dtype, DType::Float32}) {
      const Tensor q = random_tensor({2, 7, 4, head_dim}, dtype, 13).transpose(1, 2);
      const Tensor cos = random_tensor({2, 1, 7, head_dim}, table_dtype, 14);
      const Tensor sin = random_tensor({2, 1, 7, head_dim}, table_dtype, 15);
      expect_close(ops::rotary_embedding(q.to(gpu), cos.to(gpu), sin.to(gpu)),
                   ops::rotary_embedding(q, cos, sin), 1e-2, "rotary");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaElementwisePaths,
                         ::testing::Values(DType::BFloat16, DType::Float16, DType::Float32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace strata

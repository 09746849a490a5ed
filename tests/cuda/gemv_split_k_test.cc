// The split-K residual GEMV (src/cuda/matvec_splitk.cu) against the CPU ops it replaces (linear
// in float32, rounded, then the residual add rounded), deterministic from launch to launch (the
// segments are summed in order whichever warp finishes last), its tickets left at zero, and its
// tail norm against the rms_norm kernel over its own output (the same bits).

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/matvec_splitk.h"
#include "kernel_testing.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using cuda::kernels::GemvEpilogue;
using cuda::kernels::GemvSplitK;
using cuda::kernels::Type;
using testing::bits_equal;
using testing::random_tensor;

cudaStream_t stream() { return testing::kernel_stream(); }
Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

class GemvSplitKTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

TEST_F(GemvSplitKTest, MatchesTheCpuOpsAndRepeatsItsBits) {
  const DType t = DType::BFloat16;
  const float eps = 1e-5f;
  for (const std::int64_t k : {264, 2056, 11008}) {  // under one segment pass, a remainder, 7B
    for (const std::int64_t n : {72, 4096}) {
      const Tensor w = gpu(random_tensor({n, k}, t, 61, -0.1, 0.1));
      const Tensor x = gpu(random_tensor({1, k}, t, 62));
      const Tensor h0 = gpu(random_tensor({1, n}, t, 63, -2.0, 2.0));
      const Tensor bias = gpu(random_tensor({n}, t, 64));
      const Tensor gamma = gpu(random_tensor({n}, t, 65, 0.5, 1.5));
      // The module path: linear in float32 rounded to bf16, then the add rounded.
      const Tensor y = ops::linear(x.to(Device::cpu()).to(DType::Float32),
                                   w.to(Device::cpu()).to(DType::Float32),
                                   bias.to(Device::cpu()).to(DType::Float32))
                           .to(t);
      const Tensor expected = ops::add(h0.to(Device::cpu()), y);
      double scale = 1.0;
      for (double v : expected.to_doubles()) scale = std::max(scale, std::abs(v));
      const Tensor partials = Tensor::empty({16 * n}, DType::Float32, Device::cuda(0));
      const Tensor tickets = Tensor::zeros({n}, DType::Int32, Device::cuda(0));
      const Tensor block_ticket = Tensor::zeros({1}, DType::Int32, Device::cuda(0));
      for (const int split : {2, 3, 4, 8}) {
        for (const int rows : {1, 2}) {
          Tensor first;
          for (int launch = 0; launch < 2; ++launch) {
            const Tensor h = h0.clone();
            const Tensor normed = Tensor::zeros({1, n}, t, Device::cuda(0));
            GemvSplitK s;
            s.g.type = Type::BFloat16;
            s.g.batch = 1;
            s.g.k = k;
            s.g.x = x.data_ptr();
            s.g.ldx = k;
            s.g.groups[0] = {w.data_ptr(), bias.data_ptr(), h.data_ptr(), n, n};
            s.g.epilogue = GemvEpilogue::AddResidual;
            s.g.residual = h.data_ptr();
            s.g.rows = rows;
            s.g.pdl = launch == 1;
            s.g.tail_norm_weight = gamma.data_ptr();
            s.g.tail_norm_out = normed.data_ptr();
            s.g.norm_eps = eps;
            s.g.ticket = static_cast<unsigned*>(block_ticket.data_ptr());
            s.split = split;
            s.partials = partials.data<float>();
            s.tickets = static_cast<unsigned*>(tickets.data_ptr());
            ASSERT_TRUE(cuda::kernels::gemv_split_k_supported(s));
            ASSERT_EQ(cuda::kernels::gemv_split_k(s, stream()), cudaSuccess);
            const std::vector<double> got = h.to(Device::cpu()).to_doubles();
            const std::vector<double> want = expected.to_doubles();
            double worst = 0.0;
            for (std::size_t i = 0; i < got.size(); ++i) {
              worst = std::max(worst, std::abs(got[i] - want[i]));
            }
            EXPECT_LE(worst, 1.6e-2 * scale)
                << "k " << k << " n " << n << " split " << split << " rows " << rows;
            if (launch == 0) {
              first = h;
            } else {
              EXPECT_TRUE(bits_equal(h, first)) << "k " << k << " split " << split;
            }
            const Tensor normed_ref = Tensor::empty({1, n}, t, Device::cuda(0));
            ASSERT_EQ(cuda::kernels::rms_norm(h.data_ptr(), gamma.data_ptr(), normed_ref.data_ptr(),
                                              Type::BFloat16, 1, n, eps, stream()),
                      cudaSuccess);
            EXPECT_TRUE(bits_equal(normed, normed_ref)) << "k " << k << " split " << split;
            const std::vector<std::int32_t> left =
                tickets.to(Device::cpu()).to_vector<std::int32_t>();
            EXPECT_TRUE(
                std::all_of(left.begin(), left.end(), [](std::int32_t v) { return v == 0; }));
            EXPECT_EQ(block_ticket.to(Device::cpu()).to_vector<std::int32_t>()[0], 0);
          }
        }
      }
    }
  }
}

TEST(GemvSplitKSupport, OnlyTheBuiltKernels) {
  const Tensor scratch = Tensor::zeros({64}, DType::Float32);  // addresses only, never launched
  GemvSplitK s;
  s.g.type = Type::BFloat16;
  s.g.batch = 1;
  s.g.k = 64;
  s.g.groups[0].n = 8;
  s.g.groups[0].ldo = 8;
  s.g.epilogue = GemvEpilogue::AddResidual;
  s.split = 4;
  s.partials = scratch.data<float>();
  s.tickets = static_cast<unsigned*>(scratch.data_ptr());
  EXPECT_TRUE(cuda::kernels::gemv_split_k_supported(s));
  GemvSplitK other = s;
  other.g.batch = 2;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
  other = s;
  other.g.type = Type::Float16;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
  other = s;
  other.g.epilogue = GemvEpilogue::Store;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
  other = s;
  other.split = 1;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
  other = s;
  other.g.rows = 4;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
  other = s;
  other.tickets = nullptr;
  EXPECT_FALSE(cuda::kernels::gemv_split_k_supported(other));
}

}  // namespace
}  // namespace strata

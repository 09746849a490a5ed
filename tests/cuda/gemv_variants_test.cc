// The decode GEMV's variants (src/cuda/matvec.cuh) against its plain form: the RMSNorm fused
// into the prologue against the rms_norm kernel followed by the GEMV (bit for bit, both on the
// GPU, and within one rounding of the CPU ops::rms_norm + linear), programmatic dependent launch
// against ordinary launches of a producer/consumer chain, and the tuning-sweep shapes against
// the default shape (the same per-lane summation order, so the same bits), and the residual
// GEMV's last-block RMSNorm against the rms_norm kernel after it.

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/kernels.h"
#include "kernel_testing.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using cuda::kernels::Gemv;
using cuda::kernels::GemvEpilogue;
using cuda::kernels::Type;
using testing::bits_equal;
using testing::random_tensor;

cudaStream_t stream() { return testing::kernel_stream(); }
Type type_of(DType d) { return testing::kernel_type(d); }
Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

class GemvVariantTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

// Largest |a - b| over the elements, in float64 on the cpu.
double max_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu()).to_doubles();
  const std::vector<double> y = b.to(Device::cpu()).to_doubles();
  EXPECT_EQ(x.size(), y.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
    worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

Gemv base(DType t, std::int64_t batch, std::int64_t k, const Tensor& x) {
  Gemv g;
  g.type = type_of(t);
  g.batch = batch;
  g.k = k;
  g.x = x.data_ptr();
  g.ldx = k;
  return g;
}

const std::int64_t kKs[] = {264, 2056, 4096};  // shorter than one pass, a remainder, 7B's hidden

TEST_P(GemvVariantTest, FusedNormEqualsRmsNormKernelThenGemv) {
  const DType t = GetParam();
  const float eps = 1e-5f;
  int tested = 0;
  for (const std::int64_t k : kKs) {
    const std::int64_t n = 70;
    for (std::int64_t batch = 1; batch <= 8; ++batch) {
      if (!cuda::kernels::gemv_fused_norm_fits(type_of(t), batch, k)) continue;
      ++tested;
      const Tensor x = gpu(random_tensor({batch, k}, t, 100 + batch, -3.0, 3.0));
      const Tensor gamma = gpu(random_tensor({k}, t, 7, 0.5, 1.5));
      const Tensor gate = gpu(random_tensor({n, k}, t, 8));
      const Tensor up = gpu(random_tensor({n, k}, t, 9));
      const Tensor normed = Tensor::empty({batch, k}, t, Device::cuda(0));
      ASSERT_EQ(cuda::kernels::rms_norm(x.data_ptr(), gamma.data_ptr(), normed.data_ptr(),
                                        type_of(t), batch, k, eps, stream()),
                cudaSuccess);
      for (const bool gated : {false, true}) {
        const Tensor expected = Tensor::empty({batch, n}, t, Device::cuda(0));
        const Tensor fused = Tensor::empty({batch, n}, t, Device::cuda(0));
        Gemv g = base(t, batch, k, normed);
        g.groups[0] = {gate.data_ptr(), nullptr, expected.data_ptr(), n, n};
        if (gated) {
          g.group_count = 2;
          g.groups[1] = {up.data_ptr(), nullptr, nullptr, n, n};
          g.epilogue = GemvEpilogue::SiluMul;
        }
        ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
        g.x = x.data_ptr();
        g.norm_weight = gamma.data_ptr();
        g.norm_eps = eps;
        g.groups[0].out = fused.data_ptr();
        ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
        EXPECT_TRUE(bits_equal(fused, expected))
            << "k " << k << " batch " << batch << (gated ? " gated" : "") << ": max |diff| "
            << max_diff(fused, expected);
      }
      // And the independent reference: the CPU's rms_norm then linear, within one rounding.
      const Tensor fused = Tensor::empty({batch, n}, t, Device::cuda(0));
      Gemv g = base(t, batch, k, x);
      g.groups[0] = {gate.data_ptr(), nullptr, fused.data_ptr(), n, n};
      g.norm_weight = gamma.data_ptr();
      g.norm_eps = eps;
      ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
      const Tensor cpu_normed = ops::rms_norm(x.to(Device::cpu()), gamma.to(Device::cpu()), eps);
      const Tensor reference = ops::linear(cpu_normed.to(DType::Float32),
                                           gate.to(Device::cpu()).to(DType::Float32), std::nullopt);
      const double tol = t == DType::Float32 ? 1e-4 : t == DType::Float16 ? 4e-3 : 3e-2;
      double scale = 1.0;
      for (double v : reference.to_doubles()) scale = std::max(scale, std::abs(v));
      EXPECT_LE(max_diff(fused.to(DType::Float32), reference), tol * scale)
          << "k " << k << " batch " << batch;
    }
  }
  // float32 keeps the separate norm kernel (no fused instantiation); bf16/f16 fit up to 5 rows of
  // 4096 (47 KB) and every batch of the shorter rows.
  EXPECT_EQ(tested, t == DType::Float32 ? 0 : 8 + 8 + 5);
}

TEST_P(GemvVariantTest, FusedNormRefusesRowsBeyondItsSharedMemory) {
  const DType t = GetParam();
  // 6 rows of 4096 in bf16 are 48 KB: with the prologue's static scratch, one launch too many.
  EXPECT_FALSE(cuda::kernels::gemv_fused_norm_fits(type_of(t), 6, 4096));
  const std::int64_t k = 8192;  // 8 rows of 8192 in any float type pass 48 KB
  ASSERT_FALSE(cuda::kernels::gemv_fused_norm_fits(type_of(t), 8, k));
  const Tensor x = Tensor::zeros({8, k}, t, Device::cuda(0));
  Gemv g = base(t, 8, k, x);
  g.groups[0] = {x.data_ptr(), nullptr, nullptr, 1, 1};
  g.norm_weight = x.data_ptr();
  EXPECT_EQ(cuda::kernels::gemv(g, stream()), cudaErrorInvalidValue);
}

// A chain where each GEMV reads what the previous one wrote (a residual stream: h += W h, then
// a fused-norm product of h), launched with and without programmatic dependent launch: a
// consumer that read its input before the producer finished would change the result.
TEST_P(GemvVariantTest, ProgrammaticLaunchGivesTheOrdinaryLaunchesBits) {
  const DType t = GetParam();
  const std::int64_t k = 1024, layers = 6;
  for (const std::int64_t batch : {1, 4}) {
    std::vector<Tensor> w;
    for (std::int64_t i = 0; i < layers; ++i) {
      w.push_back(gpu(random_tensor({k, k}, t, 200 + i, -0.05, 0.05)));
    }
    const Tensor gamma = gpu(random_tensor({k}, t, 9, 0.5, 1.5));
    const Tensor start = gpu(random_tensor({batch, k}, t, 11));
    Tensor results[2];
    for (const bool pdl : {false, true}) {
      const Tensor h = start.clone();
      const Tensor y = Tensor::empty({batch, k}, t, Device::cuda(0));
      for (std::int64_t i = 0; i < layers; ++i) {
        // h += W y: y is the previous normed product, or on even steps a copy of h.
        Gemv res = base(t, batch, k, y);
        res.groups[0] = {w[static_cast<std::size_t>(i)].data_ptr(), nullptr, h.data_ptr(), k, k};
        res.epilogue = GemvEpilogue::AddResidual;
        res.residual = h.data_ptr();
        res.pdl = pdl;
        if (i % 2 == 0) {
          ASSERT_EQ(cudaMemcpyAsync(y.data_ptr(), h.data_ptr(), h.nbytes(),
                                    cudaMemcpyDeviceToDevice, stream()),
                    cudaSuccess);
        }
        ASSERT_EQ(cuda::kernels::gemv(res, stream()), cudaSuccess);
        Gemv normed = base(t, batch, k, h);
        normed.groups[0] = {w[static_cast<std::size_t>(layers - 1 - i)].data_ptr(), nullptr,
                            y.data_ptr(), k, k};
        normed.norm_weight = gamma.data_ptr();
        normed.pdl = pdl;
        if (cuda::kernels::gemv_fused_norm_fits(type_of(t), batch, k)) {
          ASSERT_EQ(cuda::kernels::gemv(normed, stream()), cudaSuccess);
        }
      }
      results[pdl ? 1 : 0] = h.to(Device::cpu());
    }
    EXPECT_TRUE(bits_equal(results[1], results[0]))
        << "batch " << batch << ": max |diff| " << max_diff(results[1], results[0]);
  }
}

TEST_P(GemvVariantTest, SweepShapesGiveTheDefaultShapesBits) {
  const DType t = GetParam();
  const std::int64_t n = 99;
  int built = 0;
  for (const std::int64_t k : kKs) {
    for (std::int64_t batch = 1; batch <= 8; ++batch) {
      const Tensor x = gpu(random_tensor({batch, k}, t, 300 + batch));
      const Tensor w = gpu(random_tensor({2 * n, k}, t, 301));
      const Tensor expected = Tensor::empty({batch, n}, t, Device::cuda(0));
      Gemv g = base(t, batch, k, x);
      g.group_count = 2;
      g.groups[0] = {w.data_ptr(), nullptr, expected.data_ptr(), n, n};
      g.groups[1] = {static_cast<const char*>(w.data_ptr()) + n * k * dtype_size(t), nullptr,
                     nullptr, n, n};
      g.epilogue = GemvEpilogue::SiluMul;
      ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
      for (const int rows : {1, 2, 4, 8}) {
        for (const int unroll : {2, 4, 8, 16}) {
          if (!cuda::kernels::gemv_shape_built(type_of(t), batch, rows, unroll)) continue;
          ++built;
          for (const bool gated : {false, true}) {
            Gemv s = g;
            s.rows = rows;
            s.unroll = unroll;
            if (!gated) {
              s.group_count = 1;
              s.epilogue = GemvEpilogue::Store;
            }
            const Tensor out = Tensor::empty({batch, n}, t, Device::cuda(0));
            const Tensor plain = Tensor::empty({batch, n}, t, Device::cuda(0));
            s.groups[0].out = out.data_ptr();
            ASSERT_EQ(cuda::kernels::gemv(s, stream()), cudaSuccess);
            Gemv d = s;
            d.rows = d.unroll = 0;
            d.groups[0].out = plain.data_ptr();
            ASSERT_EQ(cuda::kernels::gemv(d, stream()), cudaSuccess);
            EXPECT_TRUE(bits_equal(out, plain))
                << "k " << k << " batch " << batch << " rows " << rows << " unroll " << unroll;
          }
        }
      }
    }
  }
  if (t == DType::BFloat16) {
    EXPECT_GT(built, 0);
  } else {
    EXPECT_EQ(built, 0);  // the sweep builds bf16 only
  }
}

// A grid-stride GEMV (Gemv::grid_blocks: fewer blocks than warp tasks, each warp looping) computes
// every task as one warp per task does, with and without the fused norm and over three groups.
TEST_P(GemvVariantTest, GridStrideGivesTheWarpPerTaskBits) {
  const DType t = GetParam();
  const std::int64_t k = 2056, nq = 96, nkv = 40, width = nq + 2 * nkv;
  for (const std::int64_t batch : {1, 3, 8}) {
    const Tensor x = gpu(random_tensor({batch, k}, t, 400 + batch));
    const Tensor gamma = gpu(random_tensor({k}, t, 401, 0.5, 1.5));
    const Tensor w = gpu(random_tensor({width, k}, t, 402));
    const auto* wp = static_cast<const char*>(w.data_ptr());
    const std::int64_t row_bytes = k * static_cast<std::int64_t>(dtype_size(t));
    for (const bool norm : {false, true}) {
      if (norm && !cuda::kernels::gemv_fused_norm_fits(type_of(t), batch, k)) continue;
      Tensor results[2];
      for (const int grid : {0, 3}) {
        const Tensor out = Tensor::empty({batch, width}, t, Device::cuda(0));
        auto* op = static_cast<char*>(out.data_ptr());
        const auto elem = static_cast<std::int64_t>(dtype_size(t));
        Gemv g = base(t, batch, k, x);
        g.group_count = 3;
        g.groups[0] = {wp, nullptr, op, nq, width};
        g.groups[1] = {wp + nq * row_bytes, nullptr, op + nq * elem, nkv, width};
        g.groups[2] = {wp + (nq + nkv) * row_bytes, nullptr, op + (nq + nkv) * elem, nkv, width};
        if (norm) g.norm_weight = gamma.data_ptr();
        g.grid_blocks = grid;
        g.pdl = grid > 0;
        ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
        results[grid > 0 ? 1 : 0] = out;
      }
      EXPECT_TRUE(bits_equal(results[1], results[0]))
          << "batch " << batch << (norm ? " norm" : "") << ": max |diff| "
          << max_diff(results[1], results[0]);
    }
  }
}

// The first pass of weight loads issued before the PDL wait (Gemv::preload, bf16 default shapes)
// is summed as the loop or the tail would have: the same bits, short rows and long.
TEST_P(GemvVariantTest, PreloadGivesThePlainBits) {
  const DType t = GetParam();
  const std::int64_t n = 77;
  for (const std::int64_t k : kKs) {
    for (const std::int64_t batch : {1, 2, 4, 8}) {
      const Tensor x = gpu(random_tensor({batch, k}, t, 500 + batch));
      const Tensor w = gpu(random_tensor({2 * n, k}, t, 501));
      for (const bool gated : {false, true}) {
        Tensor results[2];
        for (const bool preload : {false, true}) {
          const Tensor out = Tensor::empty({batch, n}, t, Device::cuda(0));
          Gemv g = base(t, batch, k, x);
          g.groups[0] = {w.data_ptr(), nullptr, out.data_ptr(), n, n};
          if (gated) {
            g.group_count = 2;
            g.groups[1] = {static_cast<const char*>(w.data_ptr()) + n * k * dtype_size(t), nullptr,
                           nullptr, n, n};
            g.epilogue = GemvEpilogue::SiluMul;
          }
          g.pdl = true;
          g.preload = preload;
          ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
          results[preload ? 1 : 0] = out;
        }
        EXPECT_TRUE(bits_equal(results[1], results[0]))
            << "k " << k << " batch " << batch << (gated ? " gated" : "");
      }
    }
  }
}

// The residual GEMV with the RMSNorm of its result in its last block, against the GEMV and then
// the rms_norm kernel: the same output and normed bits, for every batch, with and without PDL and
// the grid-stride launch (fewer blocks than tasks), launched twice on one ticket (left at zero).
// float32 has no tail norm and is refused.
TEST_P(GemvVariantTest, TailNormEqualsGemvThenRmsNormKernel) {
  const DType t = GetParam();
  const float eps = 1e-5f;
  const std::int64_t k = 136;
  const Tensor ticket = Tensor::zeros({1}, DType::Int32, Device::cuda(0));
  for (const std::int64_t n : {264, 2056, 4096}) {  // one block's pass, a remainder, 7B's hidden
    const Tensor w = gpu(random_tensor({n, k}, t, 31, -0.2, 0.2));
    const Tensor gamma = gpu(random_tensor({n}, t, 32, 0.5, 1.5));
    for (std::int64_t batch = 1; batch <= 8; ++batch) {
      const Tensor x = gpu(random_tensor({batch, k}, t, 40 + batch));
      const Tensor h0 = gpu(random_tensor({batch, n}, t, 50 + batch, -2.0, 2.0));
      // Reference: h = h0 + W x, then rms_norm(h).
      const Tensor h_ref = h0.clone();
      Gemv g = base(t, batch, k, x);
      g.groups[0] = {w.data_ptr(), nullptr, h_ref.data_ptr(), n, n};
      g.epilogue = GemvEpilogue::AddResidual;
      g.residual = h_ref.data_ptr();
      ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
      const Tensor normed_ref = Tensor::empty({batch, n}, t, Device::cuda(0));
      ASSERT_EQ(cuda::kernels::rms_norm(h_ref.data_ptr(), gamma.data_ptr(), normed_ref.data_ptr(),
                                        type_of(t), batch, n, eps, stream()),
                cudaSuccess);
      for (const int variant : {0, 1, 2}) {  // ordinary, PDL, grid stride of 3 blocks
        for (int launch = 0; launch < 2; ++launch) {
          const Tensor h = h0.clone();
          const Tensor normed = Tensor::zeros({batch, n}, t, Device::cuda(0));
          Gemv f = g;
          f.groups[0].out = h.data_ptr();
          f.residual = h.data_ptr();
          f.tail_norm_weight = gamma.data_ptr();
          f.tail_norm_out = normed.data_ptr();
          f.norm_eps = eps;
          f.ticket = static_cast<unsigned*>(ticket.data_ptr());
          f.pdl = variant == 1;
          f.grid_blocks = variant == 2 ? 3 : 0;
          const cudaError_t status = cuda::kernels::gemv(f, stream());
          if (t == DType::Float32) {
            EXPECT_EQ(status, cudaErrorInvalidValue);
            continue;
          }
          ASSERT_EQ(status, cudaSuccess);
          EXPECT_TRUE(bits_equal(h, h_ref)) << "n " << n << " batch " << batch;
          EXPECT_TRUE(bits_equal(normed, normed_ref))
              << "n " << n << " batch " << batch << " variant " << variant << ": max |diff| "
              << max_diff(normed, normed_ref);
          EXPECT_EQ(ticket.to(Device::cpu()).to_vector<std::int32_t>()[0], 0);
        }
      }
    }
  }
  // Only the residual epilogue takes it.
  const Tensor x = Tensor::zeros({1, k}, t, Device::cuda(0));
  Gemv g = base(t, 1, k, x);
  g.groups[0] = {x.data_ptr(), nullptr, Tensor::empty({1, 8}, t, Device::cuda(0)).data_ptr(), 8, 8};
  g.tail_norm_weight = x.data_ptr();
  g.tail_norm_out = Tensor::empty({1, 8}, t, Device::cuda(0)).data_ptr();
  g.ticket = static_cast<unsigned*>(ticket.data_ptr());
  EXPECT_EQ(cuda::kernels::gemv(g, stream()), cudaErrorInvalidValue);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemvVariantTest,
                         ::testing::Values(DType::Float32, DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

}  // namespace
}  // namespace strata

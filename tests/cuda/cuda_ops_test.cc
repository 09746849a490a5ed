// Every op on CUDA against the same op on the CPU (the CPU kernels are proven against double
// references in tests/ops), per dtype with the tolerance of one rounding; casts bit for bit.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::Tolerance;

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
  DType dtype() const { return GetParam(); }
  Tensor rand(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) const {
    return random_tensor(shape, dtype(), seed, lo, hi);
  }
  // Twice the one-rounding tolerance: CPU and GPU may each round once, on either side.
  Tolerance tol(double scale = 1.0) const {
    const Tolerance t = testing::tolerance_for(dtype());
    return {2 * t.atol * scale, 2 * t.rtol * scale};
  }
};

constexpr Tolerance kExact{0.0, 0.0};

std::vector<double> values_of(const Tensor& t) {
  Tensor d = t.to(Device::cpu(), DType::Float64).contiguous();
  return std::vector<double>(d.data<double>(), d.data<double>() + d.numel());
}

Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

#define EXPECT_MATCHES_CPU(cuda_result, cpu_result, tolerance)                          \
  do {                                                                                  \
    const Tensor _c = (cuda_result);                                                    \
    EXPECT_TRUE(_c.is_cuda());                                                          \
    EXPECT_TRUE(all_close(_c, values_of(cpu_result), tolerance, #cuda_result));         \
  } while (false)

TEST_P(CudaOps, Activations) {
  const Tensor x = rand({7, 333}, 1, -4.0, 4.0);
  EXPECT_MATCHES_CPU(ops::silu(gpu(x)), ops::silu(x), tol());
  EXPECT_MATCHES_CPU(ops::gelu(gpu(x)), ops::gelu(x), tol());
  EXPECT_MATCHES_CPU(ops::gelu(gpu(x), ops::GeluApproximation::Tanh),
                     ops::gelu(x, ops::GeluApproximation::Tanh), tol());
  EXPECT_MATCHES_CPU(ops::relu(gpu(x).transpose(0, 1)), ops::relu(x.transpose(0, 1)), tol());
}

TEST_P(CudaOps, BroadcastingAddMul) {
  const Tensor a = rand({4, 1, 65}, 2);
  const Tensor b = rand({3, 65}, 3);
  EXPECT_MATCHES_CPU(ops::add(gpu(a), gpu(b)), ops::add(a, b), tol());
  EXPECT_MATCHES_CPU(ops::mul(gpu(a), gpu(b).transpose(0, 1).transpose(0, 1)), ops::mul(a, b),
                     tol());
}

TEST_P(CudaOps, SoftmaxAlongEveryDim) {
  const Tensor x = rand({5, 6, 700}, 4, -8.0, 8.0);
  for (std::int64_t dim : {0, 1, 2}) {
    EXPECT_MATCHES_CPU(ops::softmax(gpu(x), dim), ops::softmax(x, dim), tol());
  }
}

TEST_P(CudaOps, Norms) {
  const Tensor x = rand({9, 1000}, 5, -3.0, 3.0);
  const Tensor w = rand({1000}, 6);
  const Tensor b = rand({1000}, 7);
  EXPECT_MATCHES_CPU(ops::rms_norm(gpu(x), gpu(w), 1e-6), ops::rms_norm(x, w, 1e-6), tol());
  EXPECT_MATCHES_CPU(ops::layer_norm(gpu(x), gpu(w), gpu(b), 1e-5),
                     ops::layer_norm(x, w, b, 1e-5), tol());
  EXPECT_MATCHES_CPU(ops::layer_norm(gpu(x), std::nullopt, std::nullopt, 1e-5),
                     ops::layer_norm(x, std::nullopt, std::nullopt, 1e-5), tol());
}

TEST_P(CudaOps, Rotary) {
  const Tensor x = rand({2, 3, 5, 64}, 8);
  const Tensor cos = random_tensor({5, 64}, DType::Float32, 9);
  const Tensor sin = random_tensor({5, 64}, DType::Float32, 10);
  EXPECT_MATCHES_CPU(ops::rotary_embedding(gpu(x), gpu(cos), gpu(sin)),
                     ops::rotary_embedding(x, cos, sin), tol());
  const Tensor xs = rand({2, 5, 3, 64}, 21);  // [b, s, h, d] storage viewed as [b, h, s, d]
  const Tensor xt = xs.transpose(1, 2);
  const Tensor cos_b = cos.to(dtype()).view({1, 5, 64});
  const Tensor sin_b = sin.to(dtype()).view({1, 5, 64});
  EXPECT_MATCHES_CPU(ops::rotary_embedding(gpu(xs).transpose(1, 2), gpu(cos_b), gpu(sin_b)),
                     ops::rotary_embedding(xt, cos_b, sin_b), tol());
}

TEST_P(CudaOps, EmbeddingAndBadIds) {
  const Tensor table = rand({50, 24}, 11);
  const Tensor ids = testing::random_int_tensor({3, 7}, DType::Int64, 12, 0, 50);
  EXPECT_MATCHES_CPU(ops::embedding(gpu(ids), gpu(table)), ops::embedding(ids, table),
                     kExact);
  const Tensor bad = Tensor::full({2}, 50.0, DType::Int32);
  EXPECT_THROW(ops::embedding(gpu(bad), gpu(table)), InvalidArgument);
}

TEST_P(CudaOps, LinearAndMatmul) {
  const Tensor x = rand({3, 17, 96}, 13);
  const Tensor w = rand({40, 96}, 14);
  const Tensor bias = rand({40}, 15);
  // Sums of 96 products: allow the summation order to differ (GEMM blocking vs the CPU's).
  const Tolerance t = dtype() == DType::Float32 ? Tolerance{1e-5, 1e-4} : tol();
  EXPECT_MATCHES_CPU(ops::linear(gpu(x), gpu(w), gpu(bias)), ops::linear(x, w, bias), t);
  EXPECT_MATCHES_CPU(ops::linear(gpu(x), gpu(w)), ops::linear(x, w), t);
  // One row (decode): the matrix-vector kernel, with and without bias, and a k it cannot take.
  const Tensor row = rand({1, 96}, 22);
  EXPECT_MATCHES_CPU(ops::linear(gpu(row), gpu(w), gpu(bias)), ops::linear(row, w, bias), t);
  const Tensor long_row = rand({1, 4096}, 23);
  const Tensor long_w = rand({70, 4096}, 24);
  const Tolerance long_t = dtype() == DType::Float32 ? Tolerance{1e-4, 1e-4} : tol(2.0);
  EXPECT_MATCHES_CPU(ops::linear(gpu(long_row), gpu(long_w)), ops::linear(long_row, long_w),
                     long_t);
  const Tensor odd_row = rand({1, 95}, 25);
  const Tensor odd_w = rand({40, 95}, 26);
  EXPECT_MATCHES_CPU(ops::linear(gpu(odd_row), gpu(odd_w)), ops::linear(odd_row, odd_w), t);
  const Tensor a = rand({2, 3, 33, 96}, 16);
  const Tensor b = rand({3, 96, 20}, 17);  // broadcast over the leading batch dimension
  EXPECT_MATCHES_CPU(ops::matmul(gpu(a), gpu(b)), ops::matmul(a, b), t);
  const Tensor v = rand({96}, 18);
  EXPECT_MATCHES_CPU(ops::matmul(gpu(a), gpu(v)), ops::matmul(a, v), t);
  EXPECT_MATCHES_CPU(ops::matmul(gpu(b).transpose(1, 2), gpu(a).narrow(0, 0, 1).transpose(2, 3)),
                     ops::matmul(b.transpose(1, 2), a.narrow(0, 0, 1).transpose(2, 3)), t);
}

TEST_P(CudaOps, AttentionPrefillDecodeGqaMask) {
  struct Case {
    std::int64_t batch, q_heads, kv_heads, q_len, k_len, head_dim;
    bool causal, mask;
  };
  const Case cases[] = {
      {2, 4, 4, 9, 9, 64, true, false},     // prefill, causal
      {1, 8, 2, 5, 12, 128, true, true},    // q_len != k_len aligned to the end, GQA, mask
      {2, 8, 2, 1, 3000, 128, false, false},  // decode against a long cache: split keys
      {1, 4, 1, 1, 777, 64, true, true},    // decode with a padding mask
      {1, 2, 2, 4, 4, 80, false, true},     // odd head_dim
  };
  std::uint64_t seed = 100;
  for (const Case& c : cases) {
    const Tensor q = rand({c.batch, c.q_heads, c.q_len, c.head_dim}, ++seed, -2.0, 2.0);
    const Tensor k = rand({c.batch, c.kv_heads, c.k_len, c.head_dim}, ++seed, -2.0, 2.0);
    const Tensor v = rand({c.batch, c.kv_heads, c.k_len, c.head_dim}, ++seed);
    ops::AttentionOptions cpu_opts, gpu_opts;
    cpu_opts.causal = gpu_opts.causal = c.causal;
    if (c.mask) {
      // 0 / -inf padding: the first key of every row is masked, a row of every key masked once.
      Tensor m = Tensor::zeros({c.batch, 1, c.q_len, c.k_len}, DType::Float32);
      for (std::int64_t r = 0; r < c.batch * c.q_len; ++r) m.data<float>()[r * c.k_len] = -INFINITY;
      for (std::int64_t j = 0; j < c.k_len; ++j) m.data<float>()[j] = -INFINITY;
      cpu_opts.mask = m;
      gpu_opts.mask = gpu(m);
    }
    const std::string what = fmt::format("case q_len {} k_len {} heads {}/{}", c.q_len, c.k_len,
                                         c.q_heads, c.kv_heads);
    const Tensor expected = ops::scaled_dot_product_attention(q, k, v, cpu_opts);
    const Tensor actual = ops::scaled_dot_product_attention(gpu(q), gpu(k), gpu(v), gpu_opts);
    EXPECT_TRUE(all_close(actual, values_of(expected), tol(2.0), what));
  }
}

TEST_P(CudaOps, ArgmaxAndTopk) {
  Tensor x = rand({6, 500}, 20);
  x.data_ptr();  // host tensor: put a NaN and ties in
  Tensor host = x.to(DType::Float32);
  host.data<float>()[17] = NAN;
  host.data<float>()[600] = 5.0f;
  host.data<float>()[700] = 5.0f;
  x = host.to(dtype());
  for (std::int64_t dim : {0, 1}) {
    EXPECT_MATCHES_CPU(ops::argmax(gpu(x), dim), ops::argmax(x, dim), kExact);
    auto [cv, ci] = ops::topk(x, 5, dim);
    auto [gv, gi] = ops::topk(gpu(x), 5, dim);
    EXPECT_MATCHES_CPU(gi, ci, kExact);
    Tensor gvh = gv.to(Device::cpu());
    ASSERT_EQ(std::memcmp(gvh.data_ptr(), cv.data_ptr(), cv.nbytes()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::ValuesIn(testing::kFloatDTypes),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

// Casts between every pair of dtypes on the GPU give the bytes of the CPU conversion (which is
// proven bit-exact against PyTorch), including NaN, infinities, subnormals and overflow.
TEST(CudaCast, EveryPairBitExactWithTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  std::mt19937 rng(7);
  std::vector<float> values = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 448.0f, 464.0f,
                               480.0f, 57344.0f, 61440.0f, 65536.0f, 1e-45f, 1.5e-9f, 2e-3f,
                               -127.5f, 255.5f, 3e9f, -3e9f, 1e20f};
  for (std::uint32_t bits = 0; bits < 4096; ++bits) {
    const std::uint32_t random = rng();
    float f;
    std::memcpy(&f, &random, 4);
    values.push_back(f);
    values.push_back(std::ldexp(static_cast<float>(rng() % 2000) - 1000.0f, -(static_cast<int>(bits % 40))));
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

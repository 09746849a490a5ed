// The fused decode kernels (src/cuda/matvec.cu, src/cuda/decode_step.cu) against compositions of
// the CPU ops they replace: linear (+ add, + silu * up), rms_norm per head + rotary (models'
// apply_rotary) and scaled_dot_product_attention. The CPU ops are the independent reference
// (tests/ops proves them against double-precision formulas).

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/kernels.h"
#include "kernel_testing.h"
#include "models/attention.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using cuda::kernels::Type;
using testing::random_tensor;

cudaStream_t stream() { return testing::kernel_stream(); }
Type type_of(DType d) { return testing::kernel_type(d); }
Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

// Parameterised kernel tests, skipped where no GPU is usable.
template <typename P>
class GpuTest : public ::testing::TestWithParam<P> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

// One rounding of T in the GPU sum and the reference, plus float32 summation order.
double tolerance(DType d) {
  return d == DType::Float32 ? 1e-5 : d == DType::Float16 ? 2e-3 : 1.6e-2;
}

// max |a - b| <= tol * max(1, max |b|): both on the cpu in float64.
void expect_close(const Tensor& actual, const Tensor& expected, double tol, const char* what) {
  const std::vector<double> a = host(actual).to_doubles(), e = host(expected).to_doubles();
  ASSERT_EQ(a.size(), e.size()) << what;
  double scale = 1.0, worst = 0.0;
  for (double v : e) scale = std::max(scale, std::abs(v));
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - e[i]));
  EXPECT_LE(worst, tol * scale) << what << ": max |diff| " << worst << " at scale " << scale;
}

// y = x @ w^T + b computed on the cpu in float32 from T values, rounded to T: the module path.
Tensor cpu_linear(const Tensor& x, const Tensor& w, const Tensor* b, DType t) {
  std::optional<Tensor> bias;
  if (b != nullptr) bias = b->to(DType::Float32);
  return ops::linear(x.to(DType::Float32), w.to(DType::Float32), bias).to(t);
}

using GemvTest = GpuTest<DType>;

// Shapes cover the unrolled loop, its remainder, an odd row count and every batch 1..8.
struct Shape2 {
  std::int64_t n, k;
};
const Shape2 kShapes[] = {{37, 264}, {130, 2056}, {64, 4096}};

TEST_P(GemvTest, StoreWithBiasEqualsCpuLinear) {
  const DType t = GetParam();
  for (const Shape2 s : kShapes) {
    for (std::int64_t batch = 1; batch <= 8; ++batch) {
      const Tensor x = random_tensor({batch, s.k}, t, 1 + batch);
      const Tensor w = random_tensor({s.n, s.k}, t, 2);
      const Tensor b = random_tensor({s.n}, t, 3);
      const Tensor xg = gpu(x), wg = gpu(w), bg = gpu(b);
      const Tensor out = Tensor::empty({batch, s.n}, t, Device::cuda(0));
      cuda::kernels::Gemv g;
      g.type = type_of(t);
      g.batch = batch;
      g.k = s.k;
      g.x = xg.data_ptr();
      g.ldx = s.k;
      g.groups[0] = {wg.data_ptr(), bg.data_ptr(), out.data_ptr(), s.n, s.n};
      ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
      expect_close(out, cpu_linear(x, w, &b, t), tolerance(t), "gemv");
      // ops::linear on the GPU takes the same kernel for up to 8 rows.
      expect_close(ops::linear(xg, wg, bg), cpu_linear(x, w, &b, t), tolerance(t), "linear");
    }
  }
}

TEST_P(GemvTest, ThreeWeightsInOneLaunchWriteTheirColumns) {
  const DType t = GetParam();
  const std::int64_t k = 1032, nq = 96, nkv = 48, width = nq + 2 * nkv;
  for (std::int64_t batch : {1, 3, 8}) {
    const Tensor x = random_tensor({batch, k}, t, 10 + batch);
    const Tensor wq = random_tensor({nq, k}, t, 11), wk = random_tensor({nkv, k}, t, 12),
                 wv = random_tensor({nkv, k}, t, 13), bq = random_tensor({nq}, t, 14);
    const Tensor xg = gpu(x), wqg = gpu(wq), wkg = gpu(wk), wvg = gpu(wv), bqg = gpu(bq);
    const Tensor out = Tensor::zeros({batch, width}, t, Device::cuda(0));
    const auto elem = static_cast<std::int64_t>(dtype_size(t));
    auto* base = static_cast<char*>(out.data_ptr());
    cuda::kernels::Gemv g;
    g.type = type_of(t);
    g.batch = batch;
    g.k = k;
    g.x = xg.data_ptr();
    g.ldx = k;
    g.group_count = 3;
    g.groups[0] = {wqg.data_ptr(), bqg.data_ptr(), base, nq, width};
    g.groups[1] = {wkg.data_ptr(), nullptr, base + nq * elem, nkv, width};
    g.groups[2] = {wvg.data_ptr(), nullptr, base + (nq + nkv) * elem, nkv, width};
    ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
    expect_close(out.narrow(1, 0, nq), cpu_linear(x, wq, &bq, t), tolerance(t), "q");
    expect_close(out.narrow(1, nq, nkv), cpu_linear(x, wk, nullptr, t), tolerance(t), "k");
    expect_close(out.narrow(1, nq + nkv, nkv), cpu_linear(x, wv, nullptr, t), tolerance(t), "v");
  }
}

TEST_P(GemvTest, ResidualEpilogueEqualsLinearThenAdd) {
  const DType t = GetParam();
  const std::int64_t n = 72, k = 2056;
  for (std::int64_t batch : {1, 2, 5, 8}) {
    const Tensor x = random_tensor({batch, k}, t, 20 + batch);
    const Tensor w = random_tensor({n, k}, t, 21);
    const Tensor res = random_tensor({batch, n}, t, 22, -8.0, 8.0);
    const Tensor xg = gpu(x), wg = gpu(w);
    const Tensor hidden = gpu(res);  // updated in place, as the decode step does
    cuda::kernels::Gemv g;
    g.type = type_of(t);
    g.batch = batch;
    g.k = k;
    g.x = xg.data_ptr();
    g.ldx = k;
    g.groups[0] = {wg.data_ptr(), nullptr, hidden.data_ptr(), n, n};
    g.epilogue = cuda::kernels::GemvEpilogue::AddResidual;
    g.residual = hidden.data_ptr();
    ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
    expect_close(hidden, ops::add(res, cpu_linear(x, w, nullptr, t)), tolerance(t), "residual");
  }
}

TEST_P(GemvTest, SiluMulEpilogueEqualsSiluOfGateTimesUp) {
  const DType t = GetParam();
  const std::int64_t n = 100, k = 1032;
  for (std::int64_t batch : {1, 4, 8}) {
    const Tensor x = random_tensor({batch, k}, t, 30 + batch);
    const Tensor wg_ = random_tensor({n, k}, t, 31), wu = random_tensor({n, k}, t, 32);
    const Tensor bgate = random_tensor({n}, t, 33), bup = random_tensor({n}, t, 34);
    const Tensor xg = gpu(x), wgg = gpu(wg_), wug = gpu(wu), bgg = gpu(bgate), bug = gpu(bup);
    const Tensor act = Tensor::empty({batch, n}, t, Device::cuda(0));
    cuda::kernels::Gemv g;
    g.type = type_of(t);
    g.batch = batch;
    g.k = k;
    g.x = xg.data_ptr();
    g.ldx = k;
    g.group_count = 2;
    g.groups[0] = {wgg.data_ptr(), bgg.data_ptr(), act.data_ptr(), n, n};
    g.groups[1] = {wug.data_ptr(), bug.data_ptr(), nullptr, n, n};
    g.epilogue = cuda::kernels::GemvEpilogue::SiluMul;
    ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
    const Tensor expected =
        ops::mul(ops::silu(cpu_linear(x, wg_, &bgate, t)), cpu_linear(x, wu, &bup, t));
    expect_close(act, expected, tolerance(t), "silu(gate) * up");
  }
}

TEST_P(GemvTest, RefusesBatchesOutsideOneToEight) {
  cuda::kernels::Gemv g;
  g.type = type_of(GetParam());
  g.batch = 9;
  EXPECT_EQ(cuda::kernels::gemv(g, stream()), cudaErrorInvalidValue);
  g.batch = 0;
  EXPECT_EQ(cuda::kernels::gemv(g, stream()), cudaErrorInvalidValue);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemvTest,
                         ::testing::Values(DType::Float32, DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

struct RopeCase {
  DType dtype;
  std::int64_t head_dim, rotary_dim;
  bool norm;
};

using RopeKvTest = GpuTest<RopeCase>;

// q/k normed per head (Qwen3) or not, rotated on all or the first rotary_dim dimensions, k and v
// written at position `past` of the cache and nothing else touched.
TEST_P(RopeKvTest, EqualsNormThenApplyRotaryThenCacheUpdate) {
  const RopeCase c = GetParam();
  const DType t = c.dtype;
  const std::int64_t batch = 3, hq = 4, hkv = 2, d = c.head_dim, cap = 11, past = 6;
  const std::int64_t width = (hq + 2 * hkv) * d;
  const Tensor qkv = random_tensor({batch, width}, t, 40, -2.0, 2.0);
  const Tensor qn = random_tensor({d}, t, 41, 0.5, 1.5), kn = random_tensor({d}, t, 42, 0.5, 1.5);
  const Tensor cos = random_tensor({cap, c.rotary_dim}, t, 43),
               sin = random_tensor({cap, c.rotary_dim}, t, 44);
  const Tensor kc0 = random_tensor({batch, hkv, cap, d}, t, 45),
               vc0 = random_tensor({batch, hkv, cap, d}, t, 46);
  const Tensor qkv_g = gpu(qkv), qn_g = gpu(qn), kn_g = gpu(kn), cos_g = gpu(cos), sin_g = gpu(sin);
  const Tensor kc = gpu(kc0), vc = gpu(vc0);
  const Tensor past_g = gpu(Tensor::from_vector(std::vector<std::int64_t>{past}));
  const Tensor q_out = Tensor::empty({batch, hq, d}, t, Device::cuda(0));
  const auto elem = static_cast<std::int64_t>(dtype_size(t));
  auto* base = static_cast<char*>(qkv_g.data_ptr());
  cuda::kernels::RopeKvWrite a;
  a.type = type_of(t);
  a.batch = batch;
  a.q_heads = hq;
  a.kv_heads = hkv;
  a.head_dim = d;
  a.rotary_dim = c.rotary_dim;
  a.capacity = cap;
  a.q = base;
  a.k = base + hq * d * elem;
  a.v = base + (hq + hkv) * d * elem;
  a.ldq = a.ldk = a.ldv = width;
  a.q_norm = c.norm ? qn_g.data_ptr() : nullptr;
  a.k_norm = c.norm ? kn_g.data_ptr() : nullptr;
  a.eps = 1e-6f;
  a.cos = cos_g.data_ptr();
  a.sin = sin_g.data_ptr();
  a.past = past_g.data<std::int64_t>();
  a.q_out = q_out.data_ptr();
  a.k_cache = kc.data_ptr();
  a.v_cache = vc.data_ptr();
  ASSERT_EQ(cuda::kernels::rope_kv_write(a, stream()), cudaSuccess);

  // The module path: [batch, 1, heads, d] views, rms_norm per head, transpose, apply_rotary.
  const auto heads = [&](std::int64_t first, std::int64_t count) {
    return qkv.narrow(1, first * d, count * d).contiguous().view({batch, 1, count, d});
  };
  Tensor q = heads(0, hq), k = heads(hq, hkv);
  const Tensor v = heads(hq + hkv, hkv).transpose(1, 2);
  if (c.norm) {
    q = ops::rms_norm(q, qn, 1e-6);
    k = ops::rms_norm(k, kn, 1e-6);
  }
  const Tensor cos_row = cos.narrow(0, past, 1).view({1, 1, c.rotary_dim});
  const Tensor sin_row = sin.narrow(0, past, 1).view({1, 1, c.rotary_dim});
  const Tensor q_rot = models::detail::apply_rotary(q.transpose(1, 2), cos_row, sin_row);
  const Tensor k_rot = models::detail::apply_rotary(k.transpose(1, 2), cos_row, sin_row);
  expect_close(q_out.view({batch, hq, 1, d}), q_rot, tolerance(t), "q");
  Tensor k_expected = kc0.clone(), v_expected = vc0.clone();
  k_expected.narrow(2, past, 1).copy_(k_rot);
  v_expected.narrow(2, past, 1).copy_(v);
  expect_close(kc, k_expected, tolerance(t), "key cache");
  // v is copied, not computed: bit for bit.
  EXPECT_EQ(host(vc).to_doubles(), v_expected.to_doubles());
}

INSTANTIATE_TEST_SUITE_P(Cases, RopeKvTest,
                         ::testing::Values(RopeCase{DType::BFloat16, 24, 24, true},
                                           RopeCase{DType::BFloat16, 64, 32, false},
                                           RopeCase{DType::Float32, 16, 16, false},
                                           RopeCase{DType::Float16, 128, 128, true}),
                         [](const auto& info) {
                           const RopeCase& c = info.param;
                           return testing::dtype_test_name(c.dtype) + "_d" +
                                  std::to_string(c.head_dim) + "_rot" +
                                  std::to_string(c.rotary_dim) + (c.norm ? "_norm" : "");
                         });

struct AttentionCase {
  DType dtype;
  std::int64_t batch, q_heads, kv_heads, head_dim, capacity, past, window;
};

using DecodeAttentionTest = GpuTest<AttentionCase>;

// The split-key kernel equals the CPU attention op over the live keys (the last `window` with a
// window), computed in float32 from the same T values and rounded once.
TEST_P(DecodeAttentionTest, EqualsCpuAttentionOverTheLiveKeys) {
  const AttentionCase c = GetParam();
  const DType t = c.dtype;
  const Tensor q = random_tensor({c.batch, c.q_heads, c.head_dim}, t, 50, -2.0, 2.0);
  const Tensor kc = random_tensor({c.batch, c.kv_heads, c.capacity, c.head_dim}, t, 51, -2.0, 2.0);
  const Tensor vc = random_tensor({c.batch, c.kv_heads, c.capacity, c.head_dim}, t, 52);
  const Tensor qg = gpu(q), kg = gpu(kc), vg = gpu(vc);
  const Tensor past_g = gpu(Tensor::from_vector(std::vector<std::int64_t>{c.past}));
  const std::int64_t chunk = 128;
  const std::int64_t splits = cuda::kernels::decode_attention_splits(c.capacity, chunk);
  const std::int64_t rows = c.batch * c.q_heads * splits;
  const Tensor acc = Tensor::empty({rows * c.head_dim}, DType::Float32, Device::cuda(0));
  const Tensor mx = Tensor::empty({rows}, DType::Float32, Device::cuda(0));
  const Tensor sum = Tensor::empty({rows}, DType::Float32, Device::cuda(0));
  const Tensor out = Tensor::empty({c.batch, c.q_heads, c.head_dim}, t, Device::cuda(0));
  cuda::kernels::DecodeAttention a;
  a.type = type_of(t);
  a.batch = c.batch;
  a.q_heads = c.q_heads;
  a.kv_heads = c.kv_heads;
  a.head_dim = c.head_dim;
  a.capacity = c.capacity;
  a.window = c.window;
  a.chunk = chunk;
  a.splits = splits;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  a.q = qg.data_ptr();
  a.k_cache = kg.data_ptr();
  a.v_cache = vg.data_ptr();
  a.past = past_g.data<std::int64_t>();
  a.partial_acc = acc.data<float>();
  a.partial_max = mx.data<float>();
  a.partial_sum = sum.data<float>();
  a.out = out.data_ptr();
  ASSERT_EQ(cuda::kernels::decode_attention(a, stream()), cudaSuccess);

  const std::int64_t length = c.past + 1;
  const std::int64_t begin = c.window > 0 && length > c.window ? length - c.window : 0;
  const auto f32 = [](const Tensor& x) { return x.to(DType::Float32); };
  const Tensor expected =
      ops::scaled_dot_product_attention(f32(q).view({c.batch, c.q_heads, 1, c.head_dim}),
                                        f32(kc.narrow(2, begin, length - begin)),
                                        f32(vc.narrow(2, begin, length - begin)))
          .to(t);
  expect_close(out.view({c.batch, c.q_heads, 1, c.head_dim}), expected, tolerance(t), "attention");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DecodeAttentionTest,
    ::testing::Values(
        // One split, several (the last partly live, later ones empty), GQA groups 1, 2 and 8,
        // a window inside the live keys, head dims 24 to 256.
        AttentionCase{DType::BFloat16, 1, 4, 4, 128, 16, 0, 0},
        AttentionCase{DType::BFloat16, 2, 4, 2, 24, 700, 260, 0},
        AttentionCase{DType::Float32, 3, 8, 1, 64, 300, 299, 0},
        AttentionCase{DType::Float16, 2, 16, 2, 256, 512, 300, 50},
        AttentionCase{DType::BFloat16, 1, 32, 8, 128, 4096, 1000, 0}),
    [](const auto& info) {
      const AttentionCase& c = info.param;
      return testing::dtype_test_name(c.dtype) + "_b" + std::to_string(c.batch) + "_h" +
             std::to_string(c.q_heads) + "x" + std::to_string(c.kv_heads) + "_d" +
             std::to_string(c.head_dim) + "_len" + std::to_string(c.past + 1) + "_w" +
             std::to_string(c.window);
    });

}  // namespace
}  // namespace strata

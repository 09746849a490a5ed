// The q/k/v GEMV with rope_kv_write's work in its store (GemvEpilogue::RopeKv, src/cuda/matvec.cuh)
// against the plain grouped GEMV followed by the rope_kv_write kernel (decode_step.cu): the same
// bits in the rotated q, the key cache and the value cache (every row, so nothing else is
// touched), for every batch, bf16 and f16 (float32 is refused: it keeps the rotary kernel), head
// dims 128 (7B) and 24, GQA, biases, a NoPE layer (no tables), with PDL and the late trigger; and
// the requests it refuses.

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "cuda/kernels.h"
#include "kernel_testing.h"
#include "strata/cuda/device.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using cuda::kernels::Gemv;
using cuda::kernels::GemvEpilogue;
using testing::bits_equal;
using testing::random_tensor;

cudaStream_t stream() { return testing::kernel_stream(); }
Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

class GemvRopeTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

struct Heads {
  std::int64_t q_heads, kv_heads, head_dim;
  bool bias, rope;
};

TEST_P(GemvRopeTest, EqualsGemvThenRopeKvWrite) {
  const DType t = GetParam();
  const auto elem = static_cast<std::int64_t>(dtype_size(t));
  const std::int64_t k = 264, cap = 9, past = 5;
  int tested = 0;
  for (const Heads h : {Heads{4, 2, 128, false, true}, Heads{6, 3, 24, true, true},
                        Heads{2, 2, 24, false, false}}) {
    const std::int64_t d = h.head_dim, q_out = h.q_heads * d, kv_out = h.kv_heads * d;
    const std::int64_t width = q_out + 2 * kv_out;
    const Tensor w = gpu(random_tensor({width, k}, t, 60, -0.3, 0.3));
    const Tensor bias = gpu(random_tensor({width}, t, 61));
    const Tensor cos = gpu(random_tensor({cap, d}, t, 62)),
                 sin = gpu(random_tensor({cap, d}, t, 63));
    const Tensor past_g = gpu(Tensor::from_vector(std::vector<std::int64_t>{past}));
    const auto* wb = static_cast<const char*>(w.data_ptr());
    const auto* bb = static_cast<const char*>(bias.data_ptr());
    for (std::int64_t batch = 1; batch <= 8; ++batch) {
      const Tensor x = gpu(random_tensor({batch, k}, t, 70 + batch));
      const Tensor k0 = random_tensor({batch, h.kv_heads, cap, d}, t, 80 + batch);
      const Tensor v0 = random_tensor({batch, h.kv_heads, cap, d}, t, 90 + batch);
      Gemv g;
      g.type = testing::kernel_type(t);
      g.batch = batch;
      g.k = k;
      g.x = x.data_ptr();
      g.ldx = k;
      g.group_count = 3;
      const auto bias_at = [&](std::int64_t row) { return h.bias ? bb + row * elem : nullptr; };
      // Reference: q|k|v into one buffer, then rope_kv_write.
      const Tensor qkv = Tensor::empty({batch, width}, t, Device::cuda(0));
      auto* base = static_cast<char*>(qkv.data_ptr());
      g.groups[0] = {wb, bias_at(0), base, q_out, width};
      g.groups[1] = {wb + q_out * k * elem, bias_at(q_out), base + q_out * elem, kv_out, width};
      g.groups[2] = {wb + (q_out + kv_out) * k * elem, bias_at(q_out + kv_out),
                     base + (q_out + kv_out) * elem, kv_out, width};
      ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);
      const Tensor q_ref = Tensor::empty({batch, q_out}, t, Device::cuda(0));
      const Tensor k_ref = gpu(k0), v_ref = gpu(v0);
      cuda::kernels::RopeKvWrite a;
      a.type = g.type;
      a.batch = batch;
      a.q_heads = h.q_heads;
      a.kv_heads = h.kv_heads;
      a.head_dim = a.rotary_dim = d;
      a.capacity = cap;
      a.q = base;
      a.k = base + q_out * elem;
      a.v = base + (q_out + kv_out) * elem;
      a.ldq = a.ldk = a.ldv = width;
      a.cos = h.rope ? cos.data_ptr() : nullptr;
      a.sin = h.rope ? sin.data_ptr() : nullptr;
      a.past = past_g.data<std::int64_t>();
      a.q_out = q_ref.data_ptr();
      a.k_cache = k_ref.data_ptr();
      a.v_cache = v_ref.data_ptr();
      ASSERT_EQ(cuda::kernels::rope_kv_write(a, stream()), cudaSuccess);
      for (const int variant : {0, 1, 2}) {  // ordinary, PDL, PDL with the late trigger
        const Tensor q_out_t = Tensor::empty({batch, q_out}, t, Device::cuda(0));
        const Tensor kc = gpu(k0), vc = gpu(v0);
        Gemv f = g;
        f.epilogue = GemvEpilogue::RopeKv;
        f.groups[0].out = q_out_t.data_ptr();
        f.groups[0].ldo = q_out;
        f.rope.cos = a.cos;
        f.rope.sin = a.sin;
        f.rope.past = a.past;
        f.rope.k_cache = kc.data_ptr();
        f.rope.v_cache = vc.data_ptr();
        f.rope.head_dim = d;
        f.rope.kv_heads = h.kv_heads;
        f.rope.capacity = cap;
        f.pdl = variant >= 1;
        f.late_trigger = variant == 2;
        if (t == DType::Float32) {  // float32 keeps the rotary kernel: refused
          EXPECT_EQ(cuda::kernels::gemv(f, stream()), cudaErrorInvalidValue);
          continue;
        }
        ASSERT_EQ(cuda::kernels::gemv(f, stream()), cudaSuccess);
        const std::string where = "head_dim " + std::to_string(d) + " batch " +
                                  std::to_string(batch) + " variant " + std::to_string(variant);
        EXPECT_TRUE(bits_equal(q_out_t, q_ref)) << "q, " << where;
        EXPECT_TRUE(bits_equal(kc, k_ref)) << "key cache, " << where;
        EXPECT_TRUE(bits_equal(vc, v_ref)) << "value cache, " << where;
        ++tested;
      }
    }
  }
  EXPECT_EQ(tested, t == DType::Float32 ? 0 : 3 * 8 * 3);
}

// Not q/k/v of whole heads, no caches, one table without the other: refused, nothing launched.
TEST_P(GemvRopeTest, RefusesIncompleteRequests) {
  const DType t = GetParam();
  const std::int64_t d = 8, k = 16;
  const Tensor buf = Tensor::zeros({64, k}, t, Device::cuda(0));
  const Tensor past = Tensor::zeros({1}, DType::Int64, Device::cuda(0));
  Gemv g;
  g.type = testing::kernel_type(t);
  g.k = k;
  g.x = buf.data_ptr();
  g.ldx = k;
  g.group_count = 3;
  for (int i = 0; i < 3; ++i) g.groups[i] = {buf.data_ptr(), nullptr, buf.data_ptr(), d, d};
  g.epilogue = GemvEpilogue::RopeKv;
  g.rope = {buf.data_ptr(),
            buf.data_ptr(),
            past.data<std::int64_t>(),
            buf.data_ptr(),
            buf.data_ptr(),
            d,
            1,
            4};
  if (t == DType::Float32) {
    EXPECT_EQ(cuda::kernels::gemv(g, stream()), cudaErrorInvalidValue);
    return;
  }
  ASSERT_EQ(cuda::kernels::gemv(g, stream()), cudaSuccess);  // the complete request runs
  ASSERT_EQ(cudaStreamSynchronize(stream()), cudaSuccess);
  const auto refused = [&](auto&& change, const char* what) {
    Gemv bad = g;
    change(bad);
    EXPECT_EQ(cuda::kernels::gemv(bad, stream()), cudaErrorInvalidValue) << what;
  };
  refused([](Gemv& b) { b.group_count = 2; }, "two groups");
  refused([](Gemv& b) { b.rope.head_dim = 7; }, "odd head_dim");
  refused([](Gemv& b) { b.groups[0].n = 12; }, "q not whole heads");
  refused([](Gemv& b) { b.groups[2].n = 16; }, "v of another width");
  refused([](Gemv& b) { b.rope.k_cache = nullptr; }, "no key cache");
  refused([](Gemv& b) { b.rope.past = nullptr; }, "no position");
  refused([](Gemv& b) { b.rope.sin = nullptr; }, "cos without sin");
  refused([&](Gemv& b) { b.norm_weight = buf.data_ptr(); }, "with the fused norm");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemvRopeTest,
                         ::testing::Values(DType::Float32, DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

}  // namespace
}  // namespace strata

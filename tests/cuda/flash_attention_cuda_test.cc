// The CUDA attention kernels (src/cuda/flash_decode.cu, flash_prefill.cu and the older
// attention.cu paths they fall back to) against the CPU attention op, the independent reference:
// same inputs, the CPU result rounded to the dtype once, compared with the per-dtype tolerance
// of one rounding (tests/support/op_testing.h). Shapes cover the cases each kernel routes on:
// GQA ratios 1/4/8, head dims 64/80/96/128/256, key lengths from 1 to 4k + odd, batches 1/3/17,
// causal prefill with q_len == k_len and q_len < k_len, additive masks, sinks, bf16 and f16.
// The launcher test drives launch_flash_decode directly with the key length in device memory,
// as a CUDA graph would, and replays a captured graph after changing it.

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

using testing::all_close;
using testing::random_tensor;
using testing::tolerance_for;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Shape4 {
  std::int64_t batch, q_heads, kv_heads, q_len, k_len, head_dim;
};

std::string describe(const Shape4& s, DType dtype, const std::string& extra = "") {
  return "b" + std::to_string(s.batch) + " hq" + std::to_string(s.q_heads) + " hkv" +
         std::to_string(s.kv_heads) + " lq" + std::to_string(s.q_len) + " lk" +
         std::to_string(s.k_len) + " d" + std::to_string(s.head_dim) + " " +
         testing::dtype_test_name(dtype) + extra;
}

Tensor on_gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

// Runs the op on the CPU and on cuda:0 with the same inputs and options.
void expect_gpu_matches_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                            const ops::AttentionOptions& options, const std::string& what) {
  const Tensor expected = ops::scaled_dot_product_attention(q, k, v, options);
  ops::AttentionOptions on_device = options;
  if (options.mask) on_device.mask = on_gpu(*options.mask);
  if (options.sinks) on_device.sinks = on_gpu(*options.sinks);
  const Tensor actual =
      ops::scaled_dot_product_attention(on_gpu(q), on_gpu(k), on_gpu(v), on_device);
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  EXPECT_TRUE(all_close(actual, expected.to_doubles(), tolerance_for(q.dtype()), what));
}

struct Inputs {
  Tensor q, k, v;
};
Inputs make(const Shape4& s, DType dtype, std::uint64_t seed) {
  return {random_tensor({s.batch, s.q_heads, s.q_len, s.head_dim}, dtype, seed, -2.0, 2.0),
          random_tensor({s.batch, s.kv_heads, s.k_len, s.head_dim}, dtype, seed + 1, -2.0, 2.0),
          random_tensor({s.batch, s.kv_heads, s.k_len, s.head_dim}, dtype, seed + 2)};
}

class FlashAttentionCuda : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
  DType dtype() const { return GetParam(); }
  void check(const Shape4& s, const ops::AttentionOptions& options, std::uint64_t seed,
             const std::string& extra = "") {
    const Inputs in = make(s, dtype(), seed);
    expect_gpu_matches_cpu(in.q, in.k, in.v, options, describe(s, dtype(), extra));
  }
};

// Decode (one query position) over every head dim, GQA ratio, batch and key length: the split
// count changes with the length and the batch, the rows per block with the GQA ratio.
TEST_P(FlashAttentionCuda, DecodeEveryHeadDimRatioBatchAndLength) {
  std::uint64_t seed = 100;
  for (const std::int64_t d : {64, 80, 96, 128, 256}) {
    for (const std::int64_t ratio : {1, 4, 8}) {
      for (const std::int64_t k_len : {1, 7, 255, 1024, 4099}) {
        const std::int64_t batch = k_len == 4099 ? 3 : k_len == 255 ? 17 : 1;
        check({batch, 2 * ratio, 2, 1, k_len, d}, {}, seed++);
      }
    }
  }
}

TEST_P(FlashAttentionCuda, DecodeBatch17LongCache) { check({17, 8, 2, 1, 1500, 128}, {}, 7); }

// A few query positions (speculative decoding) with the causal mask aligned to the end.
TEST_P(FlashAttentionCuda, DecodeFewQueriesCausal) {
  ops::AttentionOptions causal;
  causal.causal = true;
  check({3, 8, 2, 3, 777, 128}, causal, 11, " causal");
  check({1, 32, 4, 8, 4100, 64}, causal, 12, " causal");
  check({2, 4, 4, 5, 5, 96}, causal, 13, " causal square");
  check({1, 4, 1, 4, 2, 80}, causal, 14, " causal, more queries than keys");
}

// Padded batch: a [batch, 1, 1, k_len] 0/-inf mask hiding each sequence's padding (one row
// entirely), and a float32 mask with finite values per head and position.
TEST_P(FlashAttentionCuda, DecodeAndPrefillWithMasks) {
  for (const std::int64_t q_len : {1, 2, 300}) {
    const Shape4 s{3, 8, 2, q_len, 700, 128};
    const Inputs in = make(s, dtype(), 20 + q_len);
    std::vector<float> pad(3 * 700, 0.0f);
    for (std::int64_t j = 0; j < 700; ++j) {
      if (j < 300) pad[700 + j] = -kInf;  // sequence 1: left padding
      pad[2 * 700 + j] = -kInf;           // sequence 2: nothing visible -> zeros
    }
    Tensor padding = Tensor::from_vector(pad, {3, 1, 1, 700});
    ops::AttentionOptions options;
    options.mask = padding;
    expect_gpu_matches_cpu(in.q, in.k, in.v, options, describe(s, dtype(), " padding mask"));
    options.causal = true;
    expect_gpu_matches_cpu(in.q, in.k, in.v, options,
                           describe(s, dtype(), " padding mask, causal"));
    ops::AttentionOptions full;
    full.mask = random_tensor({3, 8, q_len, 700}, DType::Float32, 30 + q_len, -3.0, 1.0);
    expect_gpu_matches_cpu(in.q, in.k, in.v, full, describe(s, dtype(), " float32 mask"));
    full.mask = random_tensor({1, 8, q_len, 700}, dtype(), 40 + q_len, -3.0, 1.0);
    expect_gpu_matches_cpu(in.q, in.k, in.v, full,
                           describe(s, dtype(), " broadcast mask of the input dtype"));
  }
}

// gpt-oss sinks (float32, per query head) with and without a sliding-window style mask.
TEST_P(FlashAttentionCuda, SinksDecodeAndPrefill) {
  for (const std::int64_t q_len : {1, 4, 200}) {
    const Shape4 s{2, 8, 2, q_len, 600, 64};
    const Inputs in = make(s, dtype(), 50 + q_len);
    ops::AttentionOptions options;
    options.sinks = random_tensor({8}, DType::Float32, 60 + q_len, -1.0, 3.0);
    options.causal = true;
    expect_gpu_matches_cpu(in.q, in.k, in.v, options, describe(s, dtype(), " sinks causal"));
    std::vector<float> window(static_cast<std::size_t>(q_len) * 600, 0.0f);
    for (std::int64_t i = 0; i < q_len; ++i) {
      for (std::int64_t j = 0; j < 600; ++j) {
        if (j < 600 - q_len + i - 128) window[i * 600 + j] = -kInf;  // 128-key sliding window
      }
    }
    options.mask = Tensor::from_vector(window, {1, 1, q_len, 600});
    expect_gpu_matches_cpu(in.q, in.k, in.v, options,
                           describe(s, dtype(), " sinks, sliding window"));
  }
}

// Prefill through the tensor-core kernel: causal with q_len == k_len (tile edges at odd lengths)
// and q_len < k_len (a prompt continuing a cache), GQA, every head dim.
TEST_P(FlashAttentionCuda, PrefillCausalEveryHeadDim) {
  ops::AttentionOptions causal;
  causal.causal = true;
  std::uint64_t seed = 300;
  for (const std::int64_t d : {64, 80, 96, 128, 256}) {
    check({1, 8, 2, 130, 130, d}, causal, seed++, " causal square");
    check({2, 4, 4, 77, 333, d}, causal, seed++, " causal continuing a cache");
    check({1, 8, 1, 65, 65, d}, {}, seed++, " not causal");
  }
}

TEST_P(FlashAttentionCuda, PrefillLongPromptGqa) {
  ops::AttentionOptions causal;
  causal.causal = true;
  check({1, 8, 2, 1037, 1037, 128}, causal, 400, " causal");
  check({3, 4, 1, 9, 4099, 128}, causal, 401, " causal, 9 queries over 4k keys");
}

TEST_P(FlashAttentionCuda, PrefillMoreQueriesThanKeysAndExplicitScale) {
  ops::AttentionOptions options;
  options.causal = true;
  options.scale = 0.3;
  check({1, 2, 2, 100, 40, 64}, options, 500, " causal, early rows see nothing");
}

// Layouts the flash kernels do not take fall back to the older kernels and still agree: a head
// dim that is not a multiple of 8, and K/V views whose rows are not 16-byte aligned.
TEST_P(FlashAttentionCuda, FallbackLayouts) {
  check({1, 4, 2, 1, 300, 72 + 4}, {}, 600, " head dim 76 decode");
  check({1, 4, 2, 40, 40, 36}, {}, 601, " head dim 36 prefill");
  const Shape4 s{1, 4, 2, 20, 50, 64};
  const Inputs in = make(s, dtype(), 602);
  const Tensor k_wide = random_tensor({1, 2, 50, 65}, dtype(), 603, -2.0, 2.0);
  const Tensor v_wide = random_tensor({1, 2, 50, 65}, dtype(), 604);
  const Tensor k = k_wide.narrow(3, 1, 64), v = v_wide.narrow(3, 1, 64);
  const Tensor expected = ops::scaled_dot_product_attention(in.q, k, v);
  const Tensor actual = ops::scaled_dot_product_attention(
      on_gpu(in.q), on_gpu(k_wide).narrow(3, 1, 64), on_gpu(v_wide).narrow(3, 1, 64));
  EXPECT_TRUE(all_close(actual, expected.to_doubles(), tolerance_for(dtype()), "unaligned rows"));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FlashAttentionCuda,
                         ::testing::Values(DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

// ---- the kernel-level launcher with the key length in device memory ----

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(std::size_t bytes) {
    if (bytes > 0) EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

class FlashDecodeAttentionLauncher : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

// A KV cache of capacity 2048 with per-sequence lengths read on the device: each sequence's
// output equals the CPU op on its filled part. Then the launch is captured in a CUDA graph, the
// lengths change in device memory only, and the replay matches the new lengths.
TEST_P(FlashDecodeAttentionLauncher, DeviceLengthsAndGraphReplay) {
  const DType dtype = GetParam();
  constexpr std::int64_t kBatch = 3, kHq = 8, kHkv = 2, kCap = 2048, kD = 128;
  const Tensor q = random_tensor({kBatch, kHq, 1, kD}, dtype, 700, -2.0, 2.0);
  const Tensor k = random_tensor({kBatch, kHkv, kCap, kD}, dtype, 701, -2.0, 2.0);
  const Tensor v = random_tensor({kBatch, kHkv, kCap, kD}, dtype, 702);
  const Tensor sinks = random_tensor({kHq}, DType::Float32, 703, -1.0, 2.0);
  const Tensor q_gpu = on_gpu(q), k_gpu = on_gpu(k), v_gpu = on_gpu(v), sinks_gpu = on_gpu(sinks);
  const Tensor out = Tensor::zeros({kBatch, kHq, 1, kD}, dtype, Device::cuda(0));

  cuda::kernels::FlashDecodeArgs a;
  a.q = q_gpu.data_ptr();
  a.k = k_gpu.data_ptr();
  a.v = v_gpu.data_ptr();
  a.out = out.data_ptr();
  a.type = static_cast<cuda::kernels::Type>(dtype);
  a.batch = kBatch;
  a.q_heads = kHq;
  a.kv_heads = kHkv;
  a.q_len = 1;
  a.head_dim = a.v_dim = kD;
  for (int d = 0; d < 3; ++d) {
    a.q_strides[d] = q_gpu.stride(d);
    a.k_strides[d] = k_gpu.stride(d);
    a.v_strides[d] = v_gpu.stride(d);
    a.out_strides[d] = out.stride(d);
  }
  a.max_kv_len = kCap;
  a.kv_len_stride = 1;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
  a.sinks = static_cast<const float*>(sinks_gpu.data_ptr());
  ASSERT_TRUE(cuda::kernels::flash_decode_supported(a));
  a.splits = cuda::kernels::flash_decode_splits(a, 132);
  ASSERT_GT(a.splits, 1);
  DeviceBuffer scratch(cuda::kernels::flash_decode_scratch_bytes(a));
  DeviceBuffer lengths(kBatch * sizeof(std::int32_t));
  a.scratch = static_cast<float*>(scratch.ptr);
  a.kv_len = static_cast<const std::int32_t*>(lengths.ptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the inputs' copies have landed

  const auto expect_lengths = [&](const std::vector<std::int32_t>& n, const std::string& what) {
    ops::AttentionOptions options;
    options.sinks = sinks;
    for (std::int64_t b = 0; b < kBatch; ++b) {
      const Tensor expected =
          ops::scaled_dot_product_attention(q.narrow(0, b, 1), k.narrow(0, b, 1).narrow(2, 0, n[b]),
                                            v.narrow(0, b, 1).narrow(2, 0, n[b]), options);
      EXPECT_TRUE(
          all_close(out.narrow(0, b, 1), expected.to_doubles(), tolerance_for(dtype),
                    what + " sequence " + std::to_string(b) + " length " + std::to_string(n[b])));
    }
  };

  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const std::vector<std::int32_t> first = {2048, 1, 700};
  ASSERT_EQ(cudaMemcpy(lengths.ptr, first.data(), kBatch * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cuda::kernels::launch_flash_decode(a, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expect_lengths(first, "direct launch");

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const cudaError_t launched = cuda::kernels::launch_flash_decode(a, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(launched, cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (const std::vector<std::int32_t>& n :
       {std::vector<std::int32_t>{5, 1999, 0}, std::vector<std::int32_t>{64, 65, 1023}}) {
    ASSERT_EQ(cudaMemcpy(lengths.ptr, n.data(), kBatch * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    expect_lengths(n, "graph replay");
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Bad arguments are refused with a status, not launched.
TEST_P(FlashDecodeAttentionLauncher, RefusesWhatItCannotTake) {
  cuda::kernels::FlashDecodeArgs a;
  a.type = static_cast<cuda::kernels::Type>(GetParam());
  a.batch = 1;
  a.q_heads = a.kv_heads = 1;
  a.q_len = 1;
  a.head_dim = a.v_dim = 100;  // not a multiple of 8
  EXPECT_FALSE(cuda::kernels::flash_decode_supported(a));
  EXPECT_EQ(cuda::kernels::launch_flash_decode(a, nullptr), cudaErrorInvalidValue);
  a.head_dim = a.v_dim = 128;
  a.type = cuda::kernels::Type::Float32;
  EXPECT_FALSE(cuda::kernels::flash_decode_supported(a));
}

// Both prefill variants (16 and 32 query rows per warp; the op uses one) through the launcher,
// causal over a ragged length with GQA, sinks and a mask, against the CPU op.
TEST_P(FlashDecodeAttentionLauncher, PrefillBothRowsPerWarp) {
  const DType dtype = GetParam();
  for (const std::int64_t d : {64, 96, 128}) {
    const Shape4 s{2, 8, 2, 203, 250, d};
    const Inputs in = make(s, dtype, 800 + d);
    ops::AttentionOptions options;
    options.causal = true;
    options.sinks = random_tensor({8}, DType::Float32, 801, -1.0, 2.0);
    options.mask = random_tensor({2, 1, 203, 250}, DType::Float32, 802, -2.0, 0.5);
    const Tensor expected = ops::scaled_dot_product_attention(in.q, in.k, in.v, options);
    const Tensor q = on_gpu(in.q), k = on_gpu(in.k), v = on_gpu(in.v);
    const Tensor sinks = on_gpu(*options.sinks), mask = on_gpu(*options.mask);
    cuda::kernels::Attention a;
    a.q = q.data_ptr();
    a.k = k.data_ptr();
    a.v = v.data_ptr();
    a.type = static_cast<cuda::kernels::Type>(dtype);
    a.batch = s.batch;
    a.q_heads = s.q_heads;
    a.kv_heads = s.kv_heads;
    a.q_len = s.q_len;
    a.k_len = s.k_len;
    a.head_dim = a.v_dim = d;
    for (int i = 0; i < 4; ++i) {
      a.q_strides[i] = q.stride(i);
      a.k_strides[i] = k.stride(i);
      a.v_strides[i] = v.stride(i);
      a.mask_strides[i] = i == 1 ? 0 : mask.stride(i);
    }
    a.mask = mask.data_ptr();
    a.mask_type = cuda::kernels::Type::Float32;
    a.causal = true;
    a.scale = 1.0f / std::sqrt(static_cast<float>(d));
    a.sinks = static_cast<const float*>(sinks.data_ptr());
    ASSERT_TRUE(cuda::kernels::flash_prefill_supported(a));
    for (const int rows : {16, 32}) {
      const Tensor out = Tensor::zeros({s.batch, s.q_heads, s.q_len, d}, dtype, Device::cuda(0));
      a.out = out.data_ptr();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(cuda::kernels::launch_flash_prefill(a, nullptr, rows), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_TRUE(all_close(out, expected.to_doubles(), tolerance_for(dtype),
                            describe(s, dtype, " rows per warp " + std::to_string(rows))));
    }
    EXPECT_EQ(cuda::kernels::launch_flash_prefill(a, nullptr, 24), cudaErrorInvalidValue);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FlashDecodeAttentionLauncher,
                         ::testing::Values(DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

}  // namespace
}  // namespace strata

// Every flash-decoding kernel behind launch_flash_decode (FlashDecodeArgs::variant: 0 the default
// one-kernel decode, 1 split-K + combine, 2-5 the one-kernel's tile configurations, 6-9 the
// one-kernel with a head's splits merged inside a thread-block cluster, 10-14 the one-kernel on
// the tensor cores, 13 with the cluster merge) against the
// CPU attention op, the independent reference (same inputs, tolerance of one rounding to the dtype,
// tests/support/op_testing.h). Covered: head dims 64/80/96/128/256, GQA ratios 1-8, key lengths
// that are not multiples of any tile (1, 100, 1000, 4099) with 1, the chosen and the most splits
// (so the last block of a head merges 1 to 128 partials; a cluster takes at most 16 splits, some
// of them past the length and idle), key lengths read on the device with a
// sequence of length 0, causal speculative rows, masks, sinks, and a CUDA graph replayed many
// times (the ticket counters must come back to zero after every launch).

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata {
namespace {

namespace k = cuda::kernels;
using testing::all_close;
using testing::random_tensor;
using testing::tolerance_for;

constexpr int kVariants[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};

Tensor on_gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

struct Scratch {
  void* ptr = nullptr;
  explicit Scratch(std::size_t bytes) {
    // cudaMalloc's memory is not zero: the counters are cleared through the API.
    if (bytes > 0) EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess);
  }
  ~Scratch() { cudaFree(ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// The launches `f` makes on `stream`, captured once into an executable graph; `status` is the
// first failure (of the capture, a launch or the instantiation).
struct Captured {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t status = cudaSuccess;
  Captured(cudaStream_t stream, const std::function<cudaError_t()>& f) {
    status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (status != cudaSuccess) return;
    const cudaError_t launched = f();
    status = cudaStreamEndCapture(stream, &graph);
    if (status == cudaSuccess) status = launched;
    if (status == cudaSuccess) status = cudaGraphInstantiate(&exec, graph, 0);
  }
  ~Captured() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  Captured(const Captured&) = delete;
  Captured& operator=(const Captured&) = delete;
};

// Launcher arguments over GPU copies of q [b, hq, lq, d], k/v [b, hkv, cap, d] and out.
struct Problem {
  Tensor q, k, v, q_gpu, k_gpu, v_gpu, out;
  std::optional<Tensor> mask, mask_gpu, sinks, sinks_gpu;
  k::FlashDecodeArgs args;

  Problem(DType dtype, std::int64_t batch, std::int64_t hq, std::int64_t hkv, std::int64_t lq,
          std::int64_t cap, std::int64_t d, std::uint64_t seed) {
    q = random_tensor({batch, hq, lq, d}, dtype, seed, -2.0, 2.0);
    k = random_tensor({batch, hkv, cap, d}, dtype, seed + 1, -2.0, 2.0);
    v = random_tensor({batch, hkv, cap, d}, dtype, seed + 2);
    q_gpu = on_gpu(q);
    k_gpu = on_gpu(k);
    v_gpu = on_gpu(v);
    out = Tensor::zeros({batch, hq, lq, d}, dtype, Device::cuda(0));
    k::FlashDecodeArgs& a = args;
    a.q = q_gpu.data_ptr();
    a.k = k_gpu.data_ptr();
    a.v = v_gpu.data_ptr();
    a.out = out.data_ptr();
    a.type = static_cast<k::Type>(dtype);
    a.batch = static_cast<int>(batch);
    a.q_heads = static_cast<int>(hq);
    a.kv_heads = static_cast<int>(hkv);
    a.q_len = static_cast<int>(lq);
    a.head_dim = a.v_dim = static_cast<int>(d);
    for (int i = 0; i < 3; ++i) {
      a.q_strides[i] = q_gpu.stride(i);
      a.k_strides[i] = k_gpu.stride(i);
      a.v_strides[i] = v_gpu.stride(i);
      a.out_strides[i] = out.stride(i);
    }
    a.max_kv_len = static_cast<int>(cap);
    a.scale = 1.0f / std::sqrt(static_cast<float>(d));
  }

  void set_mask(const Tensor& m) {  // [b, hq, lq, cap] float32
    mask = m;
    mask_gpu = on_gpu(m);
    args.mask = mask_gpu->data_ptr();
    args.mask_type = k::Type::Float32;
    for (int i = 0; i < 4; ++i) args.mask_strides[i] = mask_gpu->stride(i);
  }
  void set_sinks(const Tensor& s) {
    sinks = s;
    sinks_gpu = on_gpu(s);
    args.sinks = static_cast<const float*>(sinks_gpu->data_ptr());
  }

  // The CPU op on sequence b's first n keys.
  Tensor expected(std::int64_t b, std::int64_t n) const {
    ops::AttentionOptions o;
    o.causal = args.causal;
    o.scale = args.scale;
    if (sinks) o.sinks = *sinks;
    if (mask) o.mask = mask->narrow(0, b, 1).narrow(3, 0, n);
    return ops::scaled_dot_product_attention(q.narrow(0, b, 1), k.narrow(0, b, 1).narrow(2, 0, n),
                                             v.narrow(0, b, 1).narrow(2, 0, n), o);
  }
};

std::string variant_name(int variant, int splits) {
  return " variant " + std::to_string(variant) + ", " + std::to_string(splits) + " splits";
}

class FlashDecodeVariants : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
    ASSERT_EQ(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  }
  int sms_ = 0;
};

// One sequence, the key length on the host (kv_len null): every variant, head dim, GQA ratio and
// split count matches the CPU op.
TEST_P(FlashDecodeVariants, EveryHeadDimRatioLengthAndSplitCount) {
  const DType dtype = GetParam();
  std::uint64_t seed = 1000;
  for (const std::int64_t d : {64, 80, 96, 128, 256}) {
    for (std::int64_t ratio = 1; ratio <= 8; ++ratio) {
      for (const std::int64_t n : {1, 100, 1000, 4099}) {
        Problem p(dtype, 1, 2 * ratio, 2, 1, n, d, seed += 3);
        const Tensor expected = p.expected(0, n);
        const std::string what = "d" + std::to_string(d) + " ratio " + std::to_string(ratio) +
                                 " keys " + std::to_string(n) + " " +
                                 testing::dtype_test_name(dtype);
        for (const int variant : kVariants) {
          p.args.variant = variant;
          ASSERT_TRUE(k::flash_decode_supported(p.args)) << what;
          const int chosen = k::flash_decode_splits(p.args, sms_);
          for (const int splits : {1, chosen, k::kFlashDecodeMaxSplits}) {
            p.args.splits = splits;
            Scratch scratch(k::flash_decode_scratch_bytes(p.args));
            p.args.scratch = static_cast<float*>(scratch.ptr);
            ASSERT_EQ(cudaMemset(p.out.data_ptr(), 0, p.out.nbytes()), cudaSuccess);
            ASSERT_EQ(k::flash_decode_clear_scratch(p.args, nullptr), cudaSuccess);
            ASSERT_EQ(k::launch_flash_decode(p.args, nullptr), cudaSuccess);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            EXPECT_TRUE(all_close(p.out, expected.to_doubles(), tolerance_for(dtype),
                                  what + variant_name(variant, splits)));
          }
        }
      }
    }
  }
}

// Batch 3 with lengths read on the device (one of them 0: zeros), three causal query positions
// (speculative decoding), a float32 mask and sinks; captured once per variant and replayed with
// new lengths eight times: a counter left non-zero by one launch would break the next. The
// one-kernel variants run with programmatic dependent launch (the graph's kernels overlap).
TEST_P(FlashDecodeVariants, DeviceLengthsCausalMaskSinksAndGraphReplays) {
  const DType dtype = GetParam();
  constexpr std::int64_t kBatch = 3, kHq = 12, kHkv = 2, kLq = 3, kCap = 3000, kD = 128;
  Problem p(dtype, kBatch, kHq, kHkv, kLq, kCap, kD, 77);
  p.args.causal = true;
  p.set_mask(random_tensor({kBatch, kHq, kLq, kCap}, DType::Float32, 80, -3.0, 1.0));
  p.set_sinks(random_tensor({kHq}, DType::Float32, 81, -1.0, 2.0));
  Scratch lengths(kBatch * sizeof(std::int32_t));
  p.args.kv_len = static_cast<const std::int32_t*>(lengths.ptr);
  p.args.kv_len_stride = 1;
  // Expected outputs per sequence and length, computed once.
  const std::vector<std::vector<std::int32_t>> rounds = {
      {3000, 1, 700}, {5, 2999, 0}, {64, 65, 1023}, {1, 2, 3}, {2048, 100, 2500}};
  std::vector<std::vector<Tensor>> expected;
  for (const auto& n : rounds) {
    expected.emplace_back();
    for (std::int64_t b = 0; b < kBatch; ++b) expected.back().push_back(p.expected(b, n[b]));
  }
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (const int variant : kVariants) {
    p.args.variant = variant;
    p.args.pdl = variant != 1;  // the one-kernel variants under programmatic dependent launch
    ASSERT_TRUE(k::flash_decode_supported(p.args));
    p.args.splits = std::max(2, k::flash_decode_splits(p.args, sms_));
    Scratch scratch(k::flash_decode_scratch_bytes(p.args));
    p.args.scratch = static_cast<float*>(scratch.ptr);
    ASSERT_EQ(k::flash_decode_clear_scratch(p.args, stream), cudaSuccess);
    const Captured graph(stream, [&] { return k::launch_flash_decode(p.args, stream); });
    ASSERT_EQ(graph.status, cudaSuccess) << variant_name(variant, p.args.splits);
    for (int replay = 0; replay < 8; ++replay) {
      const std::size_t r = static_cast<std::size_t>(replay) % rounds.size();
      ASSERT_EQ(cudaMemcpy(lengths.ptr, rounds[r].data(), kBatch * 4, cudaMemcpyHostToDevice),
                cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(graph.exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      for (std::int64_t b = 0; b < kBatch; ++b) {
        EXPECT_TRUE(all_close(
            p.out.narrow(0, b, 1), expected[r][b].to_doubles(), tolerance_for(dtype),
            "replay " + std::to_string(replay) + " sequence " + std::to_string(b) + " length " +
                std::to_string(rounds[r][b]) + variant_name(variant, p.args.splits)));
      }
    }
  }
  cudaStreamDestroy(stream);
}

// Sixteen query rows per kv head (ratio 8, two positions): the rows take two blocks' row chunks,
// each with its own counter (or cluster). `keys` and `repeats` smaller for the sanitizer runs.
void row_chunks_of_a_large_group(DType dtype, int sms, const std::vector<int>& variants,
                                 std::int64_t keys = 1500, int repeats = 3) {
  Problem p(dtype, 2, 16, 2, 2, keys, 96, 90);
  for (const int variant : variants) {
    p.args.variant = variant;
    p.args.splits = k::flash_decode_splits(p.args, sms);
    Scratch scratch(k::flash_decode_scratch_bytes(p.args));
    p.args.scratch = static_cast<float*>(scratch.ptr);
    ASSERT_EQ(k::flash_decode_clear_scratch(p.args, nullptr), cudaSuccess);
    for (int repeat = 0; repeat < repeats; ++repeat) {
      ASSERT_EQ(cudaMemset(p.out.data_ptr(), 0, p.out.nbytes()), cudaSuccess);
      ASSERT_EQ(k::launch_flash_decode(p.args, nullptr), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      for (std::int64_t b = 0; b < 2; ++b) {
        EXPECT_TRUE(all_close(p.out.narrow(0, b, 1), p.expected(b, keys).to_doubles(),
                              tolerance_for(dtype),
                              "sequence " + std::to_string(b) + " repeat " +
                                  std::to_string(repeat) + variant_name(variant, p.args.splits)));
      }
    }
  }
}

TEST_P(FlashDecodeVariants, RowChunksOfALargeGroup) {
  row_chunks_of_a_large_group(GetParam(), sms_,
                              std::vector<int>(std::begin(kVariants), std::end(kVariants)));
}

// The cluster and tensor-core variants alone, 300 keys, one launch each: short runs for
// compute-sanitizer's racecheck (which did not finish the full case on the cluster kernels).
TEST_P(FlashDecodeVariants, RowChunksOfALargeGroupClusterOnly) {
  row_chunks_of_a_large_group(GetParam(), sms_, {6, 7, 8, 9, 13}, 300, 1);
}
TEST_P(FlashDecodeVariants, RowChunksOfALargeGroupTensorCoreOnly) {
  row_chunks_of_a_large_group(GetParam(), sms_, {10, 11, 12, 13, 14}, 300, 1);
}

// The decode graph's order with pdl_prefetch: rope_kv_write writes this step's q and newest key
// and value, then flash decoding (both with programmatic dependent launch) reads the older keys
// before waiting for it and the newest after. Captured once, replayed with growing lengths and a
// new row each time: a kernel that read the newest key before the write would see the previous
// replay's bytes. Expected: the CPU op on what the GPU holds after the replay (q and the caches
// copied back), and the rows written must be the new ones.
TEST_P(FlashDecodeVariants, PrefetchBeforeTheWaitAfterTheKvWrite) {
  const DType dtype = GetParam();
  constexpr std::int64_t kHq = 8, kHkv = 2, kCap = 2100, kD = 128;
  Problem p(dtype, 1, kHq, kHkv, 1, kCap, kD, 300);
  Scratch words(16);  // past (int64), then the key count (int32)
  auto* past = static_cast<std::int64_t*>(words.ptr);
  auto* keys = reinterpret_cast<std::int32_t*>(past + 1);
  const Tensor src0 = random_tensor({1, (kHq + 2 * kHkv) * kD}, dtype, 301, -2.0, 2.0);
  const Tensor src = on_gpu(src0);
  const auto elem = static_cast<std::int64_t>(dtype_size(dtype));
  auto* base = static_cast<char*>(src.data_ptr());
  k::RopeKvWrite w;
  w.type = static_cast<k::Type>(dtype);
  w.batch = 1;
  w.q_heads = kHq;
  w.kv_heads = kHkv;
  w.head_dim = kD;
  w.capacity = kCap;
  w.q = base;
  w.k = base + kHq * kD * elem;
  w.v = base + (kHq + kHkv) * kD * elem;
  w.ldq = w.ldk = w.ldv = (kHq + 2 * kHkv) * kD;
  w.past = past;
  w.q_out = p.q_gpu.data_ptr();
  w.k_cache = p.k_gpu.data_ptr();
  w.v_cache = p.v_gpu.data_ptr();
  w.pdl = true;
  p.args.kv_len = keys;
  p.args.pdl = true;
  p.args.pdl_prefetch = true;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::uint64_t seed = 310;
  for (const int variant : kVariants) {
    if (variant == 1) continue;  // two kernels, no programmatic dependent launch
    p.args.variant = variant;
    p.args.splits = std::max(2, k::flash_decode_splits(p.args, sms_));
    Scratch scratch(k::flash_decode_scratch_bytes(p.args));
    p.args.scratch = static_cast<float*>(scratch.ptr);
    ASSERT_EQ(k::flash_decode_clear_scratch(p.args, stream), cudaSuccess);
    const Captured graph(stream, [&] {
      const cudaError_t wrote = k::rope_kv_write(w, stream);
      return wrote != cudaSuccess ? wrote : k::launch_flash_decode(p.args, stream);
    });
    ASSERT_EQ(graph.status, cudaSuccess) << variant_name(variant, p.args.splits);
    for (const std::int64_t n : {1, 2, 300, 1500, 2048, 2100}) {
      const Tensor row = random_tensor({1, (kHq + 2 * kHkv) * kD}, dtype, seed += 7, -2.0, 2.0);
      ASSERT_EQ(cudaMemcpy(src.data_ptr(), row.data_ptr(), row.nbytes(), cudaMemcpyHostToDevice),
                cudaSuccess);
      const std::int64_t at = n - 1;
      const auto count = static_cast<std::int32_t>(n);
      ASSERT_EQ(cudaMemcpy(past, &at, sizeof at, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(keys, &count, sizeof count, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(graph.exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const Tensor q = p.q_gpu.to(Device::cpu());
      const Tensor kc = p.k_gpu.to(Device::cpu()).narrow(2, 0, n);
      const Tensor vc = p.v_gpu.to(Device::cpu()).narrow(2, 0, n);
      const std::string what = "keys " + std::to_string(n) + variant_name(variant, p.args.splits);
      // The newest key row of kv head 1 is the source's (the write happened).
      const Tensor newest = kc.narrow(1, 1, 1).narrow(2, n - 1, 1).contiguous();
      EXPECT_EQ(newest.to_doubles(), row.narrow(1, (kHq + 1) * kD, kD).contiguous().to_doubles())
          << what;
      ops::AttentionOptions o;
      o.scale = p.args.scale;
      const Tensor expected = ops::scaled_dot_product_attention(q, kc, vc, o);
      EXPECT_TRUE(all_close(p.out, expected.to_doubles(), tolerance_for(dtype), what));
    }
  }
  cudaStreamDestroy(stream);
}

// The default (variant 0) takes the scratch merge (4) for few (batch, kv head, row chunk) groups
// or short caches and the cluster kernel's six-stage configuration (7) for 32 groups or more at
// 8k keys or more (sm_90): its split count is theirs.
TEST_P(FlashDecodeVariants, DefaultRoutesByGroupCountAndKeys) {
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major < 9) GTEST_SKIP() << "clusters need sm_90";
  struct Case {
    std::int64_t batch, keys;
    bool deep;
  };
  for (const Case c :
       {Case{1, 8192, false}, Case{3, 8192, false}, Case{4, 8191, false}, Case{4, 8192, true}}) {
    Problem p(GetParam(), c.batch, 32, 8, 1, c.keys, 128, 97);
    const auto splits_of = [&](int variant) {
      p.args.variant = variant;
      return k::flash_decode_splits(p.args, sms_);
    };
    const int by_default = splits_of(0), deep = splits_of(7), scratch = splits_of(4);
    const std::string what = "batch " + std::to_string(c.batch) + " keys " + std::to_string(c.keys);
    // Distinct where measured (device call 2: 16 / 7 splits against 33), so the route shows.
    if (c.batch == 1 || c.deep) EXPECT_NE(deep, scratch) << what;
    EXPECT_EQ(by_default, c.deep ? deep : scratch) << what;
  }
}

// Variants outside 0-14 are refused.
TEST_P(FlashDecodeVariants, RefusesAnUnknownVariant) {
  Problem p(GetParam(), 1, 4, 2, 1, 64, 64, 95);
  p.args.variant = 15;
  EXPECT_FALSE(k::flash_decode_supported(p.args));
  EXPECT_EQ(k::launch_flash_decode(p.args, nullptr), cudaErrorInvalidValue);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FlashDecodeVariants,
                         ::testing::Values(DType::BFloat16, DType::Float16),
                         [](const auto& info) { return testing::dtype_test_name(info.param); });

}  // namespace
}  // namespace strata

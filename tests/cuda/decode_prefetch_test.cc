// The decode step's L2 prefetch (src/cuda/decode_prefetch.cc, kernels::l2_prefetch): the plan's
// spec parser, the byte ranges each fetch covers, and the kernel (a hint: nothing it touches
// changes). The step with prefetches gives the same bits as without (decode_graph_test.cc).

#include "cuda/decode_prefetch.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernel_testing.h"
#include "models/model_testing.h"
#include "strata/core/error.h"
#include "strata/cuda/device.h"
#include "strata/models/decode_graph.h"
#include "strata/ops.h"

namespace strata {
namespace {

using cuda::L2PrefetchPlan;
using cuda::parse_l2_prefetch;

constexpr std::int64_t kMiB = 1024 * 1024;

TEST(L2PrefetchPlanTest, ParsesFetchesAndFlags) {
  using Mode = L2PrefetchPlan::Mode;
  const L2PrefetchPlan p = parse_l2_prefetch(
      " o@qkv:32, gu@o:0.5/chain,qkv@down:8,chain,last,blocks=64,down@gu:1/early");
  ASSERT_EQ(p.fetches.size(), 4u);
  EXPECT_EQ(p.fetches[0].target, L2PrefetchPlan::O);
  EXPECT_EQ(p.fetches[0].after, L2PrefetchPlan::Qkv);
  EXPECT_EQ(p.fetches[0].bytes, 32 * kMiB);
  EXPECT_EQ(p.fetches[1].target, L2PrefetchPlan::GateUp);
  EXPECT_EQ(p.fetches[1].after, L2PrefetchPlan::O);
  EXPECT_EQ(p.fetches[1].bytes, kMiB / 2);
  EXPECT_EQ(p.fetches[2].target, L2PrefetchPlan::Qkv);
  EXPECT_EQ(p.fetches[2].after, L2PrefetchPlan::Down);
  // `chain` applies to the items without a suffix, wherever it stands.
  EXPECT_EQ(p.fetches[0].mode, Mode::Chain);
  EXPECT_EQ(p.fetches[1].mode, Mode::Chain);
  EXPECT_EQ(p.fetches[2].mode, Mode::Chain);
  EXPECT_EQ(p.fetches[3].mode, Mode::Early);
  EXPECT_TRUE(p.evict_last);
  EXPECT_EQ(p.blocks, 64);
  EXPECT_FALSE(p.branches());
  EXPECT_TRUE(parse_l2_prefetch("").empty());
  const L2PrefetchPlan q = parse_l2_prefetch("down@gu:1,o@qkv:2/early");
  EXPECT_EQ(q.fetches[0].mode, Mode::Branch);
  EXPECT_EQ(q.fetches[1].mode, Mode::Early);
  EXPECT_TRUE(q.branches());
  EXPECT_EQ(parse_l2_prefetch("o@qkv:1,early").fetches[0].mode, Mode::Early);
}

TEST(L2PrefetchPlanTest, BadSpecsNameTheItem) {
  for (const std::string bad :
       {"o@qkv", "o:32", "x@qkv:1", "o@y:1", "o@qkv:0", "o@qkv:-2", "o@qkv:3MB", "blocks=0",
        "blocks=", "fast", "o@qkv:1/fast", "o@qkv:/chain"}) {
    try {
      parse_l2_prefetch(bad);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

// Two layers of 7B-like proportions in miniature (cpu tensors: only addresses and sizes count).
struct MiniModel {
  std::vector<cuda::DecodeLayer> layers;
  Tensor head = Tensor::zeros({64, 32}, DType::BFloat16);
  MiniModel() {
    for (int i = 0; i < 2; ++i) {
      cuda::DecodeLayer l;
      l.q = Tensor::zeros({32, 32}, DType::BFloat16);  // 2 KiB each
      l.k = Tensor::zeros({16, 32}, DType::BFloat16);  // 1 KiB
      l.v = Tensor::zeros({16, 32}, DType::BFloat16);
      l.o = Tensor::zeros({32, 32}, DType::BFloat16);
      l.gate = Tensor::zeros({64, 32}, DType::BFloat16);  // 4 KiB
      l.up = Tensor::zeros({64, 32}, DType::BFloat16);
      l.down = Tensor::zeros({32, 64}, DType::BFloat16);
      layers.push_back(l);
    }
  }
};

L2PrefetchPlan plan_of(int target, int after, std::int64_t bytes) {
  L2PrefetchPlan p;
  p.fetches.push_back({target, after, bytes, L2PrefetchPlan::Mode::Branch});
  return p;
}

TEST(L2PrefetchPlanTest, RangesFollowTheTargetsWarpOrder) {
  const MiniModel m;
  // o_proj after q/k/v of the same layer, capped at its size.
  auto a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::O, L2PrefetchPlan::Qkv, kMiB), m.layers,
                                  m.head, 0, L2PrefetchPlan::Qkv, L2PrefetchPlan::Mode::Branch);
  ASSERT_EQ(a.count, 1);
  EXPECT_EQ(a.ptr[0], m.layers[0].o.data_ptr());
  EXPECT_EQ(a.bytes[0], 2048);
  // Nothing at the other points.
  EXPECT_EQ(cuda::l2_fetches_after(plan_of(L2PrefetchPlan::O, L2PrefetchPlan::Qkv, kMiB), m.layers,
                                   m.head, 0, L2PrefetchPlan::O, L2PrefetchPlan::Mode::Branch)
                .count,
            0);
  // gate/up: half from each, in step.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::GateUp, L2PrefetchPlan::O, 1000), m.layers,
                             m.head, 1, L2PrefetchPlan::O, L2PrefetchPlan::Mode::Branch);
  ASSERT_EQ(a.count, 2);
  EXPECT_EQ(a.ptr[0], m.layers[1].gate.data_ptr());
  EXPECT_EQ(a.ptr[1], m.layers[1].up.data_ptr());
  EXPECT_EQ(a.bytes[0], 500);
  EXPECT_EQ(a.bytes[1], 500);
  // q/k/v after down is the next layer's: all of q, then into k.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::Qkv, L2PrefetchPlan::Down, 2048 + 512),
                             m.layers, m.head, 0, L2PrefetchPlan::Down,
                             L2PrefetchPlan::Mode::Branch);
  ASSERT_EQ(a.count, 2);
  EXPECT_EQ(a.ptr[0], m.layers[1].q.data_ptr());
  EXPECT_EQ(a.bytes[0], 2048);
  EXPECT_EQ(a.ptr[1], m.layers[1].k.data_ptr());
  EXPECT_EQ(a.bytes[1], 512);
  // ... and after the last layer the head's rows.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::Qkv, L2PrefetchPlan::Down, 1024), m.layers,
                             m.head, 1, L2PrefetchPlan::Down, L2PrefetchPlan::Mode::Branch);
  ASSERT_EQ(a.count, 1);
  EXPECT_EQ(a.ptr[0], m.head.data_ptr());
  EXPECT_EQ(a.bytes[0], 1024);
  // o_proj after gate/up is the next layer's; after the last layer there is none.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::O, L2PrefetchPlan::GateUp, 64), m.layers,
                             m.head, 0, L2PrefetchPlan::GateUp, L2PrefetchPlan::Mode::Branch);
  ASSERT_EQ(a.count, 1);
  EXPECT_EQ(a.ptr[0], m.layers[1].o.data_ptr());
  EXPECT_EQ(cuda::l2_fetches_after(plan_of(L2PrefetchPlan::O, L2PrefetchPlan::GateUp, 64), m.layers,
                                   m.head, 1, L2PrefetchPlan::GateUp, L2PrefetchPlan::Mode::Branch)
                .count,
            0);
  // A q/k/v with neither dense nor quantized tensors adds nothing.
  MiniModel quantized;
  quantized.layers[1].q = quantized.layers[1].k = quantized.layers[1].v = Tensor();
  EXPECT_EQ(cuda::l2_fetches_after(plan_of(L2PrefetchPlan::Qkv, L2PrefetchPlan::Down, 64),
                                   quantized.layers, quantized.head, 0, L2PrefetchPlan::Down,
                                   L2PrefetchPlan::Mode::Branch)
                .count,
            0);
}

// A quantized layer's GEMVs: each projection's packed weight (the budget's first bytes), then
// its scales and zero points whole; q before k before v, gate before up.
TEST(L2PrefetchPlanTest, QuantizedProjectionsTakeTheirPackedTensors) {
  using Mode = L2PrefetchPlan::Mode;
  const auto packed = [](std::int64_t out, bool zeros) {
    ops::QuantizedWeight w;
    w.format = ops::QuantFormat::CompressedTensors;
    w.weight = Tensor::zeros({out, 4}, DType::Int32);    // 16 bytes a row
    w.scale = Tensor::zeros({out, 1}, DType::BFloat16);  // 2 bytes a row
    if (zeros) w.zeros = Tensor::zeros({out / 8, 1}, DType::Int32);
    return w;
  };
  MiniModel m;
  for (cuda::DecodeLayer& l : m.layers) {
    l.q = l.k = l.v = l.o = l.gate = l.up = l.down = Tensor();
    l.q_quant = packed(64, true);  // 1024 bytes, scales 128, zeros 32
    l.k_quant = packed(32, true);  // 512, 64, 16
    l.v_quant = packed(32, true);
    l.o_quant = packed(64, false);
    l.gate_quant = packed(128, false);  // 2048, 256
    l.up_quant = packed(128, false);
    l.down_quant = packed(64, false);
  }
  // The next layer's q/k/v after down: all of q with its scales and zeros, then 100 bytes of k.
  auto a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::Qkv, L2PrefetchPlan::Down, 1024 + 100),
                                  m.layers, m.head, 0, L2PrefetchPlan::Down, Mode::Branch);
  const cuda::DecodeLayer& next = m.layers[1];
  ASSERT_EQ(a.count, 6);
  const std::vector<std::pair<const void*, std::int64_t>> qkv = {
      {next.q_quant->weight.data_ptr(), 1024}, {next.q_quant->scale.data_ptr(), 128},
      {next.q_quant->zeros->data_ptr(), 32},   {next.k_quant->weight.data_ptr(), 100},
      {next.k_quant->scale.data_ptr(), 64},    {next.k_quant->zeros->data_ptr(), 16}};
  for (int i = 0; i < a.count; ++i) {
    EXPECT_EQ(a.ptr[i], qkv[static_cast<std::size_t>(i)].first) << i;
    EXPECT_EQ(a.bytes[i], qkv[static_cast<std::size_t>(i)].second) << i;
  }
  // o_proj after q/k/v of the same layer: its weight capped at its size, and its scales.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::O, L2PrefetchPlan::Qkv, kMiB), m.layers,
                             m.head, 0, L2PrefetchPlan::Qkv, Mode::Branch);
  ASSERT_EQ(a.count, 2);
  EXPECT_EQ(a.ptr[0], m.layers[0].o_quant->weight.data_ptr());
  EXPECT_EQ(a.bytes[0], 1024);
  EXPECT_EQ(a.ptr[1], m.layers[0].o_quant->scale.data_ptr());
  EXPECT_EQ(a.bytes[1], 128);
  // gate/up after o_proj: all of gate first, then up with what is left.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::GateUp, L2PrefetchPlan::O, 2048 + 500),
                             m.layers, m.head, 0, L2PrefetchPlan::O, Mode::Branch);
  ASSERT_EQ(a.count, 4);
  EXPECT_EQ(a.ptr[0], m.layers[0].gate_quant->weight.data_ptr());
  EXPECT_EQ(a.bytes[0], 2048);
  EXPECT_EQ(a.bytes[1], 256);
  EXPECT_EQ(a.ptr[2], m.layers[0].up_quant->weight.data_ptr());
  EXPECT_EQ(a.bytes[2], 500);
  EXPECT_EQ(a.ptr[3], m.layers[0].up_quant->scale.data_ptr());
  // down after gate/up: its first bytes and its scales.
  a = cuda::l2_fetches_after(plan_of(L2PrefetchPlan::Down, L2PrefetchPlan::GateUp, 10), m.layers,
                             m.head, 0, L2PrefetchPlan::GateUp, Mode::Branch);
  ASSERT_EQ(a.count, 2);
  EXPECT_EQ(a.ptr[0], m.layers[0].down_quant->weight.data_ptr());
  EXPECT_EQ(a.bytes[0], 10);
}

// The kernel over ranges of odd sizes, in every mode: it returns success, changes no byte, and a
// misaligned range is refused.
TEST(L2PrefetchKernelTest, LeavesMemoryAloneAndRefusesMisalignment) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const Tensor host = Tensor::arange(300000, DType::Int32);
  const Tensor buf = host.to(Device::cuda(0));
  const auto* base = static_cast<const char*>(buf.data_ptr());
  for (const bool pdl : {false, true}) {
    for (const bool early : {false, true}) {
      for (const bool last : {false, true}) {
        cuda::kernels::L2Prefetch a;
        a.ptr[0] = base;
        a.bytes[0] = 1000000;  // 61 chunks and a partial one
        a.ptr[1] = base + 1000000 + 16 * 3;
        a.bytes[1] = 77;  // rounded down to 64
        a.ptr[2] = base + 16;
        a.bytes[2] = 0;
        a.count = 3;
        a.pdl = pdl;
        a.early = early;
        a.evict_last = last;
        a.blocks = last ? 3 : 0;
        ASSERT_EQ(cuda::kernels::l2_prefetch(a, testing::kernel_stream()), cudaSuccess);
      }
    }
  }
  ASSERT_EQ(cudaStreamSynchronize(testing::kernel_stream()), cudaSuccess);
  EXPECT_EQ(buf.to(Device::cpu()).to_vector<std::int32_t>(), host.to_vector<std::int32_t>());
  cuda::kernels::L2Prefetch bad;
  bad.ptr[0] = base + 8;
  bad.bytes[0] = 64;
  bad.count = 1;
  EXPECT_EQ(cuda::kernels::l2_prefetch(bad, testing::kernel_stream()), cudaErrorInvalidValue);
}

// A bad spec keeps the module path, with the parser's message as the reason.
TEST(L2PrefetchPlanTest, BadSpecRefusesTheModel) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const auto f = testing::load_model_fixture("llama");
  auto model = testing::load_fixture_model(f, Device::cuda(0), DType::BFloat16);
  models::DecodeGraphOptions options;
  options.l2_prefetch = "o@qkv:big";
  const models::DecodeGraphRunner runner(*model, options);
  EXPECT_FALSE(runner.usable());
  EXPECT_NE(runner.reason().find("o@qkv:big"), std::string::npos) << runner.reason();
}

}  // namespace
}  // namespace strata

// The cost model's predictions are formulas over the machine constants (cost_model.h): here the
// constants are injected and every expected value is the formula worked by hand, written out as
// arithmetic so it can be checked against the header's comments.

#include "strata/engine/cost_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "strata/core/error.h"

namespace strata::engine {
namespace {

using placement::ExecutionPolicy;

// An H100-like host, in round numbers (GB/s, GFLOP/s, us).
MachineConstants machine() {
  MachineConstants c;
  c.h2d_gbps = 50;
  c.host_read_gbps = 100;
  c.cpu_gemv_gbps = {{1, 10}, {16, 100}};
  c.cpu_gemm_gflops = 1000;
  c.gpu_hbm_gbps = 3000;
  c.gpu_gemm_gflops = 500000;
  c.disk_read_gbps = 2;
  c.page_cache_read_gbps = 20;
  c.transfer_latency_us = 10;
  c.threads = 16;
  return c;
}

// 400 MB of bf16 weights (200 M parameters: 400 M FLOPs per token), 8 KiB activations per token.
UnitWork layer(Tier tier) {
  UnitWork w;
  w.bytes = 400'000'000;
  w.flops_per_token = 400'000'000;
  w.activation_bytes_per_token = 8192;
  w.tier = tier;
  return w;
}

// 2 x (activations / h2d + latency)
double io(double tokens) { return 2 * (8192 * tokens / 50e9 + 10e-6); }

TEST(CostModel, UnitTimesAreTheFormulas) {
  const CostModel model(machine());
  const UnitWork cpu = layer(Tier::Cpu);
  EXPECT_DOUBLE_EQ(model.gpu_seconds(cpu, 1), 400e6 / 3000e9);
  EXPECT_DOUBLE_EQ(model.gpu_seconds(cpu, 4096), 400e6 * 4096 / 500000e9);
  EXPECT_DOUBLE_EQ(model.stream_seconds(cpu, 1), 400e6 / 50e9);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cpu, 1), 400e6 / 100e9 + io(1));
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cpu, 512), 400e6 * 512 / 1000e9 + io(512));
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cpu, 1, /*activations_cross_pcie=*/false), 400e6 / 100e9);
  // Disk in the page cache: streaming is bounded by the page-cache read (the disk workers' copy
  // into staging overlaps the PCIe copy), the cpu reads the mapping at its matrix-vector rate;
  // out of the cache both read from the disk.
  const UnitWork cached = layer(Tier::Disk);
  EXPECT_DOUBLE_EQ(model.stream_seconds(cached, 1), 400e6 / 20e9);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cached, 1), 400e6 / 100e9 + io(1));
  UnitWork cold = layer(Tier::Disk);
  cold.disk_cached = false;
  EXPECT_DOUBLE_EQ(model.stream_seconds(cold, 1), 400e6 / 2e9);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cold, 1), 400e6 / 2e9 + io(1));
  // A lookup reads rows only, except when streamed.
  UnitWork embedding = layer(Tier::Cpu);
  embedding.lookup = true;
  embedding.flops_per_token = 0;
  EXPECT_DOUBLE_EQ(model.cpu_seconds(embedding, 3), 3 * 8192 / 100e9 + io(3));
  EXPECT_DOUBLE_EQ(model.gpu_seconds(embedding, 3), 3 * 8192 / 3000e9);
  EXPECT_DOUBLE_EQ(model.stream_seconds(embedding, 3), 400e6 / 50e9);
}

TEST(CostModel, TheThresholdIsWhereTheCpuStopsWinning) {
  const CostModel model(machine());
  const UnitWork w = layer(Tier::Cpu);
  // For 10 <= n < 10000: cpu(n) = 400e6 n / 1000e9 + io(n), stream(n) = 400e6 / 50e9 = 8 ms, so
  // the cpu wins while n <= (8e-3 - 2e-5) / (4e-4 + 2 * 8192 / 50e9) = 19.93.
  const double slope = 400e6 / 1000e9 + 2 * 8192 / 50e9;
  EXPECT_EQ(model.cpu_token_threshold(w), static_cast<std::int64_t>((8e-3 - 2e-5) / slope));
  EXPECT_EQ(model.cpu_token_threshold(w), 19);
  EXPECT_EQ(model.best_policy(w, 1), ExecutionPolicy::Cpu);
  EXPECT_EQ(model.best_policy(w, 19), ExecutionPolicy::Cpu);
  EXPECT_EQ(model.best_policy(w, 20), ExecutionPolicy::Stream);
  EXPECT_DOUBLE_EQ(model.best_seconds(w, 512), 400e6 / 50e9);
  // A cpu slower than PCIe never wins.
  MachineConstants slow = machine();
  slow.cpu_gemv_gbps = {{16, 40}};
  EXPECT_EQ(CostModel(slow).cpu_token_threshold(w), 0);
  // Without a GPU everything computes on the cpu, and no activation crosses PCIe.
  MachineConstants cpu_only = machine();
  cpu_only.h2d_gbps = cpu_only.gpu_hbm_gbps = cpu_only.gpu_gemm_gflops = 0;
  const CostModel host(cpu_only);
  EXPECT_EQ(host.cpu_token_threshold(w), kAlwaysCpu);
  EXPECT_EQ(host.best_policy(w, 4096), ExecutionPolicy::Cpu);
  EXPECT_DOUBLE_EQ(host.cpu_seconds(w, 1), 400e6 / 100e9);
}

TEST(CostModel, TheGemvRateInterpolatesBetweenMeasuredThreadCounts) {
  const MachineConstants c = machine();
  EXPECT_DOUBLE_EQ(c.cpu_gemv_rate(1), 10);
  EXPECT_DOUBLE_EQ(c.cpu_gemv_rate(16), 100);
  EXPECT_DOUBLE_EQ(c.cpu_gemv_rate(6), 10 + 90.0 * 5 / 15);
  EXPECT_DOUBLE_EQ(c.cpu_gemv_rate(64), 100);
  EXPECT_DOUBLE_EQ(MachineConstants{}.cpu_gemv_rate(4), 0);
}

TEST(CostModel, ProfilesBecomeUnitWork) {
  placement::UnitProfile profile;
  profile.bytes = 1000;
  profile.file_bytes = 600;
  profile.dtype = DType::BFloat16;
  profile.activation_bytes_per_token = 64;
  const UnitWork w = unit_work_of(profile);
  EXPECT_EQ(w.bytes, 1000);
  EXPECT_EQ(w.flops_per_token, 2 * 500);
  EXPECT_EQ(w.tier, Tier::Disk);
  EXPECT_EQ(w.activation_bytes_per_token, 64);
  EXPECT_EQ(w.ops, 0);
  profile.modules = 13;
  EXPECT_EQ(unit_work_of(profile).ops, ops_of_modules(13));
  profile.file_bytes = 0;
  EXPECT_EQ(unit_work_of(profile).tier, Tier::Cpu);
  const placement::CpuTokenThreshold threshold = cost_model_threshold(CostModel(machine()));
  profile.bytes = 400'000'000;
  profile.activation_bytes_per_token = 8192;
  EXPECT_EQ(threshold(profile), CostModel(machine()).cpu_token_threshold(layer(Tier::Cpu)));
}

TEST(CostModel, PlanPredictionsSumTheUnits) {
  const CostModel model(machine());
  UnitWork resident = layer(Tier::Gpu);
  resident.bytes = 1'000'000'000;
  resident.flops_per_token = 1'000'000'000;
  const std::vector<PlannedUnit> units = {{"model.resident", resident},
                                          {"model.layers.1", layer(Tier::Cpu)},
                                          {"model.layers.2", layer(Tier::Disk)}};
  PredictOptions options;
  options.prefill_tokens = 512;
  options.checkpoint_bytes = 1'800'000'000;
  const PlanPrediction p = predict_plan(model, units, options);

  const double gpu_decode = 1e9 / 3000e9;
  const double cpu_decode = 400e6 / 100e9 + io(1);
  EXPECT_DOUBLE_EQ(p.decode_seconds_best, gpu_decode + cpu_decode + cpu_decode);
  EXPECT_DOUBLE_EQ(p.decode_seconds_stream, gpu_decode + 400e6 / 50e9 + 400e6 / 20e9);
  const double gpu_prefill = 1e9 * 512 / 500000e9;
  EXPECT_DOUBLE_EQ(p.prefill_seconds_best, gpu_prefill + 400e6 / 50e9 + 400e6 / 20e9);
  EXPECT_DOUBLE_EQ(p.prefill_seconds_stream, p.prefill_seconds_best);
  EXPECT_DOUBLE_EQ(p.prefill_tokens_per_second(true), 512 / p.prefill_seconds_best);
  EXPECT_DOUBLE_EQ(p.load_seconds, 1.8e9 / 20e9 + 1e9 / 50e9 + 400e6 / 100e9);
  ASSERT_EQ(p.units.size(), 3u);
  EXPECT_EQ(p.units[0].decode, "gpu");
  EXPECT_EQ(p.units[1].decode, "cpu");
  EXPECT_EQ(p.units[1].prefill, "stream");
  EXPECT_EQ(p.units[1].cpu_max_tokens, 19);
  EXPECT_EQ(p.units[2].decode, "cpu");
  EXPECT_EQ(p.units[2].tier, Tier::Disk);

  // A batch of 4: decode steps carry 4 tokens, prefill 4 x 512.
  options.batch = 4;
  const PlanPrediction batched = predict_plan(model, units, options);
  EXPECT_DOUBLE_EQ(batched.decode_seconds_best, gpu_decode + 2 * (400e6 / 100e9 + io(4)));
  EXPECT_EQ(batched.prefill_tokens, 2048);

  // On the cpu alone (no GPU main device) every unit computes on the cpu, without PCIe.
  options.batch = 1;
  options.gpu_main = false;
  const PlanPrediction host = predict_plan(model, units, options);
  EXPECT_DOUBLE_EQ(host.decode_seconds_best, 1e9 / 100e9 + 2 * 400e6 / 100e9);
  EXPECT_DOUBLE_EQ(host.decode_seconds_stream, host.decode_seconds_best);
  EXPECT_EQ(host.units[0].decode, "cpu");
}

// A block's routed experts: 128 experts of 9.375 MB (1.2 GB), 8 selected per token.
UnitWork routed_experts(Tier tier) {
  UnitWork w = layer(tier);
  w.bytes = 1'200'000'000;
  w.flops_per_token = 1'200'000'000;
  w.experts = 128;
  w.top_k = 8;
  return w;
}

TEST(CostModel, RoutedExpertsReadOnlyTheSelectedExperts) {
  const CostModel model(machine());
  const UnitWork w = routed_experts(Tier::Cpu);
  // One token reads k/E of the bytes; n tokens E x (1 - (1 - k/E)^n) experts (uniform routing).
  EXPECT_DOUBLE_EQ(selected_fraction(w, 1), 8.0 / 128);
  EXPECT_DOUBLE_EQ(selected_fraction(w, 3), 1 - (120.0 / 128) * (120.0 / 128) * (120.0 / 128));
  EXPECT_DOUBLE_EQ(selected_fraction(layer(Tier::Cpu), 5), 1.0);
  const double one = 1.2e9 * 8 / 128;  // bytes one token reads
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 1), one / 100e9 + io(1));
  EXPECT_DOUBLE_EQ(model.stream_seconds(w, 1), one / 50e9);
  EXPECT_DOUBLE_EQ(model.gpu_seconds(w, 1), one / 3000e9);
  // FLOPs: each token through k of the E experts.
  const double f512 = 1 - std::pow(120.0 / 128, 512);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 512, false),
                   std::max(1.2e9 * f512 / 100e9, 1.2e9 * 512 * 8 / 128 / 1000e9));

  // Ops: only the selected experts' run (k/E of the block's at one token), on the cpu and the GPU.
  MachineConstants with_ops = machine();
  with_ops.cpu_op_us = 8;
  with_ops.gpu_launch_us = 4;
  const CostModel op_model(with_ops);
  UnitWork counted = w;
  counted.ops = 960;  // 128 experts of 5 modules, 3/2 ops each
  EXPECT_DOUBLE_EQ(op_model.cpu_seconds(counted, 1), one / 100e9 + 960 * 8.0 / 128 * 8e-6 + io(1));
  EXPECT_DOUBLE_EQ(op_model.gpu_seconds(counted, 1), one / 3000e9 + 960 * 8.0 / 128 * 4e-6);
  EXPECT_DOUBLE_EQ(
      op_model.cpu_seconds(counted, 512, false),
      std::max(1.2e9 * f512 / 100e9, 1.2e9 * 512 * 8 / 128 / 1000e9) + 960 * f512 * 8e-6);

  // A plan: a quarter of the selected experts come from the GPU cache, the rest on the cpu.
  UnitWork cached = w;
  cached.cache_hit_rate = 0.25;
  PredictOptions options;
  const PlanPrediction p = predict_plan(model, {{"model.layers.0.mlp.experts", cached}}, options);
  EXPECT_DOUBLE_EQ(p.decode_seconds_best, 0.25 * (one / 3000e9) + 0.75 * (one / 100e9 + io(1)));
  EXPECT_DOUBLE_EQ(p.decode_seconds_stream, 0.25 * (one / 3000e9) + 0.75 * (one / 50e9));
  ASSERT_EQ(p.units.size(), 1u);
  EXPECT_EQ(p.units[0].decode_expert_bytes, static_cast<std::int64_t>(one * 0.75));
  EXPECT_EQ(p.units[0].decode, "cpu");
}

// The plan predicts what a block runs: a prefill's selected experts stream (32 tokens each at
// 512 tokens: past the cpu's kCpuExpertQueueRows), never split, even where the model rates the
// cpu or a split faster for the block as a whole; a decode step's experts may compute on the cpu.
TEST(CostModel, RoutedExpertsArePlannedAsTheirBlockRunsThem) {
  MachineConstants c = machine();
  c.cpu_gemm_gflops = 100'000;  // a cpu fast enough to beat PCIe on a whole prefill
  const CostModel model(c);
  const UnitWork w = routed_experts(Tier::Cpu);
  EXPECT_DOUBLE_EQ(tokens_per_selected_expert(w, 1), 1.0);
  EXPECT_NEAR(tokens_per_selected_expert(w, 512), 512.0 * 8 / 128, 0.01);
  EXPECT_DOUBLE_EQ(tokens_per_selected_expert(layer(Tier::Cpu), 7), 7.0);
  ASSERT_LT(model.cpu_seconds(w, 512), model.stream_seconds(w, 512));
  EXPECT_EQ(model.best_policy(w, 512), ExecutionPolicy::Stream);
  EXPECT_DOUBLE_EQ(model.best_seconds(w, 512), model.stream_seconds(w, 512));
  EXPECT_EQ(model.best_policy(w, 1), ExecutionPolicy::Cpu);
  // Four tokens select about 30 experts of 128: one token each, still the cpu's.
  EXPECT_EQ(model.best_policy(w, 4), ExecutionPolicy::Cpu);
  const PlanPrediction p = predict_plan(model, {{"model.layers.0.mlp.experts", w}}, {});
  EXPECT_DOUBLE_EQ(p.prefill_seconds_best, p.prefill_seconds_stream);
  EXPECT_EQ(p.units[0].prefill, "stream");
  EXPECT_EQ(p.units[0].decode, "cpu");
  // Any other unit still takes what beats streaming on this machine (the cpu or a split).
  EXPECT_NE(model.best_policy(layer(Tier::Cpu), 512), ExecutionPolicy::Stream);
}

// Under --offload-policy auto a routed expert's policy is its gate projection's, planned per
// unit: charged a whole activation round trip, a 3 MB Qwen3-30B-A3B projection streamed at decode
// on session 7's call 2 host (57 us over PCIe against 35 us of reading, 8 us of ops and a 19 us
// round trip), although its block makes that round trip once per step for all its cpu experts.
// Planned as the block's (block_projections: the round trip shared, the expert rate), it computes
// on the cpu at decode and streams at prefill-sized token counts.
TEST(CostModel, RoutedExpertProjectionsShareTheBlocksRoundTrip) {
  MachineConstants c = machine();  // session 7, device call 2's constants, rounded
  c.h2d_gbps = 54.5;
  c.transfer_latency_us = 9.5;
  c.cpu_gemv_layer_gbps = 89;
  c.cpu_op_us = 4;
  c.gpu_launch_us = 7;
  c.cpu_gemm_gflops = 3000;
  c.cpu_expert_gbps = 81.7;
  c.moe_block_us = 154;
  placement::UnitProfile gate;
  gate.module_class = "Linear";
  gate.bytes = 768 * 2048 * 2;
  gate.dtype = DType::BFloat16;
  gate.activation_bytes_per_token = 2048 * 2;
  gate.modules = 1;
  const CostModel model(c);
  const double bytes = 768.0 * 2048 * 2;
  const double trip = 2 * (4096 / 54.5e9 + 9.5e-6);
  // Through its own hook: the layer rate, its ops and a whole round trip; streaming wins.
  const UnitWork alone = unit_work_of(gate);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(alone, 1), bytes / 89e9 + 2 * 4e-6 + trip);
  EXPECT_DOUBLE_EQ(model.stream_seconds(alone, 1),
                   std::max(bytes / 54.5e9, model.gpu_seconds(alone, 1)));
  EXPECT_EQ(cost_model_planner(model)(gate).cpu_max_tokens, 0);
  // Run by its block (8 experts x 3 projections share the round trip): the expert rate, no op
  // term (the rate's measurement runs whole steps), the round trip left to moe_block_us.
  gate.block_projections = 24;
  const UnitWork shared = unit_work_of(gate);
  EXPECT_DOUBLE_EQ(shared.round_trip_share, 1.0 / 24);
  EXPECT_DOUBLE_EQ(selected_fraction(shared, 7), 1.0) << "a selected expert is read whole";
  EXPECT_DOUBLE_EQ(model.cpu_seconds(shared, 1), bytes / 81.7e9);
  const std::int64_t threshold = model.cpu_token_threshold(shared);
  EXPECT_GE(threshold, placement::kCpuExpertQueueRows) << "decode computes on the cpu";
  EXPECT_LT(threshold, 512) << "a prefill-sized expert batch streams";
  // FLOP-bound past the threshold: 2 x params x tokens at the cpu's GEMM rate.
  EXPECT_GT(2.0 * bytes / 2 * static_cast<double>(threshold + 1) / 3000e9,
            model.stream_seconds(shared, threshold + 1));
  // The planner keeps the cpu to the rows the experts' queue runs (the rate measured); past them
  // (one expert per task, no constant for it) the expert streams.
  EXPECT_EQ(cost_model_planner(model)(gate).cpu_max_tokens, placement::kCpuExpertQueueRows);
  // Without moe_block_us the cpu time keeps the projection's share of the round trip.
  c.moe_block_us = 0;
  EXPECT_DOUBLE_EQ(CostModel(c).cpu_seconds(shared, 1), bytes / 81.7e9 + trip / 24);
  EXPECT_EQ(cost_model_planner(CostModel(c))(gate).cpu_max_tokens, placement::kCpuExpertQueueRows);
  // Without a GPU everything computes on the cpu, whatever the rows.
  c.h2d_gbps = c.gpu_hbm_gbps = c.gpu_gemm_gflops = 0;
  EXPECT_EQ(cost_model_planner(CostModel(c))(gate).cpu_max_tokens, kAlwaysCpu);
}

TEST(CostModel, RoutedExpertsTakeTheCalibratedExpertRateAndABlockCost) {
  MachineConstants c = machine();
  c.cpu_op_us = 8;
  c.gpu_launch_us = 4;
  c.cpu_expert_gbps = 80;  // a step's experts whole (their activations and dispatch included)
  c.moe_block_us = 40;     // the block's wait, copies, dispatch and k-way sum
  const CostModel model(c);
  UnitWork w = routed_experts(Tier::Cpu);
  w.ops = 960;
  const double one = 1.2e9 * 8 / 128;
  // The expert rate, no op term, no activation round trip (the block's cost has it).
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 1), one / 80e9);
  EXPECT_DOUBLE_EQ(model.expert_block_seconds(w), 40e-6);
  // Other units keep the layer rate, their ops and their round trip.
  UnitWork dense = layer(Tier::Cpu);
  dense.ops = 20;
  EXPECT_DOUBLE_EQ(model.cpu_seconds(dense, 1), 4e8 / 100e9 + 20 * 8e-6 + io(1));
  EXPECT_DOUBLE_EQ(model.expert_block_seconds(dense), 0.0);
  // Resident experts have no offloaded block cost; nor has a machine without a GPU.
  EXPECT_DOUBLE_EQ(model.expert_block_seconds(routed_experts(Tier::Gpu)), 0.0);
  MachineConstants no_gpu = c;
  no_gpu.h2d_gbps = no_gpu.gpu_hbm_gbps = no_gpu.gpu_gemm_gflops = 0;
  EXPECT_DOUBLE_EQ(CostModel(no_gpu).expert_block_seconds(w), 0.0);
  // Experts on a disk out of the page cache read at the disk's rate.
  UnitWork cold = routed_experts(Tier::Disk);
  cold.disk_cached = false;
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cold, 1), one / 2e9);
  EXPECT_DOUBLE_EQ(model.expert_block_seconds(cold), 40e-6);
  // Without the block measurement the round trip stays in the cpu time.
  MachineConstants rate_only = c;
  rate_only.moe_block_us = 0;
  EXPECT_DOUBLE_EQ(CostModel(rate_only).cpu_seconds(w, 1), one / 80e9 + io(1));

  // In a plan the block's cost is paid once per step, whatever share the cache serves (the
  // cached experts' launches and the cpu experts run one after the other: their sum).
  PredictOptions options;
  for (const double hit : {0.25, 1.0}) {
    UnitWork cached = w;
    cached.cache_hit_rate = hit;
    const PlanPrediction p = predict_plan(model, {{"model.layers.0.mlp.experts", cached}}, options);
    const double gpu = one / 3000e9 + 960 * 8.0 / 128 * 4e-6;
    EXPECT_DOUBLE_EQ(p.decode_seconds_cpu, hit * gpu + (1 - hit) * (one / 80e9) + 40e-6) << hit;
    EXPECT_DOUBLE_EQ(p.decode_seconds_best, p.decode_seconds_cpu) << "the cpu is best at decode";
    EXPECT_DOUBLE_EQ(p.expert_block_seconds, 40e-6);
    EXPECT_DOUBLE_EQ(p.decode_seconds_stream,
                     hit * gpu + (1 - hit) * std::max(one / 50e9, gpu) + 40e-6)
        << hit;
  }
}

TEST(CostModel, APlanOnAGpuNeedsGpuConstants) {
  MachineConstants cpu_only = machine();
  cpu_only.gpu_hbm_gbps = 0;
  cpu_only.fingerprint = "cpu=test";
  try {
    predict_plan(CostModel(cpu_only), {{"model", layer(Tier::Gpu)}}, {});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("cpu=test"), std::string::npos) << e.what();
  }
  EXPECT_THROW(predict_plan(CostModel(machine()), {}, {.prefill_tokens = 0}), InvalidArgument);
}

}  // namespace
}  // namespace strata::engine

namespace strata::engine {
namespace {

// The split term (cost_model.h): the cpu reads its fraction, the copy the rest, at once; each
// split linear adds two activation transfers.
TEST(CostModelSplit, SplitTimeIsTheFormula) {
  const CostModel model(machine());
  UnitWork w = layer(Tier::Cpu);
  EXPECT_TRUE(std::isinf(model.split_seconds(w, 1, 0.5)));  // no linear to split
  w.split_linears = 7;
  // Balanced rates: cpu 100 GB/s, h2d 50 -> fraction 2/3.
  EXPECT_DOUBLE_EQ(model.split_fraction(w), 100.0 / 150.0);
  const double trips = 7 * 2 * (8192.0 / 50e9 + 10e-6);
  // fraction 0.5: the copy of 200 MB at 50 GB/s (4 ms) is slower than the cpu's 200 MB at 100
  // plus the transfers the host thread runs (2 ms + 0.37 ms).
  EXPECT_DOUBLE_EQ(model.split_seconds(w, 1, 0.5), 200e6 / 50e9);
  // fraction 0.8: the cpu's 320 MB at 100 GB/s (3.2 ms) beats the copy's 80 MB (1.6 ms).
  EXPECT_DOUBLE_EQ(model.split_seconds(w, 1, 0.8), 0.8 * 400e6 / 100e9 + trips);
  // At 4096 tokens the GPU's compute (400 M x 4096 FLOPs at 500 TFLOP/s) and the cpu's share of
  // the FLOPs (0.5 x 400 M x 4096 at 1 TFLOP/s) bound it.
  const double trips_4096 = 7 * 2 * (8192.0 * 4096 / 50e9 + 10e-6);
  EXPECT_DOUBLE_EQ(model.split_seconds(w, 4096, 0.5), 0.5 * 400e6 * 4096 / 1000e9 + trips_4096);
  // Disk tier in the page cache: the copy reads at 20 GB/s -> fraction 100 / 120.
  UnitWork disk = w;
  disk.tier = Tier::Disk;
  EXPECT_DOUBLE_EQ(model.split_fraction(disk), 100.0 / 120.0);
  EXPECT_TRUE(std::isinf(model.split_seconds(disk, 1, 1.0)));  // not a split
  // Forced, a disk unit splits as computed; auto never picks it (the disk workers' copy is a
  // third stream over host memory that the split rates leave out), though by the formula it
  // would win: the cpu's 5/6 at 100 GB/s plus the transfers, 3.5 ms, against the cpu's 4.
  const double disk_split = model.split_seconds(disk, 1, model.split_fraction(disk));
  EXPECT_DOUBLE_EQ(disk_split, 400e6 / 120e9 + trips);
  EXPECT_LT(disk_split, model.cpu_seconds(disk, 1));
  EXPECT_EQ(model.split_token_threshold(disk), 0);
  EXPECT_NE(model.best_policy(disk, 1), ExecutionPolicy::Split);
  // No GPU: never.
  MachineConstants cpu_only = machine();
  cpu_only.h2d_gbps = 0;
  EXPECT_TRUE(std::isinf(CostModel(cpu_only).split_seconds(w, 1, 0.5)));
  EXPECT_EQ(CostModel(cpu_only).split_fraction(w), 0.0);
}

TEST(CostModelSplit, AutoPicksSplitAtDecodeAndStreamsThePrompt) {
  const CostModel model(machine());
  UnitWork w = layer(Tier::Cpu);
  w.split_linears = 7;
  // Decode: split 400 MB / 150 GB/s ~ 2.67 ms + trips, cpu 4 ms, stream 8 ms.
  EXPECT_EQ(model.best_policy(w, 1), ExecutionPolicy::Split);
  EXPECT_DOUBLE_EQ(model.best_seconds(w, 1), model.split_seconds(w, 1, 100.0 / 150.0));
  EXPECT_EQ(model.best_policy(w, 4096), ExecutionPolicy::Stream);
  // Split wins while (2/3 x 400 M x n) / 1e12 FLOP/s of the cpu's rows stays under the 8 ms of
  // streaming (and under the cpu's time, always longer): n <= 30 (30.0 exactly at 8 ms, minus the
  // transfers of 7 linears).
  const std::int64_t split_max = model.split_token_threshold(w);
  EXPECT_GE(split_max, 1);
  const double fraction = 100.0 / 150.0;
  const auto split_at = [&](std::int64_t n) { return model.split_seconds(w, n, fraction); };
  EXPECT_LE(split_at(split_max), model.stream_seconds(w, split_max));
  EXPECT_GT(split_at(split_max + 1), model.stream_seconds(w, split_max + 1));
  EXPECT_EQ(split_max, 29);
  UnitWork unsplittable = layer(Tier::Cpu);
  EXPECT_EQ(model.split_token_threshold(unsplittable), 0);
  EXPECT_NE(model.best_policy(unsplittable, 1), ExecutionPolicy::Split);
}

TEST(CostModelSplit, ThePlannerCarriesBothThresholdsAndTheFraction) {
  placement::UnitProfile profile;
  profile.bytes = 400'000'000;
  profile.dtype = DType::BFloat16;
  profile.activation_bytes_per_token = 8192;
  profile.split_linears = 7;
  profile.split_bytes = 400'000'000;
  const CostModel model(machine());
  const placement::UnitPlan plan = cost_model_planner(model)(profile);
  const UnitWork work = unit_work_of(profile);
  EXPECT_EQ(work.split_linears, 7);
  EXPECT_EQ(plan.cpu_max_tokens, model.cpu_token_threshold(work));
  EXPECT_EQ(plan.split_max_tokens, model.split_token_threshold(work));
  EXPECT_DOUBLE_EQ(plan.split_fraction, 100.0 / 150.0);
}

// The overhead terms (cost_model.h): per-op costs, the matrix-vector rate over layer shapes, the
// concurrent rates of a split step and the KV cache a decode step reads.
MachineConstants with_overheads() {
  MachineConstants c = machine();
  c.cpu_gemv_layer_gbps = 80;
  c.cpu_op_us = 20;
  c.gpu_launch_us = 5;
  c.split_cpu_gemv_gbps = 70;
  c.split_h2d_gbps = 40;
  return c;
}

TEST(CostModelOverheads, OpsCostALaunchOnTheGpuAndADispatchOnTheCpu) {
  EXPECT_EQ(ops_of_modules(13), 20);  // a Llama decoder layer
  EXPECT_EQ(ops_of_modules(1), 2);
  EXPECT_EQ(ops_of_modules(0), 0);
  const CostModel model(with_overheads());
  UnitWork w = layer(Tier::Cpu);
  w.ops = 20;
  EXPECT_DOUBLE_EQ(model.gpu_seconds(w, 1), 400e6 / 3000e9 + 20 * 5e-6);
  EXPECT_DOUBLE_EQ(model.stream_seconds(w, 1), 400e6 / 50e9);  // the copy hides the launches
  // The cpu reads at the layer-shape rate (80, not the 100 of one large product).
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 1), 400e6 / 80e9 + 20 * 20e-6 + io(1));
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 1, false), 400e6 / 80e9 + 20 * 20e-6);
  // A cold disk unit still reads at the disk's rate.
  UnitWork cold = layer(Tier::Disk);
  cold.disk_cached = false;
  EXPECT_DOUBLE_EQ(model.cpu_seconds(cold, 1, false), 400e6 / 2e9);
}

TEST(CostModelOverheads, SplitUsesTheRatesMeasuredUnderEachOther) {
  const CostModel model(with_overheads());
  UnitWork w = layer(Tier::Cpu);
  w.ops = 20;
  w.split_linears = 7;
  const double f = 70.0 / (70.0 + 40.0);
  EXPECT_DOUBLE_EQ(model.split_fraction(w), f);
  const double trips = 7 * 2 * (8192.0 / 50e9 + 10e-6);
  const double host = f * 400e6 / 70e9 + trips + 7 * 20e-6 + 20 * 5e-6;
  const double copy = (1 - f) * 400e6 / 40e9;
  EXPECT_DOUBLE_EQ(model.split_seconds(w, 1, f), std::max(host, copy));
  // The disk tier's copies are bounded by the page cache (20 GB/s) below the 40 measured.
  UnitWork disk = w;
  disk.tier = Tier::Disk;
  EXPECT_DOUBLE_EQ(model.split_fraction(disk), 70.0 / 90.0);
}

TEST(CostModelOverheads, TheKvCacheIsReadWhereTheLayerComputes) {
  const CostModel model(machine());
  UnitWork w = layer(Tier::Cpu);
  w.kv_read_bytes = 8'000'000;
  EXPECT_DOUBLE_EQ(model.gpu_seconds(w, 1), 408e6 / 3000e9);
  EXPECT_DOUBLE_EQ(model.cpu_seconds(w, 1, false), 408e6 / 100e9);
  EXPECT_DOUBLE_EQ(model.stream_seconds(w, 1), 400e6 / 50e9);  // the cache is not copied
  // predict_plan: kv bytes per context token x decode context x batch, at decode only.
  UnitWork resident = layer(Tier::Gpu);
  resident.kv_bytes_per_context_token = 16384;
  PredictOptions options;
  options.decode_context = 500;
  options.batch = 2;
  const PlanPrediction p = predict_plan(model, {{"layer", resident}}, options);
  EXPECT_DOUBLE_EQ(p.decode_seconds_best, (400e6 + 16384.0 * 500 * 2) / 3000e9);
  EXPECT_DOUBLE_EQ(p.prefill_seconds_best, model.gpu_seconds(resident, 1024));
}

}  // namespace
}  // namespace strata::engine

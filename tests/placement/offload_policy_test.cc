// The execution policy of offloaded units (execution_policy.h), observed through the prefetch
// scheduler's trace and counters: units that compute on the cpu are never issued (copied), the
// streamed ones around them still are, the decision follows the tokens of the step, and the
// result is the streamed one. A cpu execution device runs the same hook path as a GPU (the moves
// are no-ops there); the CUDA parity cases are in tests/models/dispatched_parity_test.cc.

#include <gtest/gtest.h>

#include <cstring>

#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"
#include "strata/placement/offload.h"
#include "strata/placement/prefetch.h"
#include "support/op_testing.h"

namespace strata::placement {
namespace {

using Trace = std::vector<std::string>;

std::shared_ptr<nn::Linear> seeded_linear(int i) {
  auto linear = std::make_shared<nn::Linear>(8, 8);
  linear->parameter_slot("weight")->set(
      strata::testing::random_tensor({8, 8}, DType::Float32, 100 + i));
  linear->parameter_slot("bias")->set(strata::testing::random_tensor({8}, DType::Float32, 50 + i));
  return linear;
}

std::shared_ptr<nn::Sequential> linear_stack(int n) {
  std::vector<std::shared_ptr<nn::Module>> layers;
  for (int i = 0; i < n; ++i) layers.push_back(seeded_linear(i));
  return std::make_shared<nn::Sequential>(layers);
}

Tensor input(std::int64_t tokens) {
  return strata::testing::random_tensor({tokens, 8}, DType::Float32, 7);
}

Trace forward_trace(nn::Module& model, PrefetchScheduler& scheduler, std::int64_t tokens = 2) {
  const std::size_t before = scheduler.trace().size();
  model(input(tokens));
  return Trace(scheduler.trace().begin() + static_cast<std::ptrdiff_t>(before),
               scheduler.trace().end());
}

std::shared_ptr<PrefetchScheduler> offloaded(nn::Module& model, int slots = 2) {
  cpu_offload(model, {.execution_device = Device::cpu(), .prefetch = {.staging_slots = slots}});
  auto scheduler = find_scheduler(model);
  scheduler->set_trace(true);
  return scheduler;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

void expect_close(const Tensor& actual, const Tensor& expected) {
  ASSERT_EQ(actual.shape(), expected.shape());
  const std::vector<double> a = actual.to_doubles(), e = expected.to_doubles();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], e[i], 1e-5) << "element " << i;
}

// One unit with three linear layers inside: a and b read the same input, c reads their sum.
class ThreeLinears : public nn::Module {
 public:
  ThreeLinears() : nn::Module("ThreeLinears") {
    a_ = register_module("a", std::make_shared<nn::Linear>(8, 8));
    b_ = register_module("b", std::make_shared<nn::Linear>(8, 6, /*bias=*/false));
    c_ = register_module("c", std::make_shared<nn::Linear>(6, 5));
    std::uint64_t seed = 300;
    for (nn::Linear* linear : {a_.get(), b_.get(), c_.get()}) {
      const Tensor& w = linear->weight();
      linear->parameter_slot("weight")->set(
          strata::testing::random_tensor(w.shape(), DType::Float32, ++seed));
      if (linear->has_bias()) {
        linear->parameter_slot("bias")->set(
            strata::testing::random_tensor({w.size(0)}, DType::Float32, ++seed));
      }
    }
  }
  nn::Value forward(nn::Args& args) override {
    const Tensor& x = args.tensor(0, "ThreeLinears.forward");
    const Tensor a = (*a_)(x).tensor().narrow(-1, 0, 6);
    STRATA_CHECK_ARG(!fail, "ThreeLinears: failing on purpose after a");
    return (*c_)(ops::add(a, (*b_)(x).tensor()));
  }
  bool fail = false;

 private:
  std::shared_ptr<nn::Linear> a_, b_, c_;
};

std::shared_ptr<PrefetchScheduler> offloaded_as_one_unit(nn::Module& model) {
  auto scheduler = std::make_shared<PrefetchScheduler>(Device::cpu());
  scheduler->set_trace(true);
  nn::AlignDevicesOptions options;
  options.execution_device = Device::cpu();
  options.offload = true;
  options.place_submodules = true;
  nn::add_hook_to_module(model, std::make_shared<PrefetchHook>(options, scheduler));
  return scheduler;
}

TEST(OffloadPolicy, NamesParseAndBadOnesAreRefused) {
  EXPECT_EQ(parse_offload_policy("auto"), OffloadPolicy::Auto);
  EXPECT_EQ(parse_offload_policy("split"), OffloadPolicy::Split);
  EXPECT_EQ(offload_policy_name(OffloadPolicy::Split), "split");
  EXPECT_EQ(execution_policy_name(ExecutionPolicy::Split), "split");
  EXPECT_EQ(parse_offload_policy("stream"), OffloadPolicy::Stream);
  EXPECT_EQ(parse_offload_policy("cpu"), OffloadPolicy::Cpu);
  EXPECT_EQ(offload_policy_name(OffloadPolicy::Cpu), "cpu");
  EXPECT_EQ(execution_policy_name(ExecutionPolicy::Stream), "stream");
  try {
    parse_offload_policy("gpu");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'gpu'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("auto"), std::string::npos) << e.what();
  }
  PrefetchScheduler scheduler(Device::cpu());
  EXPECT_THROW(scheduler.set_offload_policy(OffloadPolicy::Auto), InvalidArgument);
}

TEST(OffloadPolicy, ForcedCpuNeverIssuesAndGivesTheStreamedResult) {
  auto reference = linear_stack(3);
  const Tensor expected = (*reference)(input(2)).tensor();
  auto model = linear_stack(3);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(forward_trace(*model, *scheduler),
              (Trace{"cpu 0", "release 0", "cpu 1", "release 1", "cpu 2", "release 2"}));
  }
  EXPECT_TRUE(same_bytes((*model)(input(2)).tensor(), expected));
  const PrefetchStats& stats = scheduler->stats();
  EXPECT_EQ(stats.cpu_computes, 12);
  EXPECT_EQ(stats.onloads, 12);
  EXPECT_EQ(stats.issued, 0);
  EXPECT_EQ(stats.max_in_flight, 0);
  // Between forwards the weights are placeholders again, as with streaming.
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
}

TEST(OffloadPolicy, AutoFollowsTheTokensOfTheStepThroughTheThreshold) {
  auto model = linear_stack(2);
  auto scheduler = offloaded(*model);
  std::vector<UnitProfile> asked;
  scheduler->set_offload_policy(OffloadPolicy::Auto, [&](const UnitProfile& profile) {
    asked.push_back(profile);
    return std::int64_t{4};
  });
  EXPECT_EQ(forward_trace(*model, *scheduler, 4),
            (Trace{"cpu 0", "release 0", "cpu 1", "release 1"}));
  EXPECT_EQ(forward_trace(*model, *scheduler, 5),
            (Trace{"issue 0", "wait 0", "issue 1", "release 0", "wait 1", "issue 0", "release 1"}));
  // Unit 0 was prefetched for a step of 5 tokens; the next step has 1: its copies are dropped.
  EXPECT_EQ(forward_trace(*model, *scheduler, 1),
            (Trace{"cpu 0", "release 0", "cpu 1", "release 1"}));
  EXPECT_EQ(scheduler->stats().evicted_for_cpu, 1);
  ASSERT_EQ(asked.size(), 2u);  // once per unit
  EXPECT_EQ(asked[0].module_class, "Linear");
  EXPECT_EQ(asked[0].bytes, (8 * 8 + 8) * 4);
  EXPECT_EQ(asked[0].file_bytes, 0);
  EXPECT_EQ(asked[0].dtype, DType::Float32);
  EXPECT_EQ(asked[0].activation_bytes_per_token, 8 * 4);
  EXPECT_EQ(asked[0].modules, 1);
  EXPECT_EQ(asked[0].split_linears, 1);  // the unit is a linear layer
  EXPECT_EQ(scheduler->cpu_thresholds(), (std::vector<std::int64_t>{4, 4}));
}

TEST(OffloadPolicy, PrefetchSkipsUnitsThatComputeOnTheCpu) {
  auto reference = linear_stack(4);
  const Tensor expected = (*reference)(input(2)).tensor();
  auto model = linear_stack(4);
  auto scheduler = offloaded(*model);
  int calls = 0;  // units 0 and 2 (asked first and third) compute on the cpu, 1 and 3 stream
  scheduler->set_offload_policy(OffloadPolicy::Auto, [&](const UnitProfile&) {
    return (calls++ % 2 == 0) ? std::int64_t{1} << 30 : std::int64_t{0};
  });
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "release 0", "issue 1", "wait 1", "release 1", "cpu 2", "release 2",
                   "issue 3", "wait 3", "release 3"}));
  // Once the order is known, the streamed unit after each one is issued ahead; cpu units never.
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "issue 1", "release 0", "wait 1", "issue 3", "release 1", "cpu 2",
                   "release 2", "wait 3", "issue 1", "release 3"}));
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "release 0", "wait 1", "issue 3", "release 1", "cpu 2", "release 2",
                   "wait 3", "issue 1", "release 3"}));
  EXPECT_TRUE(same_bytes((*model)(input(2)).tensor(), expected));
  EXPECT_LE(scheduler->stats().max_in_flight, 2);
}

// The last row of its input (a causal LM's prefill computes its head at the last position only).
class LastRow : public nn::Module {
 public:
  LastRow() : nn::Module("LastRow") {}
  nn::Value forward(nn::Args& args) override {
    const Tensor& x = args.tensor(0, "LastRow");
    return x.narrow(0, x.size(0) - 1, 1).contiguous();
  }
};

TEST(OffloadPolicy, APrefillsHeadStreamsWithItsLayersAndDecodeStepsComputeOnTheCpu) {
  // Two layers, then a head that sees one token of the five. Under auto every unit of a forward is
  // decided by the forward's tokens: in a prefill the head streams behind the layers like them
  // (its copy overlaps their compute, where a cpu step of it would come after the last layer),
  // and the next prefill's first layer is issued ahead of the head.
  const auto build = [] {
    return std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
        seeded_linear(0), seeded_linear(1), std::make_shared<LastRow>(), seeded_linear(2)});
  };
  auto reference = build();
  const Tensor expected = (*reference)(input(5)).tensor();
  auto model = build();
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Auto,
                                [](const UnitProfile&) { return std::int64_t{2}; });
  EXPECT_EQ(forward_trace(*model, *scheduler, 5),
            (Trace{"issue 0", "wait 0", "release 0", "issue 1", "wait 1", "release 1", "issue 2",
                   "wait 2", "release 2"}));
  const Trace prefill{"issue 0", "wait 0",    "issue 1", "release 0", "wait 1",
                      "issue 2", "release 1", "wait 2",  "issue 0",   "release 2"};
  EXPECT_EQ(forward_trace(*model, *scheduler, 5), prefill);
  EXPECT_EQ(forward_trace(*model, *scheduler, 5),
            (Trace{"wait 0", "issue 1", "release 0", "wait 1", "issue 2", "release 1", "wait 2",
                   "issue 0", "release 2"}));
  EXPECT_EQ(scheduler->stats().cpu_computes, 0);
  EXPECT_EQ(scheduler->stats().split_computes, 0);
  // Decode steps compute everything on the cpu: the copy issued for a next prefill is dropped
  // once, and nothing is issued after it.
  for (int step = 0; step < 2; ++step) {
    EXPECT_EQ(forward_trace(*model, *scheduler, 1),
              (Trace{"cpu 0", "release 0", "cpu 1", "release 1", "cpu 2", "release 2"}));
  }
  EXPECT_EQ(scheduler->stats().evicted_for_cpu, 1);
  // A prefill after decode steps streams again, each unit issued ahead of the next.
  EXPECT_EQ(forward_trace(*model, *scheduler, 5), prefill);
  EXPECT_TRUE(same_bytes((*model)(input(5)).tensor(), expected));
}

TEST(OffloadPolicy, AlignModuleDeviceIsNotAStep) {
  // align_module_device runs the hook with no input: it wants the weights on the execution
  // device, whatever the policy.
  auto model = linear_stack(2);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  {
    nn::AlignModuleDevice guard(model->get_submodule("1"));
    EXPECT_FALSE(model->get_submodule("1").parameter("weight").is_meta());
  }
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
  EXPECT_EQ(scheduler->stats().cpu_computes, 0);
  EXPECT_EQ(scheduler->stats().issued, 1);
}

TEST(OffloadPolicy, AUnitWithAHookedModuleInsideStreams) {
  auto model = linear_stack(2);
  auto scheduler = std::make_shared<PrefetchScheduler>(Device::cpu());
  scheduler->set_trace(true);
  nn::add_hook_to_module(model->get_submodule("1"), std::make_shared<nn::ModelHook>());
  nn::AlignDevicesOptions options;
  options.execution_device = Device::cpu();
  options.offload = true;
  options.place_submodules = true;
  nn::add_hook_to_module(*model, std::make_shared<PrefetchHook>(options, scheduler));
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  EXPECT_EQ(forward_trace(*model, *scheduler), (Trace{"issue 0", "wait 0", "release 0"}));
  EXPECT_EQ(scheduler->stats().cpu_computes, 0);
}

// x @ weight^T times a keyword tensor `scale` (the shape of a layer that takes rotary cos/sin).
class KeywordScaled : public nn::Module {
 public:
  explicit KeywordScaled(std::uint64_t seed) : nn::Module("KeywordScaled") {
    create_parameter("weight", {8, 8}, DType::Float32, 0.0);
    parameter_slot("weight")->set(strata::testing::random_tensor({8, 8}, DType::Float32, seed));
  }
  nn::Value forward(nn::Args& args) override {
    const Tensor& scale = args.keyword("scale")->tensor();
    return ops::mul(ops::linear(args.tensor(0, "KeywordScaled"), parameter("weight")), scale);
  }
};

class TwoScaled : public nn::Module {
 public:
  TwoScaled() : nn::Module("TwoScaled") {
    a_ = register_module("a", std::make_shared<KeywordScaled>(11));
    b_ = register_module("b", std::make_shared<KeywordScaled>(12));
  }
  nn::Value forward(nn::Args& args) override {
    const nn::Value scale = *args.keyword("scale");
    const Tensor y = (*a_)(nn::Args({args.positional[0]}, {{"scale", scale}})).tensor();
    return (*b_)(nn::Args({y}, {{"scale", scale}}));
  }

 private:
  std::shared_ptr<KeywordScaled> a_, b_;
};

TEST(OffloadPolicy, KeywordInputsCrossToTheCpuOncePerStep) {
  if (!strata::testing::device_available(Device::cuda(0))) GTEST_SKIP() << "needs a CUDA device";
  TwoScaled reference;
  const Tensor x = input(2);
  const Tensor scale = strata::testing::random_tensor({8}, DType::Float32, 13);
  const Tensor expected = reference(nn::Args({x}, {{"scale", scale}})).tensor();
  TwoScaled model;
  cpu_offload(model, {.execution_device = Device::cuda(0)});
  auto scheduler = find_scheduler(model);
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  const Tensor on_gpu = scale.to(Device::cuda(0));
  for (int step = 0; step < 2; ++step) {
    const Tensor out = model(nn::Args({x.to(Device::cuda(0))}, {{"scale", on_gpu}})).tensor();
    expect_close(out.to(Device::cpu()), expected);
  }
  EXPECT_EQ(scheduler->stats().cpu_computes, 4);
  EXPECT_EQ(scheduler->stats().cpu_inputs_reused, 2);  // b reuses a's copy of scale, each step
}

TEST(SplitPolicy, CpuRowsFollowTheFractionInWholeBlocks) {
  EXPECT_EQ(split_cpu_rows(8, 0.5), 4);
  EXPECT_EQ(split_cpu_rows(8, 0.3), 2);   // 2.4 rounded
  EXPECT_EQ(split_cpu_rows(2, 0.01), 1);  // at least one row each side
  EXPECT_EQ(split_cpu_rows(2, 0.99), 1);
  EXPECT_EQ(split_cpu_rows(1, 0.5), 0);  // nothing to split
  EXPECT_EQ(split_cpu_rows(63, 0.999), 62);
  EXPECT_EQ(split_cpu_rows(4096, 0.676), 2768);  // 2768.9 -> 173 blocks of 16
  EXPECT_EQ(split_cpu_rows(64, 0.1), 16);        // 6.4 rows: at least one block
  EXPECT_EQ(split_cpu_rows(100, 0.95), 80);      // 95 -> 96, at most 100 - 16 in blocks
}

TEST(SplitPolicy, ForcedSplitGivesTheStreamedResultFromBothHalves) {
  auto reference = linear_stack(3);
  const Tensor expected = (*reference)(input(2)).tensor();
  auto model = linear_stack(3);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Split);
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"issue 0", "wait 0", "split 0", "release 0", "issue 1", "wait 1", "split 1",
                   "release 1", "issue 2", "wait 2", "split 2", "release 2"}));
  expect_close((*model)(input(2)).tensor(), expected);
  const PrefetchStats& stats = scheduler->stats();
  EXPECT_EQ(stats.split_computes, 6);
  EXPECT_EQ(stats.split_linears, 6);  // each unit is one linear
  EXPECT_EQ(stats.cpu_computes, 0);
  EXPECT_EQ(scheduler->unit_plans()[0].split_fraction, 0.5);  // no planner: half the rows
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
}

TEST(SplitPolicy, LinearsInsideAUnitSplitAndShareTheirInputCopy) {
  ThreeLinears reference;
  const Tensor expected = reference(input(3)).tensor();
  ThreeLinears model;
  auto scheduler = offloaded_as_one_unit(model);
  scheduler->set_offload_planner(OffloadPolicy::Split, [](const UnitProfile& profile) {
    EXPECT_EQ(profile.split_linears, 3);
    EXPECT_EQ(profile.modules, 4);
    EXPECT_EQ(profile.split_bytes, (8 * 8 + 8 + 6 * 8 + 5 * 6 + 5) * 4);
    return UnitPlan{.split_fraction = 0.25};
  });
  for (int step = 0; step < 2; ++step) expect_close(model(input(3)).tensor(), expected);
  const PrefetchStats& stats = scheduler->stats();
  EXPECT_EQ(stats.split_computes, 2);
  EXPECT_EQ(stats.split_linears, 6);
  EXPECT_EQ(stats.split_inputs_copied, 4);  // a and b share x; c reads its own
  // Outside split steps the linear hooks do nothing: streaming gives the same result.
  scheduler->set_offload_policy(OffloadPolicy::Stream);
  expect_close(model(input(3)).tensor(), expected);
  EXPECT_EQ(scheduler->stats().split_linears, 6);
  // A split forward that throws leaves nothing half bound: the next one gives the result.
  scheduler->set_offload_policy(OffloadPolicy::Split);
  model.fail = true;
  EXPECT_THROW(model(input(3)), InvalidArgument);
  model.fail = false;
  expect_close(model(input(3)).tensor(), expected);
  EXPECT_EQ(model.get_submodule("a").parameter("weight").shape(), (Shape{8, 8}));
  EXPECT_TRUE(model.get_submodule("a").parameter("weight").is_meta());
  // Removing the unit's hook removes the linears' hooks it placed.
  nn::remove_hook_from_module(model);
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_EQ(model.get_submodule(name).hook(), nullptr) << name;
  }
}

TEST(SplitPolicy, AutoSplitsCpusOrStreamsByTheTokensOfTheStep) {
  auto reference = linear_stack(2);
  auto model = linear_stack(2);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_planner(OffloadPolicy::Auto, [](const UnitProfile&) {
    return UnitPlan{.cpu_max_tokens = 4, .split_max_tokens = 1, .split_fraction = 0.75};
  });
  EXPECT_EQ(forward_trace(*model, *scheduler, 1),
            (Trace{"issue 0", "wait 0", "split 0", "release 0", "issue 1", "wait 1", "split 1",
                   "release 1"}));
  EXPECT_EQ(forward_trace(*model, *scheduler, 3),
            (Trace{"cpu 0", "release 0", "cpu 1", "release 1"}));
  EXPECT_EQ(forward_trace(*model, *scheduler, 5),
            (Trace{"issue 0", "wait 0", "issue 1", "release 0", "wait 1", "issue 0", "release 1"}));
  // Unit 0 was prefetched whole for 5 tokens; a split step drops those copies and issues its rows.
  EXPECT_EQ(forward_trace(*model, *scheduler, 1),
            (Trace{"issue 0", "wait 0", "split 0", "issue 1", "release 0", "wait 1", "split 1",
                   "issue 0", "release 1"}));
  for (const std::int64_t tokens : {1, 3, 5}) {
    expect_close((*model)(input(tokens)).tensor(), (*reference)(input(tokens)).tensor());
  }
  EXPECT_EQ(scheduler->cpu_thresholds(), (std::vector<std::int64_t>{4, 4}));
  EXPECT_EQ(scheduler->unit_plans()[1].split_max_tokens, 1);
}

TEST(SplitPolicy, BadFractionsAndUnitsWithoutLinearsAreHandled) {
  auto model = linear_stack(1);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_planner(
      OffloadPolicy::Split, [](const UnitProfile&) { return UnitPlan{.split_fraction = 1.0}; });
  try {
    (*model)(input(1));
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("split fraction 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(scheduler->set_offload_planner(OffloadPolicy::Auto, nullptr), InvalidArgument);
  // A unit with no linear layer (a norm) streams under split.
  auto norm = std::make_shared<nn::Sequential>(
      std::vector<std::shared_ptr<nn::Module>>{std::make_shared<nn::LayerNorm>(8)});
  auto norm_scheduler = offloaded(*norm);
  norm_scheduler->set_offload_policy(OffloadPolicy::Split);
  EXPECT_EQ(forward_trace(*norm, *norm_scheduler), (Trace{"issue 0", "wait 0", "release 0"}));
  EXPECT_EQ(norm_scheduler->stats().split_computes, 0);
}

}  // namespace
}  // namespace strata::placement

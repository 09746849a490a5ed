// A parameter tied across an offloaded and a resident module (the tree's embedding and head) is
// one tensor: the resident side holds it on the execution device, the offloaded side reads that
// same storage during its forward (nothing fetched or copied for it), its weights-map entry is
// that storage (no pinned copy, nothing on disk), and the outputs are the unoffloaded model's bit
// for bit. Each case runs with a cpu and a cuda:0 execution device (the CUDA cases skip without
// a GPU backend); with a cpu execution device "cpu" modules stay resident, so only disk is
// offloaded there.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "io/io_testing.h"
#include "placement/placement_models.h"
#include "strata/core/backend.h"
#include "strata/nn/hooks.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using testing::Tree;

struct TiedCase {
  Device exec;
  std::string tier;       // where the offloaded side goes: "cpu" or "disk"
  std::string offloaded;  // "embed" or "head"; the other one stays resident
};

std::string case_name(const TiedCase& c) {
  return std::string(c.exec.is_cuda() ? "cuda" : "cpu") + "_" + c.offloaded + "_on_" + c.tier;
}
void PrintTo(const TiedCase& c, std::ostream* os) { *os << case_name(c); }

std::vector<TiedCase> tied_cases() {
  std::vector<TiedCase> out;
  for (const Device exec : {Device::cpu(), Device::cuda(0)}) {
    for (const char* tier : {"cpu", "disk"}) {
      if (exec.is_cpu() && std::string(tier) == "cpu") continue;  // resident, nothing offloaded
      for (const char* offloaded : {"embed", "head"}) out.push_back({exec, tier, offloaded});
    }
  }
  return out;
}

class TiedAcrossTiers : public ::testing::TestWithParam<TiedCase> {
 protected:
  void SetUp() override {
    if (GetParam().exec.is_cuda() && find_backend(DeviceType::CUDA) == nullptr) {
      GTEST_SKIP() << "no CUDA backend";
    }
  }
  strata::testing::TempDir tmp_;
};

// How many of `names` the map holds.
std::size_t held(const nn::WeightsMap& map, const std::vector<std::string>& names) {
  const std::vector<std::string> keys = map.keys();
  return std::count_if(names.begin(), names.end(), [&](const std::string& name) {
    return std::find(keys.begin(), keys.end(), name) != keys.end();
  });
}

TEST_P(TiedAcrossTiers, OneCopyAndTheUnoffloadedOutputs) {
  const TiedCase& c = GetParam();
  const std::string resident = c.offloaded == "embed" ? "head" : "embed";
  Tree model;
  testing::randomize(model, 40);
  const Tensor input = testing::tree_input();
  const Tensor expected = testing::unhooked_output(model, input, c.exec);
  const std::string here = c.exec.is_cuda() ? "0" : "cpu";
  DeviceMap map;
  for (const char* name : {"embed", "layers.0", "layers.1", "norm", "head"}) {
    map.emplace_back(name, name == c.offloaded ? c.tier : here);
  }
  const fs::path dir = tmp_ / "offload";
  const DispatchResult result =
      dispatch_model(model, map, {.main_device = c.exec, .offload_dir = dir});
  ASSERT_NE(result.scheduler, nullptr) << "the offloaded side is hooked";

  const Tensor table = model.get_submodule(resident).parameter("weight");
  EXPECT_EQ(table.device(), c.exec);
  EXPECT_TRUE(model.get_submodule(c.offloaded).parameter("weight").is_meta())
      << "the offloaded side holds a placeholder between forwards";
  for (int i = 0; i < 3; ++i) {  // the first forward records the order, the next ones prefetch
    testing::expect_bit_identical(expected, model(input).tensor());
    EXPECT_EQ(model.embed_seen().data_ptr(), table.data_ptr()) << "forward " << i;
    EXPECT_EQ(model.head_seen().data_ptr(), table.data_ptr()) << "forward " << i;
  }
  // Nothing was fetched or copied for the offloaded side: it has no other tensor.
  EXPECT_EQ(result.scheduler->stats().bytes_copied, 0);
  EXPECT_EQ(result.scheduler->stats().bytes_read, 0);

  // One copy: the offloaded name resolves to the resident storage itself, with no pinned host
  // copy and nothing written to disk (no folder at all: nothing else is offloaded).
  const std::vector<std::string> names = {"embed.weight", "head.weight"};
  const auto* hook = nn::find_hook<PrefetchHook>(model.get_submodule(c.offloaded));
  ASSERT_NE(hook, nullptr);
  const auto view = std::dynamic_pointer_cast<const nn::PrefixedWeightsMap>(hook->weights_map());
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(held(*view->inner(), names), 1u);
  const auto stored = view->inner()->find(c.offloaded + ".weight");
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->data_ptr(), table.data_ptr());
  EXPECT_FALSE(fs::exists(dir)) << "nothing on disk, no folder";
}

INSTANTIATE_TEST_SUITE_P(Tiers, TiedAcrossTiers, ::testing::ValuesIn(tied_cases()),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace strata::placement

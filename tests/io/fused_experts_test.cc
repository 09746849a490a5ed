// CheckpointReader exposes transformers' fused expert tensors (experts.gate_up_proj [E, 2I, H],
// experts.down_proj [E, H, I]) as the per-expert tensors the module tree names.

#include <gtest/gtest.h>

#include "io/io_testing.h"
#include "ops/throws_naming.h"
#include "strata/io/checkpoint.h"
#include "strata/io/safetensors.h"

namespace strata::io {
namespace {

using strata::testing::pattern_tensor;
using strata::testing::TempDir;
using strata::testing::tensor_bytes;
using strata::testing::throws_naming;

constexpr std::int64_t kExperts = 3, kInter = 2, kHidden = 5;
const std::string kPrefix = "model.layers.1.mlp.experts";

TEST(FusedExperts, SplitIntoPerExpertTensors) {
  TempDir dir;
  const Tensor gate_up = pattern_tensor(DType::BFloat16, {kExperts, 2 * kInter, kHidden}, 1);
  const Tensor down = pattern_tensor(DType::BFloat16, {kExperts, kHidden, kInter}, 2);
  const Tensor router = pattern_tensor(DType::BFloat16, {kExperts, kHidden}, 3);
  const auto file = dir.path() / "model.safetensors";
  save_safetensors(file, {{kPrefix + ".gate_up_proj", gate_up},
                          {kPrefix + ".down_proj", down},
                          {"model.layers.1.mlp.gate.weight", router}});
  const CheckpointReader reader(file);

  const std::vector<std::string> keys = reader.keys();
  EXPECT_EQ(keys.size(), 1u + 3 * kExperts);
  EXPECT_FALSE(reader.contains(kPrefix + ".gate_up_proj"));
  EXPECT_FALSE(reader.contains(kPrefix + ".down_proj"));
  EXPECT_TRUE(reader.contains("model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(reader.is_split_expert("model.layers.1.mlp.gate.weight"));
  for (std::int64_t e = 0; e < kExperts; ++e) {
    const std::string p = fmt::format("{}.{}.", kPrefix, e);
    const Tensor fused = gate_up.select(0, e);
    EXPECT_TRUE(reader.is_split_expert(p + "gate_proj.weight"));
    EXPECT_EQ(reader.meta(p + "gate_proj.weight").shape, (Shape{kInter, kHidden}));
    EXPECT_EQ(reader.meta(p + "down_proj.weight").shape, (Shape{kHidden, kInter}));
    EXPECT_EQ(reader.meta(p + "up_proj.weight").dtype, DType::BFloat16);
    // Gate rows first, then up rows (transformers' chunk(2) of gate_up_proj).
    EXPECT_EQ(tensor_bytes(reader.get(p + "gate_proj.weight")),
              tensor_bytes(fused.narrow(0, 0, kInter).contiguous()));
    EXPECT_EQ(tensor_bytes(reader.get(p + "up_proj.weight")),
              tensor_bytes(fused.narrow(0, kInter, kInter).contiguous()));
    EXPECT_EQ(tensor_bytes(reader.get(p + "down_proj.weight")),
              tensor_bytes(down.select(0, e).contiguous()));
  }
}

TEST(FusedExperts, ShapesThatDoNotFitAreACheckpointError) {
  TempDir dir;
  const auto file = dir.path() / "model.safetensors";
  save_safetensors(file, {{kPrefix + ".gate_up_proj",
                           pattern_tensor(DType::Float32, {kExperts, 2 * kInter, kHidden}, 1)},
                          {kPrefix + ".down_proj",
                           pattern_tensor(DType::Float32, {kExperts, kHidden, kInter + 1}, 2)}});
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { CheckpointReader reader(file); },
      {kPrefix + ".gate_up_proj", kPrefix + ".down_proj", "[3, 5, 3]", "fused layout"}));
}

TEST(FusedExperts, ALoneGateUpTensorIsLeftAsStored) {
  TempDir dir;
  const auto file = dir.path() / "model.safetensors";
  save_safetensors(file, {{kPrefix + ".gate_up_proj",
                           pattern_tensor(DType::Float32, {kExperts, 2 * kInter, kHidden}, 1)}});
  const CheckpointReader reader(file);
  EXPECT_TRUE(reader.contains(kPrefix + ".gate_up_proj"));
  EXPECT_EQ(reader.keys().size(), 1u);
}

}  // namespace
}  // namespace strata::io

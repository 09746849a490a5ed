// Placement by tensor role (issue 17): device-map patterns ("model.layers.*.mlp.experts"), the
// planner's expert-after mode (--experts cpu, --n-cpu-moe), and a MoE fixture dispatched with its
// experts on disk by a pattern map, against transformers' logits.

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/placement/auto_device_map.h"
#include "strata/placement/load_and_dispatch.h"
#include "strata/placement/module_sizes.h"

namespace strata::testing {
namespace {

using placement::device_for;
using placement::DeviceMap;
using placement::ExpertPlacement;
using placement::MapDevice;
using placement::MaxMemory;

TEST(DeviceMapPatterns, StarMatchesOneComponentAndTheLongerKeyWins) {
  const DeviceMap map = {{"", 0}, {"model.layers.3", 1}, {"model.layers.*.mlp.experts", "cpu"}};
  EXPECT_EQ(device_for(map, "model.layers.3.mlp.experts.7.up_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(device_for(map, "model.layers.3.mlp.gate.weight"), MapDevice(1));
  EXPECT_EQ(device_for(map, "model.layers.10.mlp.experts"), MapDevice("cpu"));
  EXPECT_EQ(device_for(map, "model.layers.10.mlp.experts_x.w"), MapDevice(0));
  EXPECT_EQ(device_for(map, "model.layers.mlp.experts"), MapDevice(0));  // * is one component
  // At equal length a plain name beats a pattern, whatever the order.
  const DeviceMap tie = {{"model.layers.2.mlp.experts", 1}, {"model.layers.*.mlp.experts", "cpu"}};
  EXPECT_EQ(device_for(tie, "model.layers.2.mlp.experts.0.w"), MapDevice(1));
  EXPECT_EQ(device_for(tie, "model.layers.5.mlp.experts.0.w"), MapDevice("cpu"));
  EXPECT_TRUE(placement::is_device_map_pattern("a.*.b"));
  EXPECT_FALSE(placement::is_device_map_pattern("a.b*.c"));
}

const std::string kQwen3Moe = R"({"model_type": "qwen3_moe", "hidden_size": 64,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 96, "moe_intermediate_size": 32, "num_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 128, "mlp_only_layers": [2]})";

class ExpertPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guard = nn::init_empty_weights();
    model_ = models::build_causal_lm(io::parse_model_config(kQwen3Moe, "test/config.json"),
                                     DType::Float32);
    const placement::ModuleSizes sizes = placement::compute_module_sizes(*model_);
    experts_ = sizes["model.layers.0.mlp.experts"];
    dense_ = sizes.total() - 3 * experts_;
  }
  placement::DevicePlan plan(const MaxMemory& budgets, ExpertPlacement how) {
    placement::InferOptions options;
    options.max_memory = budgets;
    options.no_split_module_classes = model_->no_split_module_classes();
    options.experts = how;
    return placement::plan_auto_device_map(*model_, options);
  }
  MapDevice where(const placement::DevicePlan& plan, const std::string& name) {
    return device_for(plan.device_map, name).value_or(MapDevice("mps"));
  }

  std::shared_ptr<models::CausalLM> model_;
  std::int64_t experts_ = 0, dense_ = 0;  // one block's experts; everything else
};

TEST_F(ExpertPlanTest, RoutedExpertModulesInOrder) {
  EXPECT_EQ(placement::routed_expert_modules(*model_, model_->no_split_module_classes()),
            (std::vector<std::string>{"model.layers.0.mlp.experts", "model.layers.1.mlp.experts",
                                      "model.layers.3.mlp.experts"}));
  EXPECT_EQ(experts_, 8 * 3 * 64 * 32 * 4);
}

TEST_F(ExpertPlanTest, ExpertsCpuKeepsEveryExpertOffTheGpu) {
  const auto p = plan(MaxMemory{{0, "1GiB"}, {"cpu", "1GiB"}}, {.keep_off_gpu = true});
  for (const char* layer : {"0", "1", "3"}) {
    const std::string block = fmt::format("model.layers.{}.mlp", layer);
    EXPECT_EQ(where(p, block + ".experts.5.up_proj.weight"), MapDevice("cpu")) << layer;
    EXPECT_EQ(where(p, block + ".gate.weight"), MapDevice(0)) << layer;
  }
  EXPECT_EQ(where(p, "model.layers.2.mlp.down_proj.weight"), MapDevice(0));
  EXPECT_EQ(where(p, "model.embed_tokens.weight"), MapDevice(0));
  EXPECT_EQ(where(p, "lm_head.weight"), MapDevice(0));
  EXPECT_EQ(p.used.at(MapDevice("cpu")), 3 * experts_);
  EXPECT_EQ(p.used.at(MapDevice(0)), dense_);
}

TEST_F(ExpertPlanTest, ExpertsFillTheGpuRoomLeftAfterTheDensePart) {
  // Room for the dense part and one and a half blocks of experts: block 0's experts fit, the
  // others go to the cpu.
  const auto p = plan(MaxMemory{{0, dense_ + experts_ * 3 / 2}, {"cpu", "1GiB"}}, {});
  EXPECT_EQ(where(p, "model.layers.0.mlp.experts.1.gate_proj.weight"), MapDevice(0));
  EXPECT_EQ(where(p, "model.layers.1.mlp.experts.1.gate_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.3.mlp.experts.1.gate_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.3.self_attn.q_proj.weight"), MapDevice(0));
  EXPECT_EQ(where(p, "model.norm.weight"), MapDevice(0));
  const std::string table = placement::explain_table(p);
  EXPECT_NE(table.find("no GPU room left"), std::string::npos) << table;
}

TEST_F(ExpertPlanTest, NCpuMoeSendsTheFirstBlocksExpertsToTheCpu) {
  const auto p = plan(MaxMemory{{0, "1GiB"}, {"cpu", "1GiB"}}, {.n_cpu_moe = 2});
  EXPECT_EQ(where(p, "model.layers.0.mlp.experts.0.up_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.1.mlp.experts.0.up_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.3.mlp.experts.0.up_proj.weight"), MapDevice(0));
}

TEST_F(ExpertPlanTest, ExpertsOverflowToDiskAndDenseToTheCpu) {
  // The GPU holds less than the dense part: the rest of the dense part goes to the cpu; the cpu
  // has room for one block of experts beyond that, the others go to disk.
  const auto p = plan(MaxMemory{{0, dense_ / 2}, {"cpu", dense_ + experts_}}, {});
  EXPECT_EQ(where(p, "model.embed_tokens.weight"), MapDevice(0));
  EXPECT_EQ(where(p, "lm_head.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.0.mlp.experts.0.up_proj.weight"), MapDevice("cpu"));
  EXPECT_EQ(where(p, "model.layers.3.mlp.experts.0.up_proj.weight"), MapDevice("disk"));
  EXPECT_EQ(p.used.at(MapDevice("disk")), 2 * experts_);
}

TEST_F(ExpertPlanTest, PatternsExpandToTheModelsNames) {
  const DeviceMap map = {
      {"", 0}, {"model.layers.*.mlp.experts", "cpu"}, {"model.layers.1.mlp.experts", "disk"}};
  const DeviceMap concrete = placement::expand_device_map_patterns(*model_, map);
  EXPECT_EQ(concrete, (DeviceMap{{"", 0},
                                 {"model.layers.0.mlp.experts", "cpu"},
                                 {"model.layers.3.mlp.experts", "cpu"},
                                 {"model.layers.1.mlp.experts", "disk"}}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        placement::expand_device_map_patterns(*model_, {{"model.layers.*.moe", "cpu"}});
      },
      {"model.layers.*.moe", "matches no module"}));
}

// A MoE fixture (Mixtral: block_sparse_moe) loaded with its experts on disk and the rest on the
// cpu by pattern maps: the logits and greedy tokens stay transformers'. The resident blocks'
// hooks leave the experts to their own offload hooks.
TEST(ExpertPatternDispatch, MixtralExpertsOnDiskMatchTransformers) {
  const ModelFixture f = load_model_fixture("mixtral");
  const std::string experts = "model.layers.*.block_sparse_moe.experts";
  const std::vector<DeviceMap> maps = {{{"", "cpu"}, {experts, "disk"}},
                                       {{"model.embed_tokens", "cpu"},
                                        {"model.layers.*", "cpu"},
                                        {"model.norm", "cpu"},
                                        {"model.rotary_emb", "cpu"},
                                        {"lm_head", "cpu"},
                                        {experts, "disk"}}};
  for (const DeviceMap& map : maps) {
    SCOPED_TRACE(placement::device_map_str(map));
    auto model = empty_fixture_model(f);
    TempDir tmp;
    placement::LoadAndDispatchOptions options;
    options.device_map = map;
    options.offload_folder = tmp.path() / "offload";
    const auto result = placement::load_checkpoint_and_dispatch(
        *model, model_fixture_dir(f.name) / "model.safetensors", options);
    ASSERT_TRUE(result.dispatch.has_value());
    EXPECT_EQ(
        result.load.offload_index.count("model.layers.1.block_sparse_moe.experts.3.w2.weight"), 1u);
    EXPECT_EQ(result.load.offload_index.count("model.layers.1.block_sparse_moe.gate.weight"), 0u);
    expect_float32_logits_match(f, model->run(f.prompt_ids).logits);
    expect_greedy_continuation_matches(f, *model);
  }
}

}  // namespace
}  // namespace strata::testing

// Pipelined micro-batches (models/pipeline.h) against the whole batch run at once: prefill
// logits, cached decode steps with one cache per micro-batch, padded rows, every split of the
// layers into stages and of the rows into micro-batches (float32, the stages on the cpu one after
// another in time but on their own threads); the stages of a device map; the errors.

#include "strata/models/pipeline.h"

#include <gtest/gtest.h>

#include "models/model_testing.h"
#include "ops/throws_naming.h"

namespace strata::testing {
namespace {

using models::PipelineOptions;
using models::PipelineStage;

// The fixture's two prompts as four rows: p0, p1, p1, p0.
Tensor four_rows(const Tensor& prompts) {
  const std::int64_t seq = prompts.size(1);
  Tensor out = Tensor::empty({4, seq}, DType::Int64);
  const int order[] = {0, 1, 1, 0};
  for (int r = 0; r < 4; ++r) out.narrow(0, r, 1).copy_(prompts.narrow(0, order[r], 1));
  return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<float> x = a.to(Device::cpu(), DType::Float32).to_vector<float>();
  const std::vector<float> y = b.to(Device::cpu(), DType::Float32).to_vector<float>();
  double worst = 0;
  for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(x[i] - y[i])));
  }
  return worst;
}

double max_abs(const Tensor& t) {
  return max_abs_diff(t, Tensor::zeros(t.shape(), DType::Float32));
}

// Every way to cut `layers` layers into one stage, two stages, and one stage per layer.
std::vector<std::vector<PipelineStage>> stage_splits(std::int64_t layers) {
  std::vector<std::vector<PipelineStage>> out = {{{0, layers}}};
  if (layers >= 2) out.push_back({{0, 1}, {1, layers}});
  if (layers >= 3) {
    std::vector<PipelineStage> each;
    for (std::int64_t i = 0; i < layers; ++i) each.push_back({i, i + 1});
    out.push_back(each);
  }
  return out;
}

class PipelineTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineTest, PrefillLogitsEqualTheWholeBatch) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = load_fixture_model(f, Device::cpu());
  const Tensor ids = four_rows(f.prompt_ids);
  const Tensor whole = model->run(ids).logits;
  const double scale = max_abs(f.logits);
  for (const auto& stages : stage_splits(model->config().num_layers)) {
    for (std::int64_t micro = 1; micro <= 4; ++micro) {
      PipelineOptions options;
      options.micro_batches = micro;
      const Tensor got = models::run_pipelined(*model, stages, ids, options);
      EXPECT_LE(max_abs_diff(got, whole), 1e-5 * scale)
          << stages.size() << " stages, " << micro << " micro-batches";
    }
  }
}

TEST_P(PipelineTest, CachedDecodeWithACachePerMicroBatchEqualsTheWholeBatch) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = load_fixture_model(f, Device::cpu());
  const Tensor ids = four_rows(f.prompt_ids);
  const std::int64_t layers = model->config().num_layers;
  const std::vector<PipelineStage> stages = stage_splits(layers).back();
  PipelineOptions options;
  options.micro_batches = 3;  // rows 2, 1, 1
  for (int m = 0; m < 3; ++m) options.caches.push_back(model->make_cache());
  auto whole_cache = model->make_cache();
  Tensor input = ids;
  const double scale = max_abs(f.logits);
  for (int step = 0; step < 4; ++step) {
    options.logits_to_keep = 1;
    const Tensor whole = model->run(input, whole_cache, 1).logits;
    const Tensor got = models::run_pipelined(*model, stages, input, options);
    EXPECT_LE(max_abs_diff(got, whole), 1e-5 * scale) << "step " << step;
    input = ops::argmax(whole, -1).to(Device::cpu(), DType::Int64).view({4, 1});
  }
  EXPECT_EQ(options.caches[0]->seq_length(0), whole_cache->seq_length(0));
}

TEST_P(PipelineTest, PaddedRowsKeepTheirMaskRows) {
  const ModelFixture f = load_model_fixture(GetParam());
  auto model = load_fixture_model(f, Device::cpu());
  const Tensor ids = four_rows(f.prompt_ids);
  const std::int64_t seq = ids.size(1);
  std::vector<std::int64_t> mask(static_cast<std::size_t>(4 * seq), 1);
  for (std::int64_t j = 0; j < 2; ++j) mask[static_cast<std::size_t>(1 * seq + j)] = 0;
  for (std::int64_t j = 0; j < 3; ++j) mask[static_cast<std::size_t>(3 * seq + j)] = 0;
  const Tensor attention = Tensor::from_vector(mask, {4, seq});
  const Tensor whole = model->run(ids, nullptr, 0, attention).logits;
  PipelineOptions options;
  options.micro_batches = 2;
  options.attention_mask = attention;
  const Tensor got =
      models::run_pipelined(*model, stage_splits(model->config().num_layers).back(), ids, options);
  EXPECT_LE(max_abs_diff(got, whole), 1e-5 * max_abs(f.logits));
}

INSTANTIATE_TEST_SUITE_P(Models, PipelineTest,
                         ::testing::Values("llama", "qwen3", "mixtral", "gemma3_text_softcap",
                                           "gpt_oss"));

TEST(Pipeline, StagesFollowTheDeviceMap) {
  using placement::MapDevice;
  const placement::DeviceMap map = {
      {"model.embed_tokens", MapDevice::gpu(0)}, {"model.layers.0", MapDevice::gpu(0)},
      {"model.layers.1", MapDevice::gpu(0)},     {"model.layers.2", MapDevice::gpu(1)},
      {"model.layers.3", MapDevice::cpu()},      {"model.layers.4", MapDevice::cpu()},
      {"model.norm", MapDevice::cpu()}};
  EXPECT_EQ(models::pipeline_stages(map, "model", 5),
            (std::vector<PipelineStage>{{0, 2}, {2, 3}, {3, 5}}));
  EXPECT_EQ(models::pipeline_stages({{"", MapDevice::gpu(0)}}, "model", 3),
            (std::vector<PipelineStage>{{0, 3}}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { models::pipeline_stages(map, "model", 6); },
                                             {"model.layers.5", "device map"}));
}

TEST(Pipeline, BadStagesMicroBatchesCachesAndFamiliesAreNamed) {
  const ModelFixture f = load_model_fixture("llama");
  auto model = load_fixture_model(f, Device::cpu());
  const std::int64_t n = model->config().num_layers;
  const Tensor ids = f.prompt_ids;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        models::run_pipelined(*model, {{0, 1}}, ids);
      },
      {"stages end at layer 1"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        models::run_pipelined(*model, {{1, n}}, ids);
      },
      {"stage 0", "start at 0"}));
  PipelineOptions options;
  options.micro_batches = 3;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        models::run_pipelined(*model, {{0, n}}, ids, options);
      },
      {"micro_batches is 3"}));
  options.micro_batches = 2;
  options.caches = {model->make_cache()};
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        models::run_pipelined(*model, {{0, n}}, ids, options);
      },
      {"1 caches for 2 micro-batches"}));
  const ModelFixture g = load_model_fixture("gpt2");
  auto gpt2 = load_fixture_model(g, Device::cpu());
  EXPECT_TRUE(throws_naming<NotSupported>(
      [&] {
        models::run_pipelined(*gpt2, {{0, 1}}, g.prompt_ids);
      },
      {"GPT2LMHeadModel"}));
}

}  // namespace
}  // namespace strata::testing

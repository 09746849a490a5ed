// `strata run` on the recorded fixtures: the printed continuation is transformers' greedy one and
// --dump-logits writes the prompt's logits within the float32 bound of the recorded ones, on the
// cpu and with weights offloaded to disk (explicit maps and the planner's).

#include "run_command.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sstream>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "strata/core/error.h"

namespace strata::cli {
namespace {

using testing::TempDir;

// As the model parity tests: the issue's float32 bound, relative to the logits' scale.
constexpr double kFloat32Tolerance = 1e-4;

struct RunCase {
  std::string fixture;
  std::string name;
  // A JSON device map written to the temp dir, or a strategy when it does not start with '{'.
  std::string device_map;
  std::optional<std::string> max_memory;
};

std::vector<RunCase> run_cases() {
  return {
      {"llama", "cpu_map", R"({"": "cpu"})", {}},
      {"llama",
       "cpu_disk_map",
       R"({"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu",
           "model.norm": "disk", "model.rotary_emb": "cpu", "lm_head": "disk"})",
       {}},
      {"llama", "auto_cpu", "auto", "cpu=1GiB"},
      // Each device keeps room for the largest layer: embeddings on the cpu, the rest on disk.
      {"llama", "auto_cpu_disk", "sequential", "cpu=160KiB"},
      {"gpt2", "cpu_map", R"({"": "cpu"})", {}},
      // lm_head is tied to transformer.wte: both on the cpu.
      {"gpt2",
       "cpu_disk_map",
       R"({"transformer.wte": "cpu", "transformer.wpe": "disk", "transformer.h.0": "disk",
           "transformer.h.1": "cpu", "transformer.ln_f": "disk", "lm_head": "cpu"})",
       {}},
      {"gpt2", "auto_cpu", "auto", "cpu=1GiB"},
  };
}

std::string ids_text(const Tensor& ids) {
  return fmt::format("{}", fmt::join(ids.to_vector<std::int64_t>(), ","));
}

class RunFixtureTest : public ::testing::TestWithParam<RunCase> {
 protected:
  RunArgs args(const testing::ModelFixture& f) {
    RunArgs a;
    a.model_dir = testing::model_fixture_dir(f.name).string();
    a.token_ids = ids_text(f.prompt_ids.select(0, 0));
    a.max_new_tokens = f.greedy_ids.size(1);
    a.dtype = "f32";
    a.max_memory = GetParam().max_memory;
    a.offload_folder = (dir_ / "offload").string();
    a.dump_logits = (dir_ / "logits.safetensors").string();
    a.device_map = GetParam().device_map;
    if (a.device_map.starts_with("{")) {
      testing::write_text(dir_ / "map.json", a.device_map);
      a.device_map = (dir_ / "map.json").string();
    }
    return a;
  }
  TempDir dir_;
};

TEST_P(RunFixtureTest, PrintsTheRecordedContinuationAndDumpsTheLogits) {
  const testing::ModelFixture f = testing::load_model_fixture(GetParam().fixture);
  std::ostringstream out, err;
  ASSERT_EQ(run_run(args(f), out, err), 0);
  EXPECT_EQ(out.str(), ids_text(f.greedy_ids) + "\n") << err.str();
  EXPECT_NE(err.str().find("prefill"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("per token"), std::string::npos) << err.str();

  const auto file = io::SafetensorsFile::open(dir_ / "logits.safetensors");
  ASSERT_EQ(file->entries().size(), 1u);
  const Tensor logits = file->tensor("logits");
  const Tensor expected = f.logits.select(0, 0);  // the first prompt's [sequence, vocab]
  EXPECT_EQ(logits.dtype(), DType::Float32);
  ASSERT_EQ(logits.shape(), expected.shape());
  const double scale = testing::max_abs(expected);
  const double diff = testing::max_abs_diff(logits, expected);
  EXPECT_LE(diff, kFloat32Tolerance * scale) << "max |diff| " << diff << " at scale " << scale;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RunFixtureTest, ::testing::ValuesIn(run_cases()),
                         [](const auto& info) {
                           return info.param.fixture + "_" + info.param.name;
                         });

TEST(RunCommand, DiskMapsRecordTheOffloadedWeights) {
  TempDir dir;
  const testing::ModelFixture f = testing::load_model_fixture("llama");
  testing::write_text(dir / "map.json", R"({"model": "cpu", "lm_head": "disk"})");
  RunArgs a;
  a.model_dir = testing::model_fixture_dir("llama").string();
  a.token_ids = ids_text(f.prompt_ids.select(0, 0));
  a.max_new_tokens = 2;
  a.device_map = (dir / "map.json").string();
  a.offload_folder = (dir / "offload").string();
  std::ostringstream out, err;
  ASSERT_EQ(run_run(a, out, err), 0);
  EXPECT_EQ(out.str(), ids_text(f.greedy_ids.narrow(1, 0, 2)) + "\n");
  const std::string index = testing::read_text(dir / "offload" / "index.json");
  EXPECT_NE(index.find("lm_head.weight"), std::string::npos) << index;
  EXPECT_EQ(index.find("model.embed_tokens.weight"), std::string::npos) << index;
}

// A tied lm_head on disk: the loader stores the weight once and resolves the other name.
TEST(RunCommand, TiedHeadOnDisk) {
  TempDir dir;
  const testing::ModelFixture f = testing::load_model_fixture("gpt2");
  RunArgs a;
  a.model_dir = testing::model_fixture_dir("gpt2").string();
  a.token_ids = ids_text(f.prompt_ids.select(0, 0));
  a.max_new_tokens = f.greedy_ids.size(1);
  a.max_memory = "cpu=100KiB";  // everything goes to disk
  a.offload_folder = (dir / "offload").string();
  std::ostringstream out, err;
  ASSERT_EQ(run_run(a, out, err), 0);
  EXPECT_EQ(out.str(), ids_text(f.greedy_ids) + "\n");
}

TEST(RunCommand, BadInputsAreErrorsBeforeAnyOutput) {
  TempDir dir;
  RunArgs good;
  good.model_dir = testing::model_fixture_dir("llama").string();
  good.token_ids = "1,2,3";
  good.max_new_tokens = 2;
  good.device_map = "auto";
  good.max_memory = "cpu=1GiB";
  auto expect_error = [&](RunArgs a, const std::string& what) {
    std::ostringstream out, err;
    EXPECT_THROW(run_run(a, out, err), Error) << what;
    EXPECT_TRUE(out.str().empty()) << what << ": " << out.str();
  };
  RunArgs a = good;
  a.model_dir = (dir / "missing").string();
  expect_error(a, "missing folder");
  a = good, a.max_memory = "cpu=lots";
  expect_error(a, "bad --max-memory");
  a = good, a.dtype = "f99";
  expect_error(a, "unknown dtype");
  a = good, a.dtype = "f64";
  expect_error(a, "dtype run does not support");
  for (const char* ids : {"", "1,,2", "a,b", "-1", "128"}) {  // the vocabulary has 128 tokens
    a = good, a.token_ids = ids;
    expect_error(a, fmt::format("token ids '{}'", ids));
  }
  a = good, a.max_new_tokens = 0;
  expect_error(a, "no new tokens");
  a = good, a.device_map = (dir / "missing.json").string();
  expect_error(a, "missing device map file");
  testing::write_text(dir / "partial.json",
                      R"({"model": "cpu"})");  // lm_head is not covered
  a = good, a.device_map = (dir / "partial.json").string();
  expect_error(a, "partial device map");

  std::ostringstream out, err;
  ASSERT_EQ(run_run(good, out, err), 0);  // the same arguments work once fixed
}

}  // namespace
}  // namespace strata::cli

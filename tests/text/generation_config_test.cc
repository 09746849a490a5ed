#include "strata/text/generation_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "strata/core/error.h"

namespace strata::text {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("strata_gen_cfg_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
             "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }

 private:
  fs::path path_;
};

TEST(GenerationConfig, ReadsEveryField) {
  const GenerationConfig c = parse_generation_config(
      R"({"eos_token_id": [128001, 128009], "bos_token_id": 128000, "pad_token_id": null,
          "do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.9, "min_p": 0.05,
          "repetition_penalty": 1.1, "max_new_tokens": 256, "max_length": 4096,
          "transformers_version": "4.45.0"})",
      "generation_config.json");
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int64_t>{128001, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.pad_token_id);
  EXPECT_TRUE(c.do_sample);
  EXPECT_DOUBLE_EQ(c.temperature, 0.6);
  EXPECT_EQ(c.top_k, 20);
  EXPECT_DOUBLE_EQ(c.top_p, 0.9);
  EXPECT_DOUBLE_EQ(*c.min_p, 0.05);
  EXPECT_DOUBLE_EQ(c.repetition_penalty, 1.1);
  EXPECT_EQ(c.max_new_tokens, 256);
  EXPECT_EQ(c.max_length, 4096);
  EXPECT_EQ(parse_generation_config(R"({"eos_token_id": 2})", "g").eos_token_ids,
            (std::vector<std::int64_t>{2}));
}

TEST(GenerationConfig, WrongTypesNameTheFileAndField) {
  const auto expect_refused = [](const std::string& json, const std::string& field) {
    try {
      parse_generation_config(json, "model/generation_config.json");
      ADD_FAILURE() << json << " was accepted";
    } catch (const CheckpointError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("model/generation_config.json"), std::string::npos) << what;
      EXPECT_NE(what.find(field), std::string::npos) << what;
    }
  };
  expect_refused(R"({"temperature": "hot"})", "temperature");
  expect_refused(R"({"eos_token_id": 2.5})", "eos_token_id");
  expect_refused(R"({"eos_token_id": [1, "x"]})", "eos_token_id");
  expect_refused(R"({"eos_token_id": -1})", "eos_token_id");
  expect_refused(R"({"top_k": -5})", "top_k");
  expect_refused(R"({"do_sample": 1})", "do_sample");
  expect_refused(R"({"max_new_tokens": 1.5})", "max_new_tokens");
  expect_refused(R"([1, 2])", "object");
  EXPECT_THROW(parse_generation_config("{not json", "g"), CheckpointError);
}

TEST(GenerationConfig, FallsBackToConfigJsonForSpecialTokens) {
  TempDir dir;
  dir.write("config.json", R"({"eos_token_id": 2, "bos_token_id": 1, "pad_token_id": 0})");
  dir.write("generation_config.json", R"({"eos_token_id": [7, 8], "temperature": 0.5})");
  GenerationConfig c = read_generation_config(dir.path());
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int64_t>{7, 8}));
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_DOUBLE_EQ(c.temperature, 0.5);
  dir.write("generation_config.json", R"({"do_sample": true})");
  c = read_generation_config(dir.path());
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int64_t>{2}));
  EXPECT_TRUE(c.do_sample);
  fs::remove(dir.path() / "generation_config.json");
  c = read_generation_config(dir.path());
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int64_t>{2}));
  EXPECT_FALSE(c.do_sample);
}

TEST(GenerationConfig, AbsentFilesGiveTransformersDefaults) {
  TempDir dir;
  const GenerationConfig c = read_generation_config(dir.path());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.source, "");
  // transformers' GenerationConfig() defaults, recorded by record_sampler_fixtures.py.
  std::ifstream in(fs::path(STRATA_TEST_FIXTURES_DIR) / "engine" / "sampler_cases.json");
  if (!in) GTEST_SKIP() << "sampler_cases.json not recorded yet";
  // transformers 5 stores None for unset options and applies these values inside generate();
  // the recorded fields that are set must equal ours.
  const auto d = nlohmann::json::parse(in).at("generation_config_defaults");
  if (!d.at("do_sample").is_null()) EXPECT_EQ(c.do_sample, d.at("do_sample").get<bool>());
  if (!d.at("temperature").is_null()) EXPECT_DOUBLE_EQ(c.temperature, d.at("temperature"));
  if (!d.at("top_k").is_null()) EXPECT_EQ(c.top_k, d.at("top_k").get<std::int64_t>());
  if (!d.at("top_p").is_null()) EXPECT_DOUBLE_EQ(c.top_p, d.at("top_p"));
  EXPECT_EQ(c.min_p.has_value(), !d.at("min_p").is_null());
  if (!d.at("repetition_penalty").is_null()) {
    EXPECT_DOUBLE_EQ(c.repetition_penalty, d.at("repetition_penalty"));
  }
  EXPECT_EQ(c.max_new_tokens.has_value(), !d.at("max_new_tokens").is_null());
}

}  // namespace
}  // namespace strata::text

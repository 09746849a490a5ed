// Parsing what users type: budgets, lists, token ids, device-map files, the model folder.

#include "cli_options.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "strata/core/error.h"

namespace strata::cli {
namespace {

using placement::MapDevice;
using testing::TempDir;
using testing::write_text;

constexpr std::int64_t kGiB = std::int64_t{1} << 30;

TEST(ParseMaxMemory, ReadsDevicesAndSizesInOrder) {
  const placement::MaxMemory m = parse_max_memory("cuda:0=10GiB, cpu=30GiB,disk=1.5GB");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.entries()[0], (placement::MaxMemory::Entry{MapDevice(0), 10 * kGiB}));
  EXPECT_EQ(m.entries()[1], (placement::MaxMemory::Entry{MapDevice::cpu(), 30 * kGiB}));
  EXPECT_EQ(m.entries()[2], (placement::MaxMemory::Entry{MapDevice::disk(), 1'500'000'000}));
  EXPECT_EQ(parse_max_memory("1=512MiB").at(MapDevice(1)), 512 << 20);
}

TEST(ParseMaxMemory, ReadsPlainIntegersAsBytes) {
  // What Accelerate's max_memory holds as Python ints, the recorded cases included.
  const placement::MaxMemory m = parse_max_memory("cuda:0=1347683123,1=673841561, cpu=0");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.entries()[0], (placement::MaxMemory::Entry{MapDevice(0), 1347683123}));
  EXPECT_EQ(m.entries()[1], (placement::MaxMemory::Entry{MapDevice(1), 673841561}));
  EXPECT_EQ(m.entries()[2], (placement::MaxMemory::Entry{MapDevice::cpu(), 0}));
  for (const char* bad : {"cpu=-5", "cpu=99999999999999999999", "cpu=12x", "cpu=1 2"}) {
    EXPECT_THROW(parse_max_memory(bad), InvalidArgument) << bad;
  }
}

TEST(ParseMaxMemory, RefusesMalformedEntries) {
  for (const char* bad : {"", "cpu", "cpu=", "=1GiB", "cpu=lots", "cpu=-1GiB", "gpu9=1GiB",
                          "cpu=1GiB,", "cpu=1GiB,cpu=2GiB", "cuda:0=1GiB,0=2GiB"}) {
    EXPECT_THROW(parse_max_memory(bad), InvalidArgument) << bad;
  }
}

TEST(ParseMaxMemory, NamesTheOptionAndTheEntry) {
  try {
    parse_max_memory("cuda:0=1GiB,cpu=lots");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--max-memory: 'cpu=lots'"), std::string::npos)
        << e.what();
  }
}

TEST(SplitList, TrimsAndRefusesEmptyItems) {
  EXPECT_EQ(split_list(" A, B ,C", "--no-split"), (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_THROW(split_list("A,,B", "--no-split"), InvalidArgument);
  EXPECT_THROW(split_list(" ", "--no-split"), InvalidArgument);
}

TEST(ParseTokenIds, ReadsNonNegativeIntegers) {
  EXPECT_EQ(parse_token_ids("1,2,3"), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(parse_token_ids(" 0 , 127"), (std::vector<std::int64_t>{0, 127}));
  for (const char* bad :
       {"", "1,,2", "x", "1,x", "-1", "1.5", "2e3", "3 4", "99999999999999999999"}) {
    EXPECT_THROW(parse_token_ids(bad), InvalidArgument) << bad;
  }
}

TEST(ReadDeviceMapFile, ReadsIndicesAndNamesInFileOrder) {
  TempDir dir;
  write_text(dir / "map.json",
             R"({"model.layers.1": "disk", "model.layers.0": 0, "lm_head": "cpu",
                                   "model.norm": "cuda:1"})");
  const placement::DeviceMap map = read_device_map_file(dir / "map.json");
  const placement::DeviceMap expected = {{"model.layers.1", MapDevice::disk()},
                                         {"model.layers.0", MapDevice(0)},
                                         {"lm_head", MapDevice::cpu()},
                                         {"model.norm", MapDevice(1)}};
  EXPECT_EQ(map, expected);
}

TEST(ReadDeviceMapFile, RefusesBadFiles) {
  TempDir dir;
  EXPECT_THROW(read_device_map_file(dir / "missing.json"), IoError);
  for (const char* bad : {"not json", "[1, 2]", "{}", R"({"lm_head": "tpu"})",
                          R"({"lm_head": 1.5})", R"({"lm_head": null})"}) {
    write_text(dir / "bad.json", bad);
    EXPECT_THROW(read_device_map_file(dir / "bad.json"), InvalidArgument) << bad;
  }
}

TEST(WriteDeviceMapFile, WritesWhatReadDeviceMapFileReads) {
  TempDir dir;
  const placement::DeviceMap map = {{"model.embed_tokens", MapDevice(0)},
                                    {"model.layers.0", MapDevice("cuda:1")},
                                    {"model.layers.1", MapDevice::disk()},
                                    {"lm_head", MapDevice::cpu()}};
  write_device_map_file(dir / "map.json", map);
  EXPECT_EQ(read_device_map_file(dir / "map.json"), map);
  // Accelerate's hf_device_map spelling: GPU indices as integers.
  std::ifstream in(dir / "map.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find(R"("model.layers.0": 1,)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("lm_head": "cpu")"), std::string::npos) << text;
  EXPECT_THROW(write_device_map_file(dir / "missing" / "map.json", map), IoError);
}

TEST(BuildEmptyModel, BuildsOnMetaInTheRequestedDtype) {
  const auto dir = testing::model_fixture_dir("llama");
  const EmptyModel empty = build_empty_model(dir, "bf16");
  EXPECT_EQ(empty.dtype, DType::BFloat16);
  EXPECT_EQ(empty.model->class_name(), "LlamaForCausalLM");
  EXPECT_EQ(empty.config.num_layers, 2);
  for (const auto& [name, tensor] : empty.model->state_dict()) {
    EXPECT_TRUE(tensor.is_meta()) << name;
    if (is_floating_point(tensor.dtype())) EXPECT_EQ(tensor.dtype(), DType::BFloat16) << name;
  }
  // The fixture's config.json names no dtype: float32.
  EXPECT_EQ(build_empty_model(dir, std::nullopt).dtype, DType::Float32);
}

TEST(BuildEmptyModel, RefusesMissingFoldersAndBadDtypes) {
  TempDir dir;
  EXPECT_THROW(build_empty_model(dir / "nope", std::nullopt), InvalidArgument);
  EXPECT_THROW(build_empty_model(dir.path(), std::nullopt),
               InvalidArgument);  // no config.json
  const auto llama = testing::model_fixture_dir("llama");
  EXPECT_THROW(build_empty_model(llama, "f99"), InvalidArgument);
  EXPECT_THROW(build_empty_model(llama, "int64"), InvalidArgument);
}

TEST(NoSplitClasses, DefaultsToTheDecoderBlock) {
  const EmptyModel gpt2 = build_empty_model(testing::model_fixture_dir("gpt2"), std::nullopt);
  EXPECT_EQ(no_split_classes(*gpt2.model, std::nullopt), (std::vector<std::string>{"GPT2Block"}));
  EXPECT_EQ(no_split_classes(*gpt2.model, "GPT2Block,GPT2MLP"),
            (std::vector<std::string>{"GPT2Block", "GPT2MLP"}));
  // "" (--no-split ""): none, any module may be split.
  EXPECT_TRUE(no_split_classes(*gpt2.model, "").empty());
  EXPECT_TRUE(no_split_classes(*gpt2.model, " ").empty());
}

}  // namespace
}  // namespace strata::cli

// Checkpoint discovery (the reference's rules) and CheckpointReader over single files and
// sharded checkpoints, including the bad-input classes that involve an index.

#include "strata/io/checkpoint.h"

#include <gtest/gtest.h>

#include "io/io_testing.h"
#include "ops/throws_naming.h"
#include "strata/core/logging.h"

namespace strata::io {
namespace {

namespace fs = std::filesystem;
using strata::testing::pattern_tensor;
using strata::testing::TempDir;
using strata::testing::tensor_bytes;
using strata::testing::throws_naming;
using strata::testing::write_text;

// A small model's state dict, in two shards: "embed" and layer 0 in the first, the rest in
// the second.
struct ShardedFixture {
  TempDir dir;
  std::map<std::string, Tensor> tensors = {
      {"embed.weight", pattern_tensor(DType::BFloat16, {8, 4}, 1)},
      {"layers.0.w", pattern_tensor(DType::Float32, {4, 4}, 2)},
      {"layers.0.b", pattern_tensor(DType::Float32, {4}, 3)},
      {"layers.1.w", pattern_tensor(DType::Float32, {4, 4}, 4)},
      {"norm.steps", pattern_tensor(DType::Int64, {}, 5)},
  };
  const std::string shard1 = "model-00001-of-00002.safetensors";
  const std::string shard2 = "model-00002-of-00002.safetensors";

  std::string shard_of(const std::string& name) const {
    return name.starts_with("embed") || name.starts_with("layers.0") ? shard1 : shard2;
  }

  explicit ShardedFixture(bool with_index = true) {
    std::vector<std::pair<std::string, Tensor>> a, b;
    for (const auto& [name, t] : tensors) (shard_of(name) == shard1 ? a : b).emplace_back(name, t);
    save_safetensors(dir / shard1, a);
    save_safetensors(dir / shard2, b);
    if (with_index) write_index("model.safetensors.index.json", /*bare=*/false);
  }

  void write_index(const std::string& file, bool bare) const {
    std::string map;
    for (const auto& [name, t] : tensors) {
      map += (map.empty() ? "" : ",") + ("\"" + name + "\":\"" + shard_of(name) + "\"");
    }
    write_text(dir / file, bare ? "{" + map + "}"
                                : R"({"metadata":{"total_size":213},"weight_map":{)" + map + "}}");
  }
};

void expect_same_tensors(const WeightSource& source, const std::map<std::string, Tensor>& want) {
  EXPECT_EQ(source.keys().size(), want.size());
  for (const auto& [name, t] : want) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(source.contains(name));
    const Tensor got = source.get(name);
    EXPECT_EQ(got.dtype(), t.dtype());
    EXPECT_EQ(got.shape(), t.shape());
    EXPECT_EQ(tensor_bytes(got), tensor_bytes(t));
    EXPECT_EQ(source.meta(name).nbytes(), t.nbytes());
  }
}

TEST(CheckpointDiscovery, SingleFileAnyExtension) {
  TempDir dir;
  save_safetensors(dir / "weights.st", {{"x", Tensor::ones({2})}});
  const auto layout = discover_checkpoint(dir / "weights.st");
  EXPECT_FALSE(layout.index.has_value());
  EXPECT_EQ(layout.shards, std::vector<fs::path>{dir / "weights.st"});
}

TEST(CheckpointDiscovery, FolderWithModelSafetensorsWinsOverAnIndex) {
  ShardedFixture f;
  save_safetensors(f.dir / "model.safetensors", {{"x", Tensor::ones({2})}});
  const auto layout = discover_checkpoint(f.dir.path());
  EXPECT_FALSE(layout.index.has_value());
  EXPECT_EQ(layout.shards, std::vector<fs::path>{f.dir / "model.safetensors"});
}

TEST(CheckpointDiscovery, FolderWithOneIndexAndTheIndexItself) {
  ShardedFixture f;
  for (const fs::path& p : {f.dir.path(), f.dir / "model.safetensors.index.json"}) {
    const auto layout = discover_checkpoint(p);
    ASSERT_TRUE(layout.index.has_value());
    EXPECT_EQ(*layout.index, f.dir / "model.safetensors.index.json");
    EXPECT_EQ(layout.shards, (std::vector<fs::path>{f.dir / f.shard1, f.dir / f.shard2}));
    EXPECT_EQ(layout.index_content.total_size, 213u);
    EXPECT_EQ(layout.index_content.weight_map.at("layers.1.w"), f.shard2);
  }
}

TEST(CheckpointDiscovery, BareIndexMapAsTheReferenceTestsWriteIt) {
  ShardedFixture f(/*with_index=*/false);
  f.write_index("weight_map.index.json", /*bare=*/true);
  CheckpointReader reader(f.dir.path());
  EXPECT_FALSE(reader.layout().index_content.total_size.has_value());
  expect_same_tensors(reader, f.tensors);
}

TEST(CheckpointDiscovery, SeveralIndexesPreferTheSafetensorsOneElseRefuse) {
  ShardedFixture f;
  write_text(f.dir / "pytorch_model.bin.index.json", R"({"weight_map":{"x":"a.bin"}})");
  EXPECT_EQ(*discover_checkpoint(f.dir.path()).index, f.dir / "model.safetensors.index.json");
  f.write_index("other.safetensors.index.json", false);
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { discover_checkpoint(f.dir.path()); },
      {f.dir.path().string(), "several index files", "other.safetensors.index.json"}));
}

TEST(CheckpointDiscovery, EmptyOrUnrelatedFolderSaysWhatItFound) {
  TempDir dir;
  write_text(dir / "README.md", "hi");
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { discover_checkpoint(dir.path()); },
      {dir.path().string(), "model.safetensors", "*.index.json", "'README.md'"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { discover_checkpoint(dir / "missing"); },
                                             {"missing", "does not exist"}));
}

TEST(CheckpointDiscovery, PyTorchFilesGetConversionAdvice) {
  TempDir dir;
  write_text(dir / "pytorch_model.bin", std::string("\x80\x02}q\x00.", 6));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { discover_checkpoint(dir.path()); },
      {"pytorch_model.bin", "save_pretrained", "safe_serialization=True", "arbitrary code"}));
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { discover_checkpoint(dir / "pytorch_model.bin"); },
                                     {"pytorch_model.bin", "safe_serialization=True"}));
  // An index whose shards are pickles.
  write_text(dir / "pytorch_model.bin.index.json", R"({"weight_map":{"w":"pytorch_model.bin"}})");
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { discover_checkpoint(dir.path()); },
                                     {"pytorch_model.bin.index.json", "safe_serialization=True"}));
  // A pickle or torch zip under a safetensors name is recognised by its content.
  write_text(dir / "renamed.safetensors", std::string("PK\x03\x04zip-data-here", 17));
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { CheckpointReader r(dir / "renamed.safetensors"); },
                                     {"renamed.safetensors", "safe_serialization"}));
}

TEST(CheckpointReader, ShardedCheckpointReadsEveryTensorInFileOrder) {
  ShardedFixture f;
  CheckpointReader reader(f.dir.path());
  expect_same_tensors(reader, f.tensors);
  EXPECT_EQ(reader.shards().size(), 2u);
  std::uint64_t total = 0;
  for (const auto& [n, t] : f.tensors) total += t.nbytes();
  EXPECT_EQ(reader.total_bytes(), total);
  // Shard by shard, by offset within a shard (the writer puts larger elements first).
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"layers.0.b", "layers.0.w", "embed.weight",
                                                     "norm.steps", "layers.1.w"}));
  const auto loc = reader.locate("layers.1.w");
  EXPECT_EQ(loc.file->path(), f.dir / f.shard2);
  EXPECT_EQ(reader.get("layers.1.w").data_ptr(),
            loc.file->mapping()->data() + loc.file->file_offset(*loc.entry));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { reader.get("nope"); },
                                             {"model.safetensors.index.json", "'nope'"}));
}

TEST(CheckpointReader, MissingShard) {
  ShardedFixture f;
  fs::remove(f.dir / f.shard2);
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { CheckpointReader r(f.dir.path()); },
      {"model.safetensors.index.json", f.shard2, "'layers.1.w'", "missing"}));
}

TEST(CheckpointReader, IndexNamingATensorAbsentFromItsShard) {
  ShardedFixture f;
  f.tensors.emplace("ghost.weight", Tensor::ones({1}));  // listed in the index only
  f.write_index("model.safetensors.index.json", false);
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { CheckpointReader r(f.dir.path()); },
      {"model.safetensors.index.json", "'ghost.weight'", f.shard2, "does not contain"}));
}

TEST(CheckpointReader, DamagedShardNamesTheShardAndTheTensor) {
  ShardedFixture f;
  const auto path = f.dir / f.shard2;
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 3);
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { CheckpointReader r(f.dir.path()); },
                                             {f.shard2, "'layers.1.w'", "truncated"}));
}

TEST(CheckpointReader, UnlistedShardTensorsAreIgnoredWithAWarning) {
  ShardedFixture f;
  f.tensors.erase("norm.steps");
  f.write_index("model.safetensors.index.json", false);
  std::vector<std::string> warnings;
  const auto previous =
      set_log_sink([&](LogLevel, const std::string& m) { warnings.push_back(m); });
  CheckpointReader reader(f.dir.path());
  set_log_sink(previous);
  EXPECT_FALSE(reader.contains("norm.steps"));
  expect_same_tensors(reader, f.tensors);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("1 tensors"), std::string::npos) << warnings[0];
}

TEST(CheckpointReader, TensorFlowAndFlaxWeightsAreRefused) {
  TempDir dir;
  save_safetensors(dir / "tf.safetensors", {{"x", Tensor::ones({1})}}, {{"format", "tf"}});
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { CheckpointReader r(dir / "tf.safetensors"); },
                                             {"tf.safetensors", "TensorFlow"}));
  save_safetensors(dir / "mlx.safetensors", {{"x", Tensor::ones({1})}}, {{"format", "mlx"}});
  EXPECT_EQ(CheckpointReader(dir / "mlx.safetensors").size(), 1u);
}

TEST(CheckpointIndex, MalformedIndexes) {
  const std::string src = "idx.json";
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { parse_checkpoint_index("[1]", src); },
                                             {src, "expected an object"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse_checkpoint_index(R"({"weight_map":[]})", src); }, {src, "weight_map"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse_checkpoint_index(R"({"weight_map":{"w":3}})", src); }, {src, "'w'", "3"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse_checkpoint_index(R"({"weight_map":{"w":"a","w":"b"}})", src); },
      {src, "'w'", "twice"}));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { parse_checkpoint_index(R"({"weight_map":{}})", src); }, {src, "no tensors"}));
  for (const char* shard : {"../escape.safetensors", "/etc/passwd", "", "a/../../b"}) {
    EXPECT_TRUE(throws_naming<CheckpointError>(
        [&] {
          parse_checkpoint_index(std::string(R"({"weight_map":{"w":")") + shard + "\"}}", src);
        },
        {src, "'w'", "inside the index's folder"}))
        << shard;
  }
  EXPECT_EQ(
      parse_checkpoint_index(R"({"weight_map":{"w":"sub/s.safetensors"}})", src).weight_map.at("w"),
      "sub/s.safetensors");
}

}  // namespace
}  // namespace strata::io

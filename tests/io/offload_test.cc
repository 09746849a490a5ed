// Offload folders: the reference's format (checked byte for byte where the reference report
// gives bytes), storage in the target dtype, merge semantics, and trust rules.

#include "strata/io/offload.h"

#include <gtest/gtest.h>

#include <thread>

#include "io/io_testing.h"
#include "ops/throws_naming.h"

namespace strata::io {
namespace {

namespace fs = std::filesystem;
using strata::testing::pattern_tensor;
using strata::testing::read_bytes;
using strata::testing::read_text;
using strata::testing::TempDir;
using strata::testing::tensor_bytes;
using strata::testing::throws_naming;
using strata::testing::write_text;

using Bytes = std::vector<std::uint8_t>;

TEST(OffloadFolder, RoundTripsEveryDTypeByteForByte) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::uint64_t seed = 11;
  for (const DType d : kAllDTypes) {
    tensors.emplace_back("m." + std::string(dtype_name(d)), pattern_tensor(d, {2, 3}, seed++));
  }
  offload_state_dict(dir.path(), tensors);
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.keys().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    EXPECT_EQ(read_bytes(dir / (name + ".dat")), tensor_bytes(t));  // raw, no header
    EXPECT_EQ(reader.index().at(name).dtype, t.dtype());
    const Tensor got = reader.get(name);
    EXPECT_EQ(got.dtype(), t.dtype());
    EXPECT_EQ(got.shape(), t.shape());
    EXPECT_EQ(tensor_bytes(got), tensor_bytes(t));
    EXPECT_FALSE(got.storage().writable());
  }
}

TEST(OffloadFolder, BFloat16IsStoredAsItsBitPatternsLikeTheReference) {
  // Reference report §2: bf16 [1.0, -2.0] is stored as the bytes 80 3f 00 c0.
  TempDir dir;
  offload_state_dict(dir.path(), {{"w", Tensor::from_doubles({1.0, -2.0}, {2}, DType::BFloat16)}});
  EXPECT_EQ(read_bytes(dir / "w.dat"), (Bytes{0x80, 0x3f, 0x00, 0xc0}));
  EXPECT_NE(read_text(dir / "index.json").find(R"("dtype": "bfloat16")"), std::string::npos);
}

TEST(OffloadFolder, IndexTextIsWhatPythonJsonDumpIndent2Writes) {
  TempDir dir;
  offload_state_dict(dir.path(),
                     {{"linear1.weight", Tensor::zeros({4, 3})},
                      {"batchnorm.num_batches_tracked", Tensor::zeros({}, DType::Int64)}});
  EXPECT_EQ(read_text(dir / "index.json"),
            "{\n"
            "  \"batchnorm.num_batches_tracked\": {\n"
            "    \"dtype\": \"int64\",\n"
            "    \"shape\": []\n"
            "  },\n"
            "  \"linear1.weight\": {\n"
            "    \"dtype\": \"float32\",\n"
            "    \"shape\": [\n"
            "      4,\n"
            "      3\n"
            "    ]\n"
            "  }\n"
            "}");
  // A 0-d tensor is stored as one element (8 bytes for an int64) and read back as 0-d.
  EXPECT_EQ(fs::file_size(dir / "batchnorm.num_batches_tracked.dat"), 8u);
  EXPECT_EQ(OffloadFolderReader(dir.path()).get("batchnorm.num_batches_tracked").shape(), Shape{});
}

TEST(OffloadFolder, StoresInTheTargetDTypeFp8Included) {
  TempDir dir;
  const Tensor src = Tensor::from_doubles({1.0, -2.0, 0.5}, {3}, DType::Float32);
  OffloadFolderWriter writer(dir.path());
  writer.write("bf16", src, DType::BFloat16);
  writer.write("e4m3", src, DType::Float8E4M3FN);
  writer.write("e5m2", src, DType::Float8E5M2);
  writer.commit();
  // Bit patterns worked out by hand from the formats (bias 127/7/15).
  EXPECT_EQ(read_bytes(dir / "bf16.dat"), (Bytes{0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f}));
  EXPECT_EQ(read_bytes(dir / "e4m3.dat"), (Bytes{0x38, 0xc0, 0x30}));
  EXPECT_EQ(read_bytes(dir / "e5m2.dat"), (Bytes{0x3c, 0xc0, 0x38}));
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.get("e4m3").dtype(), DType::Float8E4M3FN);
  EXPECT_EQ(reader.get("e5m2").to_doubles(), (std::vector<double>{1.0, -2.0, 0.5}));
  EXPECT_NE(read_text(dir / "index.json").find(R"("dtype": "float8_e4m3fn")"), std::string::npos);
}

TEST(OffloadFolder, ConversionOfLargeTensorsCrossesChunkBoundaries) {
  TempDir dir;
  const std::int64_t n = (1 << 20) * 2 + 123;  // more than two conversion chunks
  std::vector<double> values(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    values[static_cast<std::size_t>(i)] = double(i % 2048 - 1024);
  OffloadFolderWriter writer(dir.path());
  writer.write("big", Tensor::from_doubles(values, {n}, DType::Float32), DType::Float16);
  writer.commit();
  EXPECT_EQ(fs::file_size(dir / "big.dat"), static_cast<std::uintmax_t>(n) * 2);
  EXPECT_EQ(OffloadFolderReader(dir.path()).get("big").to_doubles(), values);  // exact in fp16
}

TEST(OffloadFolder, IntegerAndBoolTensorsAreNeverCastAcrossKinds) {
  TempDir dir;
  OffloadFolderWriter writer(dir.path());
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { writer.write("steps", Tensor::zeros({}, DType::Int64), DType::Float16); },
      {"'steps'", "int64", "float16"}));
  // The convenience helper applies the dtype to floating-point tensors only.
  offload_state_dict(dir.path(),
                     {{"steps", Tensor::zeros({}, DType::Int64)}, {"w", Tensor::zeros({2})}},
                     DType::Float16);
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.meta("steps").dtype, DType::Int64);
  EXPECT_EQ(reader.meta("w").dtype, DType::Float16);
}

TEST(OffloadFolder, AFolderWithoutIndexIsNotTrusted) {
  TempDir dir;
  {
    OffloadFolderWriter writer(dir.path());
    writer.write("a", Tensor::ones({2}));
    writer.write("b", Tensor::ones({2}));
  }  // destroyed without commit(): the .dat files exist, the index does not
  EXPECT_TRUE(fs::exists(dir / "a.dat"));
  EXPECT_FALSE(fs::exists(dir / "index.json"));
  EXPECT_TRUE(throws_naming<CheckpointError>(
      [&] { OffloadFolderReader r(dir.path()); },
      {dir.path().string(), "no index.json", "2 .dat files", "delete the folder"}));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir / "nope"); },
                                             {"nope", "does not exist"}));
}

TEST(OffloadFolder, IndexEntriesWithoutMatchingDataAreRefused) {
  TempDir dir;
  offload_state_dict(dir.path(), {{"a", Tensor::ones({4})}, {"b", Tensor::ones({2})}});
  fs::resize_file(dir / "a.dat", 12);
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir.path()); },
                                             {"a.dat", "'a'", "12 bytes", "16 bytes"}));
  fs::remove(dir / "a.dat");
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir.path()); },
                                             {"'a'", "a.dat", "missing"}));
}

TEST(OffloadFolder, SuccessiveWritersMergeIntoTheIndex) {
  TempDir dir;
  offload_state_dict(dir.path(), {{"a", Tensor::ones({1})}, {"b", Tensor::ones({1})}});
  offload_state_dict(dir.path(), {{"c", Tensor::ones({1})}});
  EXPECT_EQ(OffloadFolderReader(dir.path()).keys(), (std::vector<std::string>{"a", "b", "c"}));
}

// Replacing a named file, even with the same layout, first removes the index: a writer that
// dies before commit() leaves an incomplete folder, never old and new tensors that still load.
TEST(OffloadFolder, ReplacingANamedFileRetractsTheIndexUntilCommit) {
  TempDir dir;
  offload_state_dict(dir.path(), {{"a", Tensor::ones({4})}, {"b", Tensor::ones({1})}});
  {
    OffloadFolderWriter writer(dir.path());
    writer.write("c", Tensor::ones({2}));  // a new name: the index still stands
    EXPECT_EQ(OffloadFolderReader(dir.path()).keys(), (std::vector<std::string>{"a", "b"}));
    writer.write("b", Tensor::full({1}, 5.0, DType::Float32));  // same layout, new bytes
  }                                                             // never committed
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir.path()); },
                                             {dir.path().string()}));
  OffloadFolderWriter writer(dir.path());  // the next run writes again and commits
  writer.write("b", Tensor::full({1}, 5.0, DType::Float32));
  writer.write("a", Tensor::ones({4}), DType::Float16);
  writer.commit();
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(reader.meta("a").dtype, DType::Float16);
  EXPECT_EQ(reader.get("b").to_doubles(), std::vector<double>{5.0});
}

// The checkpoint loader records its zero-copy disk views through the writer, so they land in
// the same index, written last; a reference must name a safetensors file.
TEST(OffloadFolder, ReferencesIntoSafetensorsFilesAreCommittedWithTheData) {
  TempDir dir;
  save_safetensors(dir / "ck.safetensors",
                   {{"v", Tensor::from_doubles({3, 4}, {2}, DType::Float32)}});
  OffloadFolderWriter writer(dir / "offload");
  writer.write("w", Tensor::ones({2}));
  OffloadEntry view;
  view.dtype = DType::Float32;
  view.shape = {2};
  view.safetensors_file = (dir / "ck.safetensors").string();
  view.weight_name = "v";
  writer.add_reference("v", view);
  EXPECT_THROW(writer.add_reference("x", OffloadEntry{}), InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir / "offload" / "index.json"));
  writer.commit();
  const OffloadFolderReader reader(dir / "offload");
  EXPECT_EQ(reader.keys(), (std::vector<std::string>{"v", "w"}));
  EXPECT_EQ(reader.get("v").to_doubles(), (std::vector<double>{3, 4}));
}

TEST(OffloadFolder, EntriesPointingIntoSafetensorsFiles) {
  TempDir dir;
  save_safetensors(dir / "ck.safetensors",
                   {{"model.w", Tensor::from_doubles({1, 2}, {2}, DType::Float32)}});
  write_text(dir / "index.json",
             R"({"w": {"safetensors_file": "ck.safetensors", "weight_name": "model.w",)"
             R"( "dtype": "float16"}, "model.w": {"safetensors_file": ")" +
                 (dir / "ck.safetensors").string() + R"("}})");
  const OffloadFolderReader reader(dir.path());
  EXPECT_EQ(reader.meta("w").dtype, DType::Float16);
  EXPECT_EQ(reader.get("w").dtype(), DType::Float16);
  EXPECT_EQ(reader.get("w").to_doubles(), (std::vector<double>{1, 2}));
  EXPECT_EQ(reader.get("model.w").dtype(), DType::Float32);  // absolute path, key as name
  write_text(dir / "index.json", R"({"w": {"safetensors_file": "gone.safetensors"}})");
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { OffloadFolderReader r(dir.path()); },
                                             {"'w'", "gone.safetensors", "does not exist"}));
}

TEST(OffloadFolder, ConcurrentReadersSeeTheSameBytes) {
  TempDir dir;
  const Tensor t = pattern_tensor(DType::Float32, {64, 64}, 9);
  offload_state_dict(dir.path(), {{"w", t}});
  const OffloadFolderReader reader(dir.path());
  std::vector<std::thread> threads;
  std::vector<const void*> seen(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back(
        [&, i] { seen[static_cast<std::size_t>(i)] = reader.get("w").data_ptr(); });
  }
  for (auto& th : threads) th.join();
  for (const void* p : seen) EXPECT_EQ(p, seen[0]);  // one mapping, opened once
  EXPECT_EQ(tensor_bytes(reader.get("w")), tensor_bytes(t));
}

TEST(OffloadIndex, MalformedIndexes) {
  const std::string src = "off/index.json";
  const auto refuses = [&](const std::string& text, std::initializer_list<std::string> words) {
    std::vector<std::string> w(words);
    return throws_naming<CheckpointError>([&] { parse_offload_index(text, src); }, words);
  };
  EXPECT_TRUE(refuses("[]", {src, "expected an object"}));
  EXPECT_TRUE(
      refuses(R"({"a": {"dtype": "complex64", "shape": [1]}})", {src, "'a'", "'complex64'"}));
  EXPECT_TRUE(refuses(R"({"a": {"shape": [1]}})", {src, "'a'", "no dtype"}));
  EXPECT_TRUE(refuses(R"({"a": {"dtype": "float32"}})", {src, "'a'", "shape"}));
  EXPECT_TRUE(refuses(R"({"a": {"dtype": "float32", "shape": [-1]}})", {src, "'a'", "-1"}));
  EXPECT_TRUE(refuses(R"({"a": {"dtype": "float32", "shape": [4294967296, 4294967296]}})",
                      {src, "'a'", "too large"}));
  EXPECT_TRUE(refuses(R"({"../x": {"dtype": "float32", "shape": [1]}})", {src, "'../x'", "'/'"}));
  EXPECT_TRUE(
      refuses(R"({"a": {"dtype": "float32", "shape": [1]}, "a": {}})", {src, "'a'", "twice"}));
  EXPECT_TRUE(refuses(R"({"a": {"safetensors_file": 3}})", {src, "'a'", "safetensors_file"}));
  EXPECT_TRUE(
      refuses(R"({"a": {"safetensors_file": "f", "dtype": "float99"}})", {src, "'float99'"}));
  EXPECT_TRUE(refuses("{\"a\": ", {src, "not valid JSON"}));
  // Names are file names: the writer refuses what the reader would refuse.
  TempDir dir;
  OffloadFolderWriter writer(dir.path());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { writer.write("a/b", Tensor::ones({1})); },
                                             {"'a/b'", "file name"}));
}

}  // namespace
}  // namespace strata::io

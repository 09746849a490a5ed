// safetensors reading and writing: round trips for every dtype, zero-copy views, the layout the
// writer produces (checked independently by parsing the bytes here), alignment handling.

#include "strata/io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/io_testing.h"
#include "ops/throws_naming.h"

namespace strata::io {
namespace {

using strata::testing::pattern_tensor;
using strata::testing::read_bytes;
using strata::testing::TempDir;
using strata::testing::tensor_bytes;
using strata::testing::throws_naming;

std::vector<std::pair<std::string, Tensor>> one_of_each_dtype() {
  std::vector<std::pair<std::string, Tensor>> out;
  std::uint64_t seed = 1;
  for (const DType d : kAllDTypes) {
    out.emplace_back(std::string("t_") + std::string(dtype_name(d)),
                     pattern_tensor(d, {3, 5}, seed++));
  }
  return out;
}

TEST(Safetensors, RoundTripsEveryDTypeByteForByte) {
  TempDir dir;
  const auto tensors = one_of_each_dtype();
  save_safetensors(dir / "all.safetensors", tensors, {{"note", "round trip"}});
  const auto file = SafetensorsFile::open(dir / "all.safetensors");
  ASSERT_EQ(file->entries().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const Tensor t = file->tensor(name);
    EXPECT_EQ(t.dtype(), expected.dtype());
    EXPECT_EQ(t.shape(), expected.shape());
    EXPECT_EQ(tensor_bytes(t), tensor_bytes(expected));
  }
  EXPECT_EQ(file->metadata().at("note"), "round trip");
  EXPECT_EQ(file->metadata().at("format"), "pt");  // added by default for transformers
}

TEST(Safetensors, ScalarsEmptyTensorsAndNonContiguousInputs) {
  TempDir dir;
  const Tensor scalar = Tensor::full({}, 3.5, DType::Float32);
  const Tensor empty = Tensor::empty({0, 4}, DType::BFloat16);
  const Tensor base = pattern_tensor(DType::Int32, {4, 6}, 7);
  const Tensor transposed = base.transpose(0, 1);  // non-contiguous: written row-major
  save_safetensors(dir / "m.safetensors",
                   {{"scalar", scalar}, {"empty", empty}, {"transposed", transposed}});
  const auto file = SafetensorsFile::open(dir / "m.safetensors");
  EXPECT_EQ(file->tensor("scalar").shape(), Shape{});
  EXPECT_EQ(file->tensor("scalar").item(), 3.5);
  EXPECT_EQ(file->tensor("empty").shape(), (Shape{0, 4}));
  EXPECT_EQ(file->tensor("empty").numel(), 0);
  EXPECT_EQ(file->tensor("transposed").shape(), (Shape{6, 4}));
  EXPECT_EQ(file->tensor("transposed").to_vector<std::int32_t>(),
            transposed.contiguous().to_vector<std::int32_t>());
}

TEST(Safetensors, TensorsAreReadOnlyZeroCopyViewsThatKeepTheMappingAlive) {
  TempDir dir;
  save_safetensors(dir / "v.safetensors", {{"w", pattern_tensor(DType::Float32, {8, 8}, 3)}});
  Tensor view;
  const std::uint8_t* mapped = nullptr;
  {
    const auto file = SafetensorsFile::open(dir / "v.safetensors");
    const auto& e = file->entry("w");
    EXPECT_TRUE(file->is_zero_copy(e));
    view = file->tensor(e);
    mapped = file->mapping()->data() + file->file_offset(e);
    EXPECT_EQ(view.data_ptr(), mapped);
    EXPECT_FALSE(view.storage().writable());
    EXPECT_FALSE(view.storage().owns_memory());
  }
  // The file object is gone; the view still reads the mapping.
  EXPECT_EQ(view.data_ptr(), mapped);
  EXPECT_EQ(tensor_bytes(view), tensor_bytes(pattern_tensor(DType::Float32, {8, 8}, 3)));
  EXPECT_THROW(view.copy_(Tensor::zeros({8, 8})), Error);
}

TEST(Safetensors, WriterLayoutIsAlignedContiguousAndPaddedWithSpaces) {
  TempDir dir;
  // Mixed element sizes and names out of order, so the writer has to sort.
  save_safetensors(dir / "l.safetensors", {{"b_u8", pattern_tensor(DType::UInt8, {3}, 1)},
                                           {"a_f64", pattern_tensor(DType::Float64, {2}, 2)},
                                           {"c_bf16", pattern_tensor(DType::BFloat16, {5}, 3)},
                                           {"d_f32", pattern_tensor(DType::Float32, {1}, 4)},
                                           {"e_i8", pattern_tensor(DType::Int8, {7}, 5)}});
  const auto bytes = read_bytes(dir / "l.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string text(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  const auto json = nlohmann::json::parse(text);
  // Only spaces after the JSON object, fewer than 8 of them.
  const std::string padding = text.substr(text.rfind('}') + 1);
  EXPECT_EQ(padding.find_first_not_of(' '), std::string::npos);
  EXPECT_LT(padding.size(), 8u);
  // Data order: largest element size first, then by name; no gaps; ends at the file's end.
  const std::vector<std::pair<std::string, std::uint64_t>> expected_order = {
      {"a_f64", 16}, {"d_f32", 4}, {"c_bf16", 10}, {"b_u8", 3}, {"e_i8", 7}};
  std::uint64_t offset = 0;
  for (const auto& [name, size] : expected_order) {
    SCOPED_TRACE(name);
    const auto offsets = json.at(name).at("data_offsets");
    EXPECT_EQ(offsets[0].get<std::uint64_t>(), offset);
    EXPECT_EQ(offsets[1].get<std::uint64_t>(), offset + size);
    offset += size;
  }
  EXPECT_EQ(8 + n + offset, bytes.size());
  EXPECT_EQ(json.at("__metadata__").at("format"), "pt");
}

TEST(Safetensors, MisalignedTensorsAreCopiedOutAligned) {
  // A valid file whose F32 tensor starts at data offset 1 (legal in the format): reading it
  // must not hand out a misaligned float view.
  std::string header = R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  // Pad the header so the data area is 8-aligned: then data offset 1 is certainly misaligned.
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<std::uint8_t> bytes(8);
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.push_back(0x7f);
  const float values[2] = {1.5f, -2.25f};
  const auto* vb = reinterpret_cast<const std::uint8_t*>(values);
  bytes.insert(bytes.end(), vb, vb + sizeof(values));

  TempDir dir;
  strata::testing::write_bytes(dir / "mis.safetensors", bytes);
  const auto file = SafetensorsFile::open(dir / "mis.safetensors");
  const auto& e = file->entry("x");
  EXPECT_FALSE(file->is_zero_copy(e));
  const Tensor x = file->tensor(e);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(x.data_ptr()) % alignof(float), 0u);
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_TRUE(file->is_zero_copy(file->entry("pad")));
  EXPECT_EQ(file->tensor("pad").to_vector<std::uint8_t>(), std::vector<std::uint8_t>{0x7f});
}

TEST(Safetensors, WriterRejectsDuplicateReservedAndMetaTensors) {
  TempDir dir;
  const Tensor t = Tensor::zeros({2});
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        save_safetensors(dir / "d.safetensors", {{"a", t}, {"a", t}});
      },
      {"'a'", "twice"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        save_safetensors(dir / "d.safetensors", {{"__metadata__", t}});
      },
      {"reserved"}));
  const Tensor meta(Storage(), Device::meta(), DType::Float32, {2}, {1}, 0);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        save_safetensors(dir / "d.safetensors", {{"m", meta}});
      },
      {"'m'", "no data"}));
  EXPECT_FALSE(std::filesystem::exists(dir / "d.safetensors"));
  // Nothing left behind by the failed writes either.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Safetensors, ManyTensorsLookUpByName) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (int i = 0; i < 500; ++i) {
    tensors.emplace_back("layers." + std::to_string(i) + ".w", Tensor::full({2}, i, DType::Int64));
  }
  save_safetensors(dir / "many.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir / "many.safetensors");
  EXPECT_EQ(file->entries().size(), 500u);
  for (int i = 0; i < 500; i += 37) {
    EXPECT_EQ(file->tensor("layers." + std::to_string(i) + ".w").to_vector<std::int64_t>(),
              (std::vector<std::int64_t>{i, i}));
  }
  EXPECT_FALSE(file->contains("layers.500.w"));
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { file->entry("nope"); }, {"many.safetensors", "'nope'"}));
}

TEST(Safetensors, OverwritingReplacesTheFileAtomically) {
  TempDir dir;
  save_safetensors(dir / "o.safetensors", {{"x", Tensor::full({4}, 1.0, DType::Float32)}});
  const auto old_file = SafetensorsFile::open(dir / "o.safetensors");
  const Tensor old_view = old_file->tensor("x");
  save_safetensors(dir / "o.safetensors", {{"x", Tensor::full({4}, 2.0, DType::Float32)}});
  // The old mapping still sees the old inode: a rename never truncates a mapped file.
  EXPECT_EQ(old_view.to_vector<float>(), std::vector<float>(4, 1.0f));
  EXPECT_EQ(SafetensorsFile::open(dir / "o.safetensors")->tensor("x").to_vector<float>(),
            std::vector<float>(4, 2.0f));
}

}  // namespace
}  // namespace strata::io

namespace strata::io {
namespace {

TEST(MappedFile, ReadCopiesTheSameBytesWithOrWithoutADescriptor) {
  strata::testing::TempDir dir;
  const Tensor t = strata::testing::pattern_tensor(DType::Int16, {1000}, 5);
  save_safetensors(dir / "r.safetensors", {{"x", t}});
  const auto file = SafetensorsFile::open(dir / "r.safetensors");
  const auto& e = file->entry("x");
  std::vector<std::uint8_t> out(e.nbytes());
  file->read_into(e, out.data());  // pread
  EXPECT_EQ(out, strata::testing::tensor_bytes(t));
  file->mapping()->populate(file->file_offset(e), e.nbytes());  // a hint: no visible effect
  file->mapping()->will_need(0, 1 << 30);                       // clipped to the file

  const auto plain = MappedFile::open(dir / "r.safetensors", /*keep_descriptor=*/false);
  std::vector<std::uint8_t> again(e.nbytes());
  plain->read(file->file_offset(e), again.data(), e.nbytes());  // memcpy from the mapping
  EXPECT_EQ(again, out);
  EXPECT_TRUE(strata::testing::throws_naming<InvalidArgument>(
      [&] { plain->read(plain->size() - 1, again.data(), 2); }, {"r.safetensors"}));
}

// Reads over 8 MiB are split into pieces copied by several threads: every byte lands at its
// place, whatever the offset and a length that is not a multiple of the piece.
TEST(MappedFile, LargeReadsSplitOverThreadsKeepEveryByteInPlace) {
  strata::testing::TempDir dir;
  std::vector<std::uint8_t> bytes((std::size_t{25} << 20) + 12345);
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::uint8_t>(i * 131 + (i >> 16));
  strata::testing::write_bytes(dir / "big.bin", bytes);
  for (const bool keep_descriptor : {true, false}) {
    const auto file = MappedFile::open(dir / "big.bin", keep_descriptor);
    const std::uint64_t offset = 4097;
    std::vector<std::uint8_t> out(bytes.size() - offset - 3);
    file->read(offset, out.data(), out.size());
    EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin() + offset)) << keep_descriptor;
  }
}

// Resident kB of the mapping that holds `address` (/proc/self/smaps), -1 when not found.
std::int64_t mapped_rss_kb(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long begin = 0, end = 0;
    const auto dash = line.find('-');
    if (dash != std::string::npos && dash < 17 && line.find(':') > dash &&
        std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2) {
      inside = begin <= at && at < end;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stoll(line.substr(4));
    }
  }
  return -1;
}

TEST(MappedFile, PopulatePagesMapsAViewsPagesInOneCall) {
  // A fresh mapping has no page in its page tables; populate_pages maps those of the range it is
  // given (widened to whole pages), so computing from the view faults no more.
  strata::testing::TempDir dir;
  std::vector<std::uint8_t> bytes(std::size_t{4} << 20, 7);
  strata::testing::write_bytes(dir / "weights.bin", bytes);
  const auto file = MappedFile::open(dir / "weights.bin", /*keep_descriptor=*/false);
  EXPECT_EQ(mapped_rss_kb(file->data()), 0);
  EXPECT_FALSE(populate_pages(file->data(), 0));  // nothing to do
  if (!populate_pages(file->data() + 5000, std::size_t{2} << 20)) {
    GTEST_SKIP() << "this kernel has no MADV_POPULATE_READ (Linux 5.14)";
  }
  const std::int64_t rss = mapped_rss_kb(file->data());
  // The 2 MiB asked for, from the page holding byte 5000 (the kernel may map more around them:
  // fault-around, large folios of the page cache).
  EXPECT_GE(rss, 2048);
  EXPECT_EQ(file->data()[5000 + (std::size_t{1} << 20)], 7);
}

TEST(MappedFile, RefusesFoldersAndMissingFiles) {
  strata::testing::TempDir dir;
  EXPECT_TRUE(strata::testing::throws_naming<IoError>([&] { MappedFile::open(dir.path()); },
                                                      {"not a regular file"}));
  EXPECT_TRUE(strata::testing::throws_naming<IoError>([&] { MappedFile::open(dir / "none"); },
                                                      {"none", "cannot open"}));
  strata::testing::write_text(dir / "empty", "");
  EXPECT_EQ(MappedFile::open(dir / "empty")->size(), 0u);
}

}  // namespace
}  // namespace strata::io

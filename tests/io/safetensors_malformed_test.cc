// The malformed-file corpus: one file per class of damage, each derived from a valid file and
// each refused with a CheckpointError that names the file (and the tensor at fault, where
// there is one). ASan/UBSan runs of this binary check that nothing reads out of bounds.

#include <gtest/gtest.h>

#include <cstring>

#include "io/io_testing.h"
#include "strata/io/safetensors.h"

namespace strata::io {
namespace {

using strata::testing::TempDir;

// A safetensors file from header text and data bytes (the header length is filled in).
std::vector<std::uint8_t> make_file(const std::string& header, std::size_t data_bytes,
                                    std::uint8_t fill = 0x11) {
  std::vector<std::uint8_t> out(8);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data_bytes, fill);
  return out;
}

// The valid file the damaged ones derive from: two F32 tensors, 24 + 16 bytes.
const std::string kValidHeader = R"({"__metadata__":{"format":"pt"},)"
                                 R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                                 R"("b":{"dtype":"F32","shape":[4],"data_offsets":[24,40]}})";

class Malformed : public ::testing::Test {
 protected:
  // Writes `bytes` as <name>.safetensors and expects both opening it and parsing the bytes in
  // memory (what the fuzzer drives) to throw CheckpointError mentioning the file and `words`.
  ::testing::AssertionResult refused(const std::string& name,
                                     const std::vector<std::uint8_t>& bytes,
                                     std::initializer_list<std::string> words) {
    const auto path = dir_ / (name + ".safetensors");
    strata::testing::write_bytes(path, bytes);
    std::vector<std::string> expected(words);
    expected.push_back(path.string());
    for (const bool from_file : {true, false}) {
      const char* how = from_file ? "SafetensorsFile::open" : "parse_safetensors_header";
      try {
        if (from_file) {
          SafetensorsFile::open(path);
        } else {
          parse_safetensors_header(bytes, path.string());
        }
        return ::testing::AssertionFailure() << how << " accepted " << name;
      } catch (const CheckpointError& e) {
        for (const auto& w : expected) {
          if (std::string(e.what()).find(w) == std::string::npos) {
            return ::testing::AssertionFailure()
                   << how << ": message lacks '" << w << "': " << e.what();
          }
        }
      } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << how << " threw another error: " << e.what();
      }
    }
    return ::testing::AssertionSuccess();
  }

  TempDir dir_;
};

TEST_F(Malformed, TheValidBaseFileIsAccepted) {
  const auto path = dir_ / "valid.safetensors";
  strata::testing::write_bytes(path, make_file(kValidHeader, 40));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->entries().size(), 2u);
  EXPECT_EQ(file->entry("b").nbytes(), 16u);
}

TEST_F(Malformed, TruncatedData) {
  auto bytes = make_file(kValidHeader, 40);
  bytes.resize(bytes.size() - 5);  // the last tensor loses its tail
  EXPECT_TRUE(refused("truncated", bytes, {"'b'", "[24, 40]", "35 bytes", "truncated"}));
}

TEST_F(Malformed, TruncatedInsideTheHeaderOrTheLengthField) {
  auto bytes = make_file(kValidHeader, 40);
  bytes.resize(30);
  EXPECT_TRUE(refused("truncated_header", bytes, {"header length", "22 bytes", "truncated"}));
  bytes.resize(5);
  EXPECT_TRUE(refused("truncated_length", bytes, {"5 bytes", "8-byte header length"}));
  EXPECT_TRUE(refused("empty", {}, {"0 bytes"}));
}

TEST_F(Malformed, HeaderLengthLargerThanTheFile) {
  auto bytes = make_file(kValidHeader, 40);
  const std::uint64_t n = bytes.size();  // one file's worth past the length field
  std::memcpy(bytes.data(), &n, 8);
  EXPECT_TRUE(refused("header_len", bytes, {"header length", "larger than"}));
}

TEST_F(Malformed, HeaderLengthOverTheLimit) {
  auto bytes = make_file(kValidHeader, 40);
  const std::uint64_t n = 0xffffffffffffull;
  std::memcpy(bytes.data(), &n, 8);
  EXPECT_TRUE(refused("header_huge", bytes, {"over the 100000000 byte limit"}));
}

TEST_F(Malformed, InvalidJson) {
  std::string header = kValidHeader;
  header[header.find("\"b\"") + 3] = ';';  // "b";{...}
  EXPECT_TRUE(refused("invalid_json", make_file(header, 40), {"not valid JSON"}));
}

TEST_F(Malformed, InvalidUtf8InAName) {
  std::string header = kValidHeader;
  header[header.find("\"b\"") + 1] = '\xff';
  EXPECT_TRUE(refused("bad_utf8", make_file(header, 40), {"not valid JSON", "UTF-8"}));
}

TEST_F(Malformed, HeaderNotStartingWithABrace) {
  EXPECT_TRUE(refused("bom", make_file("\xef\xbb\xbf" + kValidHeader, 40), {"'{'"}));
  EXPECT_TRUE(refused("array", make_file("[1, 2]", 0), {"'{'"}));
}

TEST_F(Malformed, UnknownDType) {
  std::string header = kValidHeader;
  header.replace(header.find("\"F32\",\"shape\":[4]"), 5, "\"F4\"");
  EXPECT_TRUE(refused("unknown_dtype", make_file(header, 40), {"'b'", "'F4'", "BF16"}));
}

TEST_F(Malformed, ShapeAndOffsetsDisagree) {
  std::string header = kValidHeader;
  header.replace(header.find("[2,3]"), 5, "[2,4]");
  EXPECT_TRUE(refused("shape_mismatch", make_file(header, 40),
                      {"'a'", "[2, 4]", "needs 32 bytes", "span 24 bytes"}));
}

TEST_F(Malformed, ShapeWhoseByteSizeOverflows) {
  std::string header = kValidHeader;
  header.replace(header.find("[2,3]"), 5, "[4611686018427387904,8]");
  EXPECT_TRUE(refused("shape_overflow", make_file(header, 40), {"'a'", "more than 2^64"}));
}

TEST_F(Malformed, OverlappingOffsets) {
  std::string header = kValidHeader;
  header.replace(header.find("[24,40]"), 7, "[20,36]");
  EXPECT_TRUE(refused("overlap", make_file(header, 40), {"'a'", "'b'", "overlap"}));
}

TEST_F(Malformed, OffsetsOutOfRange) {
  std::string header = kValidHeader;
  header.replace(header.find("[24,40]"), 7, "[40,56]");
  EXPECT_TRUE(refused("out_of_range", make_file(header, 40), {"'b'", "[40, 56]", "only 40 bytes"}));
  header = kValidHeader;
  header.replace(header.find("[24,40]"), 7, "[40,24]");
  EXPECT_TRUE(refused("reversed", make_file(header, 40), {"'b'", "begin <= end"}));
}

TEST_F(Malformed, DuplicateNames) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                             R"("a":{"dtype":"F32","shape":[4],"data_offsets":[24,40]}})";
  EXPECT_TRUE(refused("duplicate", make_file(header, 40), {"'a'", "twice"}));
}

TEST_F(Malformed, DuplicateKeyInsideAnEntry) {
  std::string header = kValidHeader;
  header.replace(header.find("\"shape\":[4]"), 11, R"("shape":[4],"shape":[2,2])");
  EXPECT_TRUE(refused("duplicate_inner", make_file(header, 40), {"'shape'", "twice"}));
}

TEST_F(Malformed, WrongValueTypes) {
  std::string header = kValidHeader;
  header.replace(header.find("[2,3]"), 5, "[2,-3]");
  EXPECT_TRUE(refused("negative_dim", make_file(header, 40), {"'a'", "-3", "non-negative"}));
  header = kValidHeader;
  header.replace(header.find("[0,24]"), 6, "[0,24.0]");
  EXPECT_TRUE(refused("float_offset", make_file(header, 40), {"'a'", "data_offsets"}));
  header = kValidHeader;
  header.replace(header.find("{\"format\":\"pt\"}"), 15, "{\"format\":1}");
  EXPECT_TRUE(refused("metadata_int", make_file(header, 40), {"__metadata__", "'format'"}));
  header = R"({"a":[1,2]})";
  EXPECT_TRUE(refused("entry_array", make_file(header, 0), {"'a'", "an array"}));
  header = R"({"a":{"dtype":"F32","shape":[1]}})";
  EXPECT_TRUE(refused("no_offsets", make_file(header, 4), {"'a'", "data_offsets"}));
}

TEST_F(Malformed, DeepNesting) {
  std::string header = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_TRUE(refused("deep", make_file(header, 0), {"nested deeper"}));
}

TEST_F(Malformed, GapsAndTrailingBytesAreAccepted) {
  // Unlike the reference reader, gaps are tolerated: they waste bytes but mislead nobody.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                             R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})";
  const auto path = dir_ / "gaps.safetensors";
  strata::testing::write_bytes(path, make_file(header, 32));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensor("a").numel(), 2);
  EXPECT_EQ(file->tensor("e").numel(), 0);
}

}  // namespace
}  // namespace strata::io

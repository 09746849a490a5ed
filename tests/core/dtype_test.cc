#include <gtest/gtest.h>

#include <set>

#include "strata/core/dtype.h"
#include "strata/core/dtype_traits.h"

namespace strata {
namespace {

TEST(DType, IdsAreFixed) {
  // Serialized formats store these numbers: they must never change.
  EXPECT_EQ(static_cast<int>(DType::Bool), 0);
  EXPECT_EQ(static_cast<int>(DType::UInt8), 1);
  EXPECT_EQ(static_cast<int>(DType::Int8), 2);
  EXPECT_EQ(static_cast<int>(DType::Int16), 3);
  EXPECT_EQ(static_cast<int>(DType::Int32), 4);
  EXPECT_EQ(static_cast<int>(DType::Int64), 5);
  EXPECT_EQ(static_cast<int>(DType::Float16), 6);
  EXPECT_EQ(static_cast<int>(DType::BFloat16), 7);
  EXPECT_EQ(static_cast<int>(DType::Float32), 8);
  EXPECT_EQ(static_cast<int>(DType::Float64), 9);
  EXPECT_EQ(static_cast<int>(DType::Float8E4M3FN), 10);
  EXPECT_EQ(static_cast<int>(DType::Float8E5M2), 11);
}

TEST(DType, SizesMatchTheCppTypes) {
  for (DType d : kAllDTypes) {
    const std::size_t cpp_size =
        visit_dtype(d, [](auto tag) { return sizeof(typename decltype(tag)::type); });
    EXPECT_EQ(dtype_size(d), cpp_size) << dtype_name(d);
    EXPECT_EQ(visit_dtype(d, [](auto tag) { return dtype_of<typename decltype(tag)::type>; }), d);
  }
}

TEST(DType, SafetensorsNamesRoundTrip) {
  const std::set<std::string_view> expected = {"BOOL", "U8",  "I8",  "I16",     "I32",    "I64",
                                               "F16",  "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"};
  std::set<std::string_view> seen;
  for (DType d : kAllDTypes) {
    seen.insert(safetensors_name(d));
    EXPECT_EQ(dtype_from_safetensors(safetensors_name(d)), d);
  }
  EXPECT_EQ(seen, expected);
  EXPECT_FALSE(dtype_from_safetensors("F4").has_value());
  EXPECT_FALSE(dtype_from_safetensors("f32").has_value());  // the format's names are upper-case
}

TEST(DType, ParsesWhatUsersWrite) {
  EXPECT_EQ(parse_dtype("float32"), DType::Float32);
  EXPECT_EQ(parse_dtype("torch.bfloat16"), DType::BFloat16);
  EXPECT_EQ(parse_dtype("bf16"), DType::BFloat16);
  EXPECT_EQ(parse_dtype("BF16"), DType::BFloat16);
  EXPECT_EQ(parse_dtype("fp16"), DType::Float16);
  EXPECT_EQ(parse_dtype("half"), DType::Float16);
  EXPECT_EQ(parse_dtype("F8_E4M3"), DType::Float8E4M3FN);
  EXPECT_EQ(parse_dtype("float8_e5m2"), DType::Float8E5M2);
  EXPECT_EQ(parse_dtype("int64"), DType::Int64);
  for (DType d : kAllDTypes) EXPECT_EQ(parse_dtype(dtype_name(d)), d);
}

TEST(DType, UnknownNameIsAClearError) {
  try {
    parse_dtype("float128");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("float128"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("bfloat16"), std::string::npos);
  }
}

TEST(DType, Categories) {
  EXPECT_TRUE(is_floating_point(DType::BFloat16));
  EXPECT_TRUE(is_floating_point(DType::Float8E5M2));
  EXPECT_FALSE(is_floating_point(DType::Int32));
  EXPECT_FALSE(is_floating_point(DType::Bool));
  EXPECT_TRUE(is_integral(DType::UInt8));
  EXPECT_FALSE(is_integral(DType::Bool));
  EXPECT_TRUE(is_float8(DType::Float8E4M3FN));
  EXPECT_FALSE(is_float8(DType::Float16));
}

}  // namespace
}  // namespace strata

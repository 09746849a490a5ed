#pragma once
// Element types. The numeric ids are part of serialized formats: never renumber them, only append.

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace strata {

enum class DType : std::uint8_t {
  Bool = 0,
  UInt8 = 1,
  Int8 = 2,
  Int16 = 3,
  Int32 = 4,
  Int64 = 5,
  Float16 = 6,
  BFloat16 = 7,
  Float32 = 8,
  Float64 = 9,
  Float8E4M3FN = 10,
  Float8E5M2 = 11,
};

inline constexpr int kNumDTypes = 12;

// Every dtype, in id order (handy for tests and loops over all pairs).
inline constexpr DType kAllDTypes[kNumDTypes] = {
    DType::Bool,    DType::UInt8,    DType::Int8,    DType::Int16,
    DType::Int32,   DType::Int64,    DType::Float16, DType::BFloat16,
    DType::Float32, DType::Float64,  DType::Float8E4M3FN, DType::Float8E5M2};

// Bytes per element.
std::size_t dtype_size(DType dtype);
// PyTorch's name without the "torch." prefix: "float32", "bfloat16", "float8_e4m3fn", ...
std::string_view dtype_name(DType dtype);
// Name used in safetensors headers: "F32", "BF16", "F8_E4M3", ...
std::string_view safetensors_name(DType dtype);
std::optional<DType> dtype_from_safetensors(std::string_view name);

// Parses what users write: "float32", "torch.float32", "f32", "fp32", "bf16", "half", "F8_E4M3"...
// Throws InvalidArgument listing the accepted names.
DType parse_dtype(std::string_view text);

bool is_floating_point(DType dtype);  // f16, bf16, f32, f64, both fp8
bool is_integral(DType dtype);        // u8, i8, i16, i32, i64 (bool excluded)
bool is_float8(DType dtype);

// Prints the PyTorch name (GoogleTest uses this for parameterised test names and messages).
std::ostream& operator<<(std::ostream& os, DType dtype);

}  // namespace strata

template <>
struct fmt::formatter<strata::DType> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(strata::DType dtype, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(strata::dtype_name(dtype), ctx);
  }
};

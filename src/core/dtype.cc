#include "strata/core/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <ostream>
#include <string>

#include "strata/core/error.h"

namespace strata {
namespace {

struct DTypeInfo {
  DType dtype;
  std::size_t size;
  std::string_view name;         // PyTorch's, without "torch."
  std::string_view safetensors;  // safetensors header name
  std::string_view short_name;   // what people type: f32, bf16, ...
};

// Indexed by the dtype id.
constexpr std::array<DTypeInfo, kNumDTypes> kInfo = {{
    {DType::Bool, 1, "bool", "BOOL", "bool"},
    {DType::UInt8, 1, "uint8", "U8", "u8"},
    {DType::Int8, 1, "int8", "I8", "i8"},
    {DType::Int16, 2, "int16", "I16", "i16"},
    {DType::Int32, 4, "int32", "I32", "i32"},
    {DType::Int64, 8, "int64", "I64", "i64"},
    {DType::Float16, 2, "float16", "F16", "f16"},
    {DType::BFloat16, 2, "bfloat16", "BF16", "bf16"},
    {DType::Float32, 4, "float32", "F32", "f32"},
    {DType::Float64, 8, "float64", "F64", "f64"},
    {DType::Float8E4M3FN, 1, "float8_e4m3fn", "F8_E4M3", "f8_e4m3"},
    {DType::Float8E5M2, 1, "float8_e5m2", "F8_E5M2", "f8_e5m2"},
}};

const DTypeInfo& info(DType dtype) {
  const auto id = static_cast<std::size_t>(dtype);
  STRATA_ASSERT(id < kInfo.size(), "invalid dtype id {}", id);
  return kInfo[id];
}

// Other spellings people use, lower-case.
struct Alias {
  std::string_view text;
  DType dtype;
};
constexpr Alias kAliases[] = {
    {"fp16", DType::Float16},  {"half", DType::Float16},   {"fp32", DType::Float32},
    {"float", DType::Float32}, {"fp64", DType::Float64},   {"double", DType::Float64},
    {"long", DType::Int64},    {"int", DType::Int32},      {"short", DType::Int16},
    {"float8_e4m3", DType::Float8E4M3FN}, {"fp8_e4m3", DType::Float8E4M3FN},
    {"fp8_e5m2", DType::Float8E5M2},     {"fp8", DType::Float8E4M3FN},
};

}  // namespace

std::size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
std::string_view safetensors_name(DType dtype) { return info(dtype).safetensors; }

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (const auto& i : kInfo) {
    if (i.safetensors == name) return i.dtype;
  }
  return std::nullopt;
}

DType parse_dtype(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view key = lower;
  if (key.starts_with("torch.")) key.remove_prefix(6);
  for (const auto& i : kInfo) {
    if (key == i.name || key == i.short_name) return i.dtype;
    // safetensors names, case-insensitive
    std::string st(i.safetensors);
    std::transform(st.begin(), st.end(), st.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (key == st) return i.dtype;
  }
  for (const auto& a : kAliases) {
    if (key == a.text) return a.dtype;
  }
  STRATA_THROW(InvalidArgument,
               "unknown dtype '{}': expected one of bool, uint8, int8, int16, int32, int64, "
               "float16 (f16, half), bfloat16 (bf16), float32 (f32, float), float64 (f64), "
               "float8_e4m3fn (f8_e4m3), float8_e5m2 (f8_e5m2); a 'torch.' prefix is accepted",
               text);
}

bool is_floating_point(DType dtype) {
  switch (dtype) {
    case DType::Float16:
    case DType::BFloat16:
    case DType::Float32:
    case DType::Float64:
    case DType::Float8E4M3FN:
    case DType::Float8E5M2: return true;
    default: return false;
  }
}

bool is_integral(DType dtype) {
  switch (dtype) {
    case DType::UInt8:
    case DType::Int8:
    case DType::Int16:
    case DType::Int32:
    case DType::Int64: return true;
    default: return false;
  }
}

std::ostream& operator<<(std::ostream& os, DType dtype) { return os << dtype_name(dtype); }

bool is_float8(DType dtype) { return dtype == DType::Float8E4M3FN || dtype == DType::Float8E5M2; }

}  // namespace strata

#pragma once
// Compile-time mapping between C++ element types and DType, and `visit_dtype`, which calls a
// generic lambda with a tag for the runtime dtype (the switch lives here, once).

#include <cstdint>
#include <type_traits>

#include "strata/core/dtype.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"

namespace strata {

template <typename T>
struct DTypeOf;
#define STRATA_DTYPE_OF(CppType, Enum) \
  template <>                          \
  struct DTypeOf<CppType> {            \
    static constexpr DType value = DType::Enum; \
  };
STRATA_DTYPE_OF(bool, Bool)
STRATA_DTYPE_OF(std::uint8_t, UInt8)
STRATA_DTYPE_OF(std::int8_t, Int8)
STRATA_DTYPE_OF(std::int16_t, Int16)
STRATA_DTYPE_OF(std::int32_t, Int32)
STRATA_DTYPE_OF(std::int64_t, Int64)
STRATA_DTYPE_OF(Half, Float16)
STRATA_DTYPE_OF(BFloat16, BFloat16)
STRATA_DTYPE_OF(float, Float32)
STRATA_DTYPE_OF(double, Float64)
STRATA_DTYPE_OF(Float8E4M3FN, Float8E4M3FN)
STRATA_DTYPE_OF(Float8E5M2, Float8E5M2)
#undef STRATA_DTYPE_OF

template <typename T>
inline constexpr DType dtype_of = DTypeOf<std::remove_cv_t<T>>::value;

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) for the C++ type T of `dtype`.
template <typename F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Bool: return f(TypeTag<bool>{});
    case DType::UInt8: return f(TypeTag<std::uint8_t>{});
    case DType::Int8: return f(TypeTag<std::int8_t>{});
    case DType::Int16: return f(TypeTag<std::int16_t>{});
    case DType::Int32: return f(TypeTag<std::int32_t>{});
    case DType::Int64: return f(TypeTag<std::int64_t>{});
    case DType::Float16: return f(TypeTag<Half>{});
    case DType::BFloat16: return f(TypeTag<BFloat16>{});
    case DType::Float32: return f(TypeTag<float>{});
    case DType::Float64: return f(TypeTag<double>{});
    case DType::Float8E4M3FN: return f(TypeTag<Float8E4M3FN>{});
    case DType::Float8E5M2: return f(TypeTag<Float8E5M2>{});
  }
  STRATA_THROW(InternalError, "visit_dtype: invalid dtype id {}", static_cast<int>(dtype));
}

}  // namespace strata

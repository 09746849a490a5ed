// Element conversion between any two of the 12 dtypes, with PyTorch's CPU `tensor.to(dtype)`
// rules (docs/dtype-conversions.md):
//   - 16/8-bit floats are converted through float, from every source (double rounds twice, as
//     c10 does); ints -> 16/8-bit floats also go through float.
//   - float -> bool is `value != 0` (NaN is true); bool -> anything is 0/1; int -> narrower int
//     wraps (two's complement).
//   - float -> int truncates toward zero; out-of-range and NaN follow x86-64 (see
//     float_to_integer), never C++ undefined behaviour.
// Loads and stores go through memcpy so unaligned buffers (e.g. mmapped checkpoints) are fine,
// and the contiguous loops have compile-time steps so the compiler can vectorise them.

#include "strata/core/convert.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "strata/core/dtype_traits.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"
#include "strata/core/parallel.h"

#if defined(__FAST_MATH__)
#error "strata/core/convert.cc must not be compiled with -ffast-math"
#endif

namespace strata {
namespace {

// Bool elements are handled as bytes: any non-zero byte reads as true (reading a stray 0x02 from
// a file through a `bool` would be undefined behaviour).
struct BoolByte {
  std::uint8_t value;
};

template <typename T>
using Stored = std::conditional_t<std::is_same_v<T, bool>, BoolByte, T>;

template <typename T>
inline constexpr bool kIsNarrowFloat =
    std::is_same_v<T, Half> || std::is_same_v<T, BFloat16> || std::is_same_v<T, Float8E4M3FN> ||
    std::is_same_v<T, Float8E5M2>;

// Exact widening of the 16/8-bit formats (inline bodies, so loops vectorise).
inline float to_float(Half v) { return detail::fp32_from_fp16(v.bits); }
inline float to_float(BFloat16 v) { return bfloat16_bits_to_float(v.bits); }
inline float to_float(Float8E4M3FN v) { return detail::fp32_from_fp8e4m3fn(v.bits); }
inline float to_float(Float8E5M2 v) { return detail::fp32_from_fp8e5m2(v.bits); }

template <typename D>
inline D narrow_from_float(float v) {
  if constexpr (std::is_same_v<D, Half>) {
    return Half::from_bits(detail::fp16_from_fp32(v));
  } else if constexpr (std::is_same_v<D, BFloat16>) {
    return BFloat16::from_bits(float_to_bfloat16_bits(v));
  } else if constexpr (std::is_same_v<D, Float8E4M3FN>) {
    return Float8E4M3FN::from_bits(detail::fp8e4m3fn_from_fp32(v));
  } else {
    static_assert(std::is_same_v<D, Float8E5M2>);
    return Float8E5M2::from_bits(detail::fp8e5m2_from_fp32(v));
  }
}

// Truncation toward zero into int32 / int64. What C++ leaves undefined (NaN, out of range) gets
// the x86-64 answer (cvttss2si / cvttsd2si): the "integer indefinite" value, i.e. the minimum.
inline std::int32_t float_to_i32(float v) {
  return v >= -0x1p31f && v < 0x1p31f ? static_cast<std::int32_t>(v)
                                      : std::numeric_limits<std::int32_t>::min();
}
inline std::int32_t float_to_i32(double v) {
  // (-2^31 - 1, 2^31): anything in it truncates into range.
  return v > -2147483649.0 && v < 2147483648.0 ? static_cast<std::int32_t>(v)
                                               : std::numeric_limits<std::int32_t>::min();
}
template <typename F>
inline std::int64_t float_to_i64(F v) {
  // No float or double lies strictly between -2^63 - 1 and -2^63.
  return v >= F(-0x1p63) && v < F(0x1p63) ? static_cast<std::int64_t>(v)
                                          : std::numeric_limits<std::int64_t>::min();
}

// float/double -> integer dtype, as PyTorch's x86-64 build computes c10::convert: int8/int16
// truncate to int32 then keep the low bits (the compiler's cvttss2si eax); uint8 goes through
// int64 (c10's static_cast_with_inter_type for uint8); int64 uses the 64-bit conversion.
template <typename D, typename F>
inline D float_to_integer(F v) {
  if constexpr (std::is_same_v<D, std::int64_t>) {
    return float_to_i64(v);
  } else if constexpr (std::is_same_v<D, std::uint8_t>) {
    return static_cast<std::uint8_t>(float_to_i64(v));
  } else {
    return static_cast<D>(float_to_i32(v));
  }
}

template <typename D, typename S>
inline D convert_value(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<S, BoolByte>) {
    return convert_value<D>(static_cast<std::uint8_t>(s.value != 0));
  } else if constexpr (std::is_same_v<D, BoolByte>) {
    if constexpr (kIsNarrowFloat<S>) {
      return BoolByte{static_cast<std::uint8_t>(to_float(s) != 0.0f)};
    } else {
      return BoolByte{static_cast<std::uint8_t>(s != 0)};  // NaN != 0 holds: NaN is true
    }
  } else if constexpr (std::is_integral_v<D>) {
    if constexpr (std::is_integral_v<S>) {
      return static_cast<D>(s);  // modular since C++20: wraps like PyTorch
    } else if constexpr (kIsNarrowFloat<S>) {
      return float_to_integer<D>(to_float(s));
    } else {
      return float_to_integer<D>(s);
    }
  } else if constexpr (std::is_same_v<D, float> || std::is_same_v<D, double>) {
    if constexpr (kIsNarrowFloat<S>) {
      return static_cast<D>(to_float(s));
    } else {
      return static_cast<D>(s);  // ints round to nearest even; double -> float likewise
    }
  } else {
    // 16/8-bit destinations: always through float, as c10's constructors take a float.
    if constexpr (kIsNarrowFloat<S>) {
      return narrow_from_float<D>(to_float(s));
    } else {
      return narrow_from_float<D>(static_cast<float>(s));
    }
  }
}

template <typename T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename D, typename S>
void convert_contiguous(const std::byte* src, std::byte* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    store<D>(dst + i * sizeof(D), convert_value<D>(load<S>(src + i * sizeof(S))));
  }
}

template <typename D, typename S>
void convert_strided(const std::byte* src, std::int64_t src_step, std::byte* dst,
                     std::int64_t dst_step, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    store<D>(dst + i * dst_step, convert_value<D>(load<S>(src + i * src_step)));
  }
}

// Below this many elements a conversion stays on the calling thread.
constexpr std::int64_t kParallelGrain = std::int64_t{1} << 16;

// Runs fn(begin, end) over [0, n), on the pool when n is large.
template <typename Fn>
void for_chunks(std::int64_t n, const Fn& fn) {
  if (n < 2 * kParallelGrain) {
    fn(std::int64_t{0}, n);
  } else {
    parallel_for(n, kParallelGrain, fn);
  }
}

// Whether `count` elements at `src` (`src_step` bytes apart, `src_size` each) and at `dst` share a
// byte. Exact when both advance by the same step (views of one tensor, e.g. two columns);
// otherwise the byte spans are compared, which may also refuse interleaved ranges that don't
// touch.
bool ranges_overlap(const void* src, std::int64_t src_step, std::int64_t src_size, const void* dst,
                    std::int64_t dst_step, std::int64_t dst_size, std::int64_t count) {
  const auto s = reinterpret_cast<std::intptr_t>(src);
  const auto d = reinterpret_cast<std::intptr_t>(dst);
  const auto span = [count](std::intptr_t base, std::int64_t step, std::int64_t size) {
    const std::int64_t last = step * (count - 1);
    return std::pair{base + std::min<std::int64_t>(last, 0),
                     base + std::max<std::int64_t>(last, 0) + size};
  };
  const auto [s_begin, s_end] = span(s, src_step, src_size);
  const auto [d_begin, d_end] = span(d, dst_step, dst_size);
  if (s_end <= d_begin || d_end <= s_begin) return false;
  if (src_step != dst_step || src_step == 0) return true;
  // Element i of src and j of dst are (d - s) + k * step bytes apart, k = j - i in
  // [-(count-1), count-1]; they share a byte iff -dst_size < distance < src_size. The distances
  // nearest to zero decide it.
  const std::int64_t delta = d - s;
  const std::int64_t period = src_step < 0 ? -src_step : src_step;
  std::int64_t k0 = -delta / period;
  if (-delta % period < 0) --k0;  // floor division
  for (std::int64_t k : {k0, k0 + 1}) {
    k = std::clamp<std::int64_t>(k, -(count - 1), count - 1);
    const std::int64_t distance = delta + k * period;
    if (-dst_size < distance && distance < src_size) return true;
  }
  return false;
}

void check_arguments(const char* fn, const void* src, DType src_dtype, std::int64_t src_stride,
                     const void* dst, DType dst_dtype, std::int64_t dst_stride, std::size_t count) {
  STRATA_CHECK_ARG(src != nullptr && dst != nullptr,
                   "{}: null {} pointer for {} elements ({} -> {}); pass allocated buffers", fn,
                   src == nullptr ? "source" : "destination", count, src_dtype, dst_dtype);
  STRATA_CHECK_ARG(count <= static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()),
                   "{}: count {} is larger than int64 allows", fn, count);
  STRATA_CHECK_ARG(dst_stride != 0 || count == 1,
                   "{}: destination stride 0 would write {} elements ({} -> {}) to one place; "
                   "use a non-zero destination stride",
                   fn, count, src_dtype, dst_dtype);
  const auto src_size = static_cast<std::int64_t>(dtype_size(src_dtype));
  const auto dst_size = static_cast<std::int64_t>(dtype_size(dst_dtype));
  STRATA_CHECK_ARG(!ranges_overlap(src, src_stride * src_size, src_size, dst, dst_stride * dst_size,
                                   dst_size, static_cast<std::int64_t>(count)),
                   "{}: the source ({} elements of {}, stride {}, at {}) and the destination "
                   "({}, stride {}, at {}) share memory; convert into a separate buffer",
                   fn, count, src_dtype, src_stride, src, dst_dtype, dst_stride, dst);
}

}  // namespace

void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                      std::size_t count) {
  if (count == 0 || (src == dst && src_dtype == dst_dtype)) return;
  check_arguments("convert_elements", src, src_dtype, 1, dst, dst_dtype, 1, count);
  const auto* in = static_cast<const std::byte*>(src);
  auto* out = static_cast<std::byte*>(dst);
  const auto n = static_cast<std::int64_t>(count);
  if (src_dtype == dst_dtype) {
    const std::size_t elem = dtype_size(src_dtype);
    for_chunks(n, [&](std::int64_t begin, std::int64_t end) {
      std::memcpy(out + begin * elem, in + begin * elem,
                  static_cast<std::size_t>(end - begin) * elem);
    });
    return;
  }
  visit_dtype(src_dtype, [&](auto src_tag) {
    using S = Stored<typename decltype(src_tag)::type>;
    visit_dtype(dst_dtype, [&](auto dst_tag) {
      using D = Stored<typename decltype(dst_tag)::type>;
      for_chunks(n, [&](std::int64_t begin, std::int64_t end) {
        convert_contiguous<D, S>(in + begin * sizeof(S), out + begin * sizeof(D), end - begin);
      });
    });
  });
}

void convert_elements_strided(const void* src, DType src_dtype, std::int64_t src_stride, void* dst,
                              DType dst_dtype, std::int64_t dst_stride, std::size_t count) {
  if (count == 0) return;
  if (src == dst && src_dtype == dst_dtype && src_stride == dst_stride) return;
  if (src_stride == 1 && dst_stride == 1) {
    convert_elements(src, src_dtype, dst, dst_dtype, count);
    return;
  }
  check_arguments("convert_elements_strided", src, src_dtype, src_stride, dst, dst_dtype,
                  dst_stride, count);
  const auto* in = static_cast<const std::byte*>(src);
  auto* out = static_cast<std::byte*>(dst);
  const auto n = static_cast<std::int64_t>(count);
  visit_dtype(src_dtype, [&](auto src_tag) {
    using S = Stored<typename decltype(src_tag)::type>;
    visit_dtype(dst_dtype, [&](auto dst_tag) {
      using D = Stored<typename decltype(dst_tag)::type>;
      const std::int64_t src_step = src_stride * static_cast<std::int64_t>(sizeof(S));
      const std::int64_t dst_step = dst_stride * static_cast<std::int64_t>(sizeof(D));
      for_chunks(n, [&](std::int64_t begin, std::int64_t end) {
        convert_strided<D, S>(in + begin * src_step, src_step, out + begin * dst_step, dst_step,
                              end - begin);
      });
    });
  });
}

}  // namespace strata

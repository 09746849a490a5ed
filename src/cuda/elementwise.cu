// Strided converting copies (casts between all 12 dtypes, PyTorch's rules), activations and
// broadcasting add/mul.

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

struct BoolByte {
  std::uint8_t value;
};

template <typename T>
inline constexpr bool kNarrowFloat = std::is_same_v<T, HalfBits> || std::is_same_v<T, BF16Bits> ||
                                     std::is_same_v<T, E4M3Bits> || std::is_same_v<T, E5M2Bits>;

template <typename D>
__device__ __forceinline__ D narrow_from_float(float v) {
  if constexpr (std::is_same_v<D, HalfBits>) {
    return HalfBits{fp16_from_fp32(v)};
  } else if constexpr (std::is_same_v<D, BF16Bits>) {
    return BF16Bits{bf16_from_fp32(v)};
  } else if constexpr (std::is_same_v<D, E4M3Bits>) {
    return E4M3Bits{fp8e4m3fn_from_fp32(v)};
  } else {
    return E5M2Bits{fp8e5m2_from_fp32(v)};
  }
}

// Truncation with the x86-64 answer (the minimum) for NaN and out-of-range, as the CPU path.
template <typename F>
__device__ __forceinline__ std::int32_t to_i32(F v) {
  if constexpr (std::is_same_v<F, float>) {
    return v >= -0x1p31f && v < 0x1p31f ? static_cast<std::int32_t>(v) : INT32_MIN;
  } else {
    return v > -2147483649.0 && v < 2147483648.0 ? static_cast<std::int32_t>(v) : INT32_MIN;
  }
}
template <typename F>
__device__ __forceinline__ std::int64_t to_i64(F v) {
  return v >= F(-0x1p63) && v < F(0x1p63) ? static_cast<std::int64_t>(v) : INT64_MIN;
}
template <typename D, typename F>
__device__ __forceinline__ D float_to_integer(F v) {
  if constexpr (std::is_same_v<D, std::int64_t>) {
    return to_i64(v);
  } else if constexpr (std::is_same_v<D, std::uint8_t>) {
    return static_cast<std::uint8_t>(to_i64(v));
  } else {
    return static_cast<D>(to_i32(v));
  }
}

// convert_value of src/core/convert.cc, on the device.
template <typename D, typename S>
__device__ __forceinline__ D convert_value(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<S, BoolByte>) {
    return convert_value<D>(static_cast<std::uint8_t>(s.value != 0));
  } else if constexpr (std::is_same_v<D, BoolByte>) {
    if constexpr (kNarrowFloat<S>) {
      return BoolByte{static_cast<std::uint8_t>(to_float(s) != 0.0f)};
    } else {
      return BoolByte{static_cast<std::uint8_t>(s != 0)};
    }
  } else if constexpr (std::is_integral_v<D>) {
    if constexpr (std::is_integral_v<S>) {
      return static_cast<D>(s);
    } else if constexpr (kNarrowFloat<S>) {
      return float_to_integer<D>(to_float(s));
    } else {
      return float_to_integer<D>(s);
    }
  } else if constexpr (std::is_same_v<D, float> || std::is_same_v<D, double>) {
    if constexpr (kNarrowFloat<S>) {
      return static_cast<D>(to_float(s));
    } else {
      return static_cast<D>(s);
    }
  } else {  // narrow float destination: through float, from every source
    if constexpr (kNarrowFloat<S>) {
      return narrow_from_float<D>(to_float(s));
    } else {
      return narrow_from_float<D>(static_cast<float>(s));
    }
  }
}

template <typename F>
cudaError_t dispatch_any(Type type, F&& f) {
  switch (type) {
    case Type::Bool: return f(BoolByte{});
    case Type::UInt8: return f(std::uint8_t{});
    case Type::Int8: return f(std::int8_t{});
    case Type::Int16: return f(std::int16_t{});
    case Type::Int32: return f(std::int32_t{});
    case Type::Int64: return f(std::int64_t{});
    case Type::Float16: return f(HalfBits{});
    case Type::BFloat16: return f(BF16Bits{});
    case Type::Float32: return f(float{});
    case Type::Float64: return f(double{});
    case Type::Float8E4M3FN: return f(E4M3Bits{});
    case Type::Float8E5M2: return f(E5M2Bits{});
  }
  return cudaErrorInvalidValue;
}

template <typename D, typename S>
__global__ void strided_convert_kernel(Strided dst, Strided src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const S s = static_cast<const S*>(src.data)[strided_offset(src, i)];
    static_cast<D*>(dst.data)[strided_offset(dst, i)] = convert_value<D>(s);
  }
}

__device__ __forceinline__ float apply(Unary op, float x) {
  switch (op) {
    case Unary::Silu:
      return x / (1.0f + expf(-x));
    case Unary::GeluErf:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Unary::GeluTanh:
      return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Unary::Relu:
      return x > 0.0f ? x : (x == x ? 0.0f : x);  // NaN stays NaN, as torch.relu
    case Unary::Tanh:
      return tanhf(x);
  }
  return x;
}

template <typename T>
__global__ void unary_kernel(Unary op, const T* x, T* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(apply(op, to_float(x[i])));
  }
}

template <typename T>
__global__ void binary_kernel(Binary op, Strided a, Strided b, T* out, std::int64_t n) {
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float x = to_float(pa[strided_offset(a, i)]);
    const float y = to_float(pb[strided_offset(b, i)]);
    out[i] = from_float<T>(op == Binary::Add ? x + y : x * y);
  }
}

}  // namespace

cudaError_t strided_convert(const Strided& dst, const Strided& src, std::int64_t numel,
                            cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  return dispatch_any(dst.type, [&](auto d) {
    return dispatch_any(src.type, [&](auto s) {
      using D = decltype(d);
      using S = decltype(s);
      strided_convert_kernel<D, S><<<grid_for(numel), kThreads, 0, stream>>>(dst, src, numel);
      return launched();
    });
  });
}

cudaError_t unary(Unary op, const void* x, void* out, Type type, std::int64_t n,
                  cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    unary_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, static_cast<const T*>(x),
                                                           static_cast<T*>(out), n);
    return launched();
  });
}

cudaError_t binary(Binary op, const Strided& a, const Strided& b, void* out, std::int64_t n,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_float(a.type, [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, a, b, static_cast<T*>(out), n);
    return launched();
  });
}

}  // namespace strata::cuda::kernels

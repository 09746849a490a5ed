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
    case Type::Bool:
      return f(BoolByte{});
    case Type::UInt8:
      return f(std::uint8_t{});
    case Type::Int8:
      return f(std::int8_t{});
    case Type::Int16:
      return f(std::int16_t{});
    case Type::Int32:
      return f(std::int32_t{});
    case Type::Int64:
      return f(std::int64_t{});
    case Type::Float16:
      return f(HalfBits{});
    case Type::BFloat16:
      return f(BF16Bits{});
    case Type::Float32:
      return f(float{});
    case Type::Float64:
      return f(double{});
    case Type::Float8E4M3FN:
      return f(E4M3Bits{});
    case Type::Float8E5M2:
      return f(E5M2Bits{});
  }
  return cudaErrorInvalidValue;
}

// kIndex32: offsets with 32-bit arithmetic (fits_32bit holds for both views).
template <typename D, typename S, bool kIndex32>
__global__ void strided_convert_kernel(Strided dst, Strided src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t from =
        kIndex32 ? strided_offset32(src, static_cast<std::uint32_t>(i)) : strided_offset(src, i);
    const std::int64_t to =
        kIndex32 ? strided_offset32(dst, static_cast<std::uint32_t>(i)) : strided_offset(dst, i);
    static_cast<D*>(dst.data)[to] = convert_value<D>(static_cast<const S*>(src.data)[from]);
  }
}

template <typename D, typename S>
__global__ void dense_convert_kernel(D* dst, const S* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = convert_value<D>(src[i]);
  }
}

int dispatch_bytes(Type type) {
  int bytes = 0;
  dispatch_any(type, [&](auto tag) {
    bytes = static_cast<int>(sizeof(tag));
    return cudaSuccess;
  });
  return bytes;
}

template <typename D, typename S>
cudaError_t launch_strided_convert(Strided dst, Strided src, std::int64_t n, cudaStream_t stream) {
  if (fits_32bit(dst) && fits_32bit(src)) {
    strided_convert_kernel<D, S, true><<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  } else {
    strided_convert_kernel<D, S, false><<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  }
  return launched();
}

// A same-dtype copy whose innermost dimension is contiguous on both sides moves 16 bytes per
// element when the rows allow it: the views are rewritten over 16-byte packs (a transpose of
// heads [B, H, S, D] -> [B, S, H, D] copies D/8 packs per row instead of D bf16 values).
bool as_packs(Strided& dst, Strided& src, int element_bytes) {
  const int last = dst.rank - 1;
  const std::int64_t per_pack = 16 / element_bytes;
  if (16 % element_bytes != 0 || dst.strides[last] != 1 || src.strides[last] != 1 ||
      dst.sizes[last] % per_pack != 0 || !aligned16(dst.data) || !aligned16(src.data)) {
    return false;
  }
  for (int d = 0; d < last; ++d) {
    if (dst.strides[d] % per_pack != 0 || src.strides[d] % per_pack != 0) return false;
  }
  for (Strided* s : {&dst, &src}) {
    s->sizes[last] /= per_pack;
    for (int d = 0; d < last; ++d) s->strides[d] /= per_pack;
  }
  return true;
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
__device__ __forceinline__ T binary_value(Binary op, T a, T b) {
  const float x = to_float(a), y = to_float(b);
  return from_float<T>(op == Binary::Add ? x + y : x * y);
}

// Dense, 16-byte aligned operands: Pack<T> at a time, then the tail one by one.
template <typename T>
__global__ void unary_kernel(Unary op, const T* x, T* out, std::int64_t n) {
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  constexpr int kCount = Pack<T>::kCount;
  const std::int64_t packs = n / kCount;
  for (std::int64_t p = first; p < packs; p += step) {
    Pack<T> v = reinterpret_cast<const Pack<T>*>(x)[p];
#pragma unroll
    for (int k = 0; k < kCount; ++k) v.v[k] = from_float<T>(apply(op, to_float(v.v[k])));
    reinterpret_cast<Pack<T>*>(out)[p] = v;
  }
  for (std::int64_t i = packs * kCount + first; i < n; i += step) {
    out[i] = from_float<T>(apply(op, to_float(x[i])));
  }
}

template <typename T>
__global__ void unary_scalar_kernel(Unary op, const T* x, T* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(apply(op, to_float(x[i])));
  }
}

template <typename T>
__global__ void binary_dense_kernel(Binary op, const T* a, const T* b, T* out, std::int64_t n) {
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  constexpr int kCount = Pack<T>::kCount;
  const std::int64_t packs = n / kCount;
  for (std::int64_t p = first; p < packs; p += step) {
    const Pack<T> x = reinterpret_cast<const Pack<T>*>(a)[p];
    const Pack<T> y = reinterpret_cast<const Pack<T>*>(b)[p];
    Pack<T> r;
#pragma unroll
    for (int k = 0; k < kCount; ++k) r.v[k] = binary_value(op, x.v[k], y.v[k]);
    reinterpret_cast<Pack<T>*>(out)[p] = r;
  }
  for (std::int64_t i = packs * kCount + first; i < n; i += step) {
    out[i] = binary_value(op, a[i], b[i]);
  }
}

template <typename T, bool kIndex32>
__global__ void binary_kernel(Binary op, Strided a, Strided b, T* out, std::int64_t n) {
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const auto index = static_cast<std::uint32_t>(i);
    const std::int64_t ia = kIndex32 ? strided_offset32(a, index) : strided_offset(a, i);
    const std::int64_t ib = kIndex32 ? strided_offset32(b, index) : strided_offset(b, i);
    out[i] = binary_value(op, pa[ia], pb[ib]);
  }
}

// out = ((parts[0] + parts[1]) + parts[2]) + ...: the running sum rounded to T after every add,
// as a chain of binary adds rounds it (binary_value), so the bits are those of count - 1 adds.
template <typename T>
__global__ void sum_in_order_kernel(SumParts s, T* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    T acc = static_cast<const T*>(s.parts[0])[i];
    for (int j = 1; j < s.count; ++j) {
      acc = binary_value(Binary::Add, acc, static_cast<const T*>(s.parts[j])[i]);
    }
    out[i] = acc;
  }
}

}  // namespace

cudaError_t sum_in_order(const SumParts& parts, void* out, Type type, std::int64_t n,
                         cudaStream_t stream) {
  if (parts.count < 1 || parts.count > kMaxSumParts) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    sum_in_order_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(parts, static_cast<T*>(out), n);
    return launched();
  });
}

cudaError_t strided_convert(const Strided& dst, const Strided& src, std::int64_t numel,
                            cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  Strided d = dst, s = src;
  Strided* views[] = {&d, &s};
  coalesce(views, 2);
  if (d.type == s.type) {
    const int bytes = dispatch_bytes(d.type);
    if (is_dense(d) && is_dense(s)) {
      return cudaMemcpyAsync(d.data, s.data, static_cast<std::size_t>(numel) * bytes,
                             cudaMemcpyDeviceToDevice, stream);
    }
    if (as_packs(d, s, bytes)) {
      return launch_strided_convert<uint4, uint4>(d, s, numel / (16 / bytes), stream);
    }
  }
  return dispatch_any(d.type, [&](auto dt) {
    return dispatch_any(s.type, [&](auto st) {
      using D = decltype(dt);
      using S = decltype(st);
      if (is_dense(d) && is_dense(s)) {
        dense_convert_kernel<D, S><<<grid_for(numel), kThreads, 0, stream>>>(
            static_cast<D*>(d.data), static_cast<const S*>(s.data), numel);
        return launched();
      }
      return launch_strided_convert<D, S>(d, s, numel, stream);
    });
  });
}

cudaError_t unary(Unary op, const void* x, void* out, Type type, std::int64_t n,
                  cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    const auto* in = static_cast<const T*>(x);
    auto* o = static_cast<T*>(out);
    if (aligned16(x) && aligned16(out)) {
      unary_kernel<T><<<grid_for(n / Pack<T>::kCount + 1), kThreads, 0, stream>>>(op, in, o, n);
    } else {
      unary_scalar_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, in, o, n);
    }
    return launched();
  });
}

cudaError_t binary(Binary op, const Strided& a, const Strided& b, void* out, std::int64_t n,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  Strided va = a, vb = b, vo = a;  // out: dense over the same shape
  vo.data = out;
  std::int64_t stride = 1;
  for (int d = vo.rank - 1; d >= 0; --d) {
    vo.strides[d] = stride;
    stride *= vo.sizes[d];
  }
  Strided* views[] = {&va, &vb, &vo};
  coalesce(views, 3);
  return dispatch_float(a.type, [&](auto tag) {
    using T = decltype(tag);
    if (is_dense(va) && is_dense(vb) && is_dense(vo) && aligned16(va.data) && aligned16(vb.data) &&
        aligned16(out)) {
      binary_dense_kernel<T><<<grid_for(n / Pack<T>::kCount + 1), kThreads, 0, stream>>>(
          op, static_cast<const T*>(va.data), static_cast<const T*>(vb.data), static_cast<T*>(out),
          n);
    } else if (fits_32bit(va) && fits_32bit(vb)) {
      binary_kernel<T, true>
          <<<grid_for(n), kThreads, 0, stream>>>(op, va, vb, static_cast<T*>(out), n);
    } else {
      binary_kernel<T, false>
          <<<grid_for(n), kThreads, 0, stream>>>(op, va, vb, static_cast<T*>(out), n);
    }
    return launched();
  });
}

}  // namespace strata::cuda::kernels

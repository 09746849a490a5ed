// Rotary embeddings, embedding lookup and the bias add of linear.

#include <cstdint>
#include <type_traits>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

// Element offset of row r (row-major over [B, H, S]) in a [B, H, S, D] view; Index is 32-bit
// when every offset fits (64-bit division costs many instructions on the GPU).
template <typename Index>
__device__ __forceinline__ std::int64_t row_offset(const Strided& t, Index r) {
  const auto heads = static_cast<Index>(t.sizes[1]), positions = static_cast<Index>(t.sizes[2]);
  const Index s = r % positions, h = (r / positions) % heads, b = r / (positions * heads);
  return static_cast<std::int64_t>(b * static_cast<Index>(t.strides[0]) +
                                   h * static_cast<Index>(t.strides[1]) +
                                   s * static_cast<Index>(t.strides[2]));
}

// One thread per pair (c, c + half) of a row: rotate_half(x) = cat(-x[half:], x[:half]).
template <typename T, typename C, typename Index>
__global__ void rotary_kernel(Strided x, Strided cos, Strided sin, T* out, std::int64_t pairs) {
  const auto dim = static_cast<Index>(x.sizes[3]), half = dim / 2;
  const auto* pc = static_cast<const C*>(cos.data);
  const auto* ps = static_cast<const C*>(sin.data);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const auto pair = static_cast<Index>(i);
    const Index r = pair / half, c = pair % half;
    const T* xr = static_cast<const T*>(x.data) + row_offset(x, r);
    const std::int64_t cr = row_offset(cos, r), sr = row_offset(sin, r);
    const float lo = to_float(xr[c]), hi = to_float(xr[c + half]);
    T* o = out + static_cast<std::int64_t>(r) * dim;
    o[c] = from_float<T>(lo * to_float(pc[cr + c]) + -hi * to_float(ps[sr + c]));
    o[c + half] =
        from_float<T>(hi * to_float(pc[cr + c + half]) + lo * to_float(ps[sr + c + half]));
  }
}

// The same for rows whose halves are whole 16-byte packs (cos/sin in x's dtype, every row start
// aligned): one thread per pack of the low half and its partner in the high half.
template <typename T, typename Index>
__global__ void rotary_packed_kernel(Strided x, Strided cos, Strided sin, T* out,
                                     std::int64_t packs) {
  constexpr int kCount = Pack<T>::kCount;
  const auto dim = static_cast<Index>(x.sizes[3]), half = dim / 2, per_row = half / kCount;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const auto pack = static_cast<Index>(i);
    const Index r = pack / per_row, c = (pack % per_row) * kCount;
    const T* xr = static_cast<const T*>(x.data) + row_offset(x, r);
    const T* cr = static_cast<const T*>(cos.data) + row_offset(cos, r);
    const T* sr = static_cast<const T*>(sin.data) + row_offset(sin, r);
    const auto load = [](const T* p) { return *reinterpret_cast<const Pack<T>*>(p); };
    const Pack<T> lo = load(xr + c), hi = load(xr + c + half);
    const Pack<T> cos_lo = load(cr + c), cos_hi = load(cr + c + half);
    const Pack<T> sin_lo = load(sr + c), sin_hi = load(sr + c + half);
    Pack<T> out_lo, out_hi;
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const float l = to_float(lo.v[k]), h = to_float(hi.v[k]);
      out_lo.v[k] = from_float<T>(l * to_float(cos_lo.v[k]) + -h * to_float(sin_lo.v[k]));
      out_hi.v[k] = from_float<T>(h * to_float(cos_hi.v[k]) + l * to_float(sin_hi.v[k]));
    }
    T* o = out + static_cast<std::int64_t>(r) * dim;
    *reinterpret_cast<Pack<T>*>(o + c) = out_lo;
    *reinterpret_cast<Pack<T>*>(o + c + half) = out_hi;
  }
}

// Host side: the packed kernel applies (innermost dimension contiguous, every other stride and
// every pointer a whole number of packs).
bool rotary_packs(const Strided& x, const Strided& cos, const Strided& sin, const void* out,
                  int per_pack) {
  if ((x.sizes[3] / 2) % per_pack != 0 || !aligned16(out)) return false;
  for (const Strided* s : {&x, &cos, &sin}) {
    if (s->strides[3] != 1 || !aligned16(s->data)) return false;
    for (int d = 0; d < 3; ++d) {
      if (s->strides[d] % per_pack != 0) return false;
    }
  }
  return true;
}

template <typename I>
__global__ void embedding_kernel(Strided ids, std::int64_t n, const char* table, std::int64_t vocab,
                                 std::int64_t row_bytes, char* out, unsigned long long* bad) {
  // One block per id; rows are copied as bytes (any dtype), 16 bytes at a time when aligned.
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const auto id =
        static_cast<std::int64_t>(static_cast<const I*>(ids.data)[strided_offset(ids, r)]);
    if (id < 0 || id >= vocab) {
      if (threadIdx.x == 0) atomicMin(bad, static_cast<unsigned long long>(r));
      continue;
    }
    const char* src = table + id * row_bytes;
    char* dst = out + r * row_bytes;
    if (row_bytes % 16 == 0 && reinterpret_cast<std::uintptr_t>(table) % 16 == 0 &&
        reinterpret_cast<std::uintptr_t>(out) % 16 == 0) {
      for (std::int64_t b = threadIdx.x; b < row_bytes / 16; b += blockDim.x) {
        reinterpret_cast<uint4*>(dst)[b] = reinterpret_cast<const uint4*>(src)[b];
      }
    } else {
      for (std::int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) dst[b] = src[b];
    }
  }
}

template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, std::int64_t cols, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(to_float(out[i]) + to_float(bias[i % cols]));
  }
}

}  // namespace

cudaError_t rotary(const Strided& x, const Strided& cos, const Strided& sin, void* out,
                   cudaStream_t stream) {
  const std::int64_t n = x.sizes[0] * x.sizes[1] * x.sizes[2] * x.sizes[3];
  if (n == 0) return cudaSuccess;
  if (x.sizes[3] % 2 != 0) return cudaErrorInvalidValue;  // rotate_half needs two halves
  const bool small = fits_32bit(x) && fits_32bit(cos) && fits_32bit(sin);
  return dispatch_float(x.type, [&](auto xt) {
    return dispatch_float(cos.type, [&](auto ct) {
      using T = decltype(xt);
      using C = decltype(ct);
      if constexpr (!std::is_same_v<C, T> && !std::is_same_v<C, float>) {
        return cudaErrorInvalidValue;
      } else {
        auto* o = static_cast<T*>(out);
        if constexpr (std::is_same_v<C, T>) {
          constexpr int kCount = Pack<T>::kCount;
          if (small && rotary_packs(x, cos, sin, out, kCount)) {
            const std::int64_t packs = n / (2 * kCount);
            rotary_packed_kernel<T, std::uint32_t>
                <<<grid_for(packs), kThreads, 0, stream>>>(x, cos, sin, o, packs);
            return launched();
          }
        }
        if (small) {
          rotary_kernel<T, C, std::uint32_t>
              <<<grid_for(n / 2), kThreads, 0, stream>>>(x, cos, sin, o, n / 2);
        } else {
          rotary_kernel<T, C, std::int64_t>
              <<<grid_for(n / 2), kThreads, 0, stream>>>(x, cos, sin, o, n / 2);
        }
        return launched();
      }
    });
  });
}

cudaError_t embedding(const Strided& ids, std::int64_t n, const void* table, std::int64_t vocab,
                      std::int64_t row_bytes, void* out, unsigned long long* bad,
                      cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(n < 65535 * 4 ? n : 65535 * 4);
  const auto* t = static_cast<const char*>(table);
  auto* o = static_cast<char*>(out);
  switch (ids.type) {
    case Type::UInt8:
      embedding_kernel<std::uint8_t>
          <<<blocks, 128, 0, stream>>>(ids, n, t, vocab, row_bytes, o, bad);
      break;
    case Type::Int8:
      embedding_kernel<std::int8_t>
          <<<blocks, 128, 0, stream>>>(ids, n, t, vocab, row_bytes, o, bad);
      break;
    case Type::Int16:
      embedding_kernel<std::int16_t>
          <<<blocks, 128, 0, stream>>>(ids, n, t, vocab, row_bytes, o, bad);
      break;
    case Type::Int32:
      embedding_kernel<std::int32_t>
          <<<blocks, 128, 0, stream>>>(ids, n, t, vocab, row_bytes, o, bad);
      break;
    case Type::Int64:
      embedding_kernel<std::int64_t>
          <<<blocks, 128, 0, stream>>>(ids, n, t, vocab, row_bytes, o, bad);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return launched();
}

cudaError_t add_bias_rows(void* out, const void* bias, Type type, std::int64_t rows,
                          std::int64_t cols, cudaStream_t stream) {
  const std::int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    add_bias_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(out),
                                                             static_cast<const T*>(bias), cols, n);
    return launched();
  });
}

}  // namespace strata::cuda::kernels

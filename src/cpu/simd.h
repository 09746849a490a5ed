#pragma once
// The vectorised CPU building blocks, compiled once per instruction set (simd_avx512.cc,
// simd_avx2.cc, simd_generic.cc from the shared body in simd_kernels.inc) and picked at run time
// for the CPU at hand, so the binary needs no -march flag and runs on any x86-64.
//
// Callers normally go through float_io.h and the op kernels; the per-ISA tables are exposed so
// tests can check every variant the machine can run against the same reference.

#include <cstdint>

#include "strata/core/float_types.h"

namespace strata::cpu::simd {

// Rows of x that the matrix-vector kernels take at once (decode and small batches); larger M goes
// to GEMM. Up to this many rows the weight is read from memory once for all of them.
inline constexpr std::int64_t kMaxMatvecRows = 16;

template <typename T>
using MatvecFn = void (*)(const float* x, std::int64_t ldx, std::int64_t m, const T* w,
                          std::int64_t ldw, std::int64_t n, std::int64_t k, float* y,
                          std::int64_t ldy);
// The same with bfloat16 x (no widening of x at all): the AVX-512 BF16 dot-product kernel.
using MatvecBf16NativeFn = void (*)(const BFloat16* x, std::int64_t ldx, std::int64_t m,
                                    const BFloat16* w, std::int64_t ldw, std::int64_t n,
                                    std::int64_t k, float* y, std::int64_t ldy);

// acc[i * ldacc + t] += sum_j p[i * ldp + j] * v[j * ldv + t] for i < m (any), j < n, t < d:
// attention's probabilities times V, each V row widened in registers and read once per four rows.
template <typename T>
using WeightedSumFn = void (*)(const float* p, std::int64_t ldp, std::int64_t m, const T* v,
                               std::int64_t ldv, std::int64_t n, std::int64_t d, float* acc,
                               std::int64_t ldacc);

struct Kernels {
  const char* name;  // "avx512+bf16+amx", "avx512+bf16", "avx512", "avx2", "generic"
  // dst[i] = float(src[i]), i < n (exact).
  void (*bf16_to_float)(const BFloat16* src, float* dst, std::int64_t n);
  void (*half_to_float)(const Half* src, float* dst, std::int64_t n);
  // dst[i] = T(src[i]), rounded to nearest even, NaN as PyTorch writes it.
  void (*float_to_bf16)(const float* src, BFloat16* dst, std::int64_t n);
  void (*float_to_half)(const float* src, Half* dst, std::int64_t n);
  // y[i * ldy + j] = sum_k x[i * ldx + k] * w[j * ldw + k] for i < m (1..kMaxMatvecRows),
  // j < n, k < k: the weight rows are streamed once and widened to float in registers.
  MatvecFn<float> matvec_f32;
  MatvecFn<BFloat16> matvec_bf16;
  MatvecFn<Half> matvec_f16;
  // bfloat16 x times bfloat16 w with `vdpbf16ps` (pairs of products added in float32, inputs'
  // subnormals read as zero); nullptr where the CPU lacks AVX-512 BF16. Same contract as above.
  MatvecBf16NativeFn matvec_bf16_native = nullptr;
  // AMX (cpu/amx.h) for bf16 from 5 rows on, where the vector kernels turn compute-bound: x
  // packed once per call by amx_pack_x (any m), then any range of weight rows. nullptr unless the
  // CPU has AMX-BF16 and the OS grants the tile state.
  void (*amx_pack_x)(const BFloat16* x, std::int64_t ldx, std::int64_t m, std::int64_t k,
                     std::uint32_t* packed) = nullptr;
  void (*amx_matvec_bf16)(const std::uint32_t* packed, const BFloat16* x, std::int64_t ldx,
                          std::int64_t m, const BFloat16* w, std::int64_t ldw, std::int64_t n,
                          std::int64_t k, float* y, std::int64_t ldy) = nullptr;
  WeightedSumFn<float> weighted_sum_f32 = nullptr;
  WeightedSumFn<BFloat16> weighted_sum_bf16 = nullptr;
  WeightedSumFn<Half> weighted_sum_f16 = nullptr;
};

// The best table for the running CPU (chosen once).
const Kernels& kernels();
// Each variant, or nullptr when it is not built in or the CPU cannot run it.
const Kernels* avx512_kernels();
const Kernels* avx2_kernels();
const Kernels& generic_kernels();

}  // namespace strata::cpu::simd

namespace strata::cpu::simd {

// A Kernels table from the static members of a per-ISA Impl (see simd_kernels.inc).
template <typename Impl>
Kernels kernels_of(const char* name) {
  return Kernels{name,
                 &Impl::bf16_to_float,
                 &Impl::half_to_float,
                 &Impl::float_to_bf16,
                 &Impl::float_to_half,
                 &Impl::template matvec<float>,
                 &Impl::template matvec<BFloat16>,
                 &Impl::template matvec<Half>,
                 nullptr,
                 nullptr,
                 nullptr,
                 &Impl::template weighted_sum<float>,
                 &Impl::template weighted_sum<BFloat16>,
                 &Impl::template weighted_sum<Half>};
}

}  // namespace strata::cpu::simd

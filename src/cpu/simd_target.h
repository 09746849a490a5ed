#pragma once
// STRATA_SIMD_TARGET_BEGIN("avx2,fma") ... STRATA_SIMD_TARGET_END compiles the functions defined
// between them for that instruction set (GCC and Clang), without -m flags on the whole file.
// Only code behind a runtime CPU check may call them.

#define STRATA_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define STRATA_SIMD_TARGET_BEGIN(isa) \
  STRATA_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define STRATA_SIMD_TARGET_END _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define STRATA_SIMD_TARGET_BEGIN(isa) _Pragma("GCC push_options") STRATA_PRAGMA(GCC target(isa))
#define STRATA_SIMD_TARGET_END _Pragma("GCC pop_options")
#endif

#if defined(__x86_64__)
#include <cpuid.h>

namespace strata::cpu::simd {
// F16C (half <-> float conversions). Queried with cpuid because Clang's
// __builtin_cpu_supports does not know the name; every AVX2 CPU has it in practice.
inline bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
}  // namespace strata::cpu::simd
#endif

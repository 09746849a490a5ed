#pragma once
// The CPU kernel tables (src/cpu/simd.h) this machine can execute, so tests check every variant
// the dispatcher might pick on some CPU, not only the one it picks here.

#include <vector>

#include "cpu/simd.h"

namespace strata::testing {

inline std::vector<const cpu::simd::Kernels*> runnable_variants() {
  std::vector<const cpu::simd::Kernels*> out = {&cpu::simd::generic_kernels()};
  if (const cpu::simd::Kernels* k = cpu::simd::avx2_kernels()) out.push_back(k);
  if (const cpu::simd::Kernels* k = cpu::simd::avx512_kernels()) out.push_back(k);
  return out;
}

}  // namespace strata::testing

// Portable variant of the kernels in simd_kernels.inc (plain arrays the compiler vectorises with
// the baseline instruction set), and the runtime choice between the variants.
#include <algorithm>

#include "cpu/float_io.h"
#include "cpu/simd.h"
#include "strata/core/error.h"

namespace strata::cpu::simd {
namespace {

struct V {
  static constexpr int kRegisters = 16;
  static constexpr int kWidth = 8;
  struct Reg {
    float lane[kWidth];
  };

  static Reg zero() { return Reg{}; }
  static Reg set1(float f) {
    Reg r;
    for (int i = 0; i < kWidth; ++i) r.lane[i] = f;
    return r;
  }
  template <typename T>
  static Reg load(const T* p) {
    Reg r;
    for (int i = 0; i < kWidth; ++i) r.lane[i] = load_as_float(p, i);
    return r;
  }
  template <typename T>
  static void store(T* p, const Reg& v) {
    for (int i = 0; i < kWidth; ++i) store_from_float(p, i, v.lane[i]);
  }
  static Reg fmadd(const Reg& a, const Reg& b, Reg c) {
    for (int i = 0; i < kWidth; ++i) c.lane[i] += a.lane[i] * b.lane[i];
    return c;
  }
  static float reduce_add(const Reg& v) {
    float sum = 0.0f;
    for (int i = 0; i < kWidth; ++i) sum += v.lane[i];
    return sum;
  }
};

#include "cpu/simd_kernels.inc"

}  // namespace

const Kernels& generic_kernels() {
  static const Kernels table = kernels_of<Impl>("generic");
  return table;
}

const Kernels& kernels() {
  static const Kernels& table = []() -> const Kernels& {
    if (const Kernels* k = avx512_kernels()) return *k;
    if (const Kernels* k = avx2_kernels()) return *k;
    return generic_kernels();
  }();
  return table;
}

}  // namespace strata::cpu::simd

#pragma once
// bfloat16 small-batch products on Intel AMX (Sapphire Rapids and later): one `tdpbf16ps` does a
// [16 x 32] x [32 x 16] bf16 product into a 16 x 16 float32 tile, 16 times the work of an
// AVX-512 `vdpbf16ps`, so 5..16 rows of x stay memory-bound where the vector kernels become
// compute-bound, and more rows (prefill) run far faster than float32 GEMM on widened tiles. Reached
// through simd::kernels() (amx_pack_x / amx_matvec_bf16), which only carries them when usable()
// said yes.

#include <cstdint>

#include "strata/core/float_types.h"

namespace strata::cpu::amx {

// AMX-TILE and AMX-BF16 in CPUID, and the Linux permission for the tile data state
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)), requested once. False on other systems.
bool usable();

// Words (uint32) of the packed x for m rows and k columns.
inline std::int64_t packed_words(std::int64_t m, std::int64_t k) { return (k / 32) * 16 * m; }

// x [m, k] -> the tile layout of the B operand, in blocks of 16 rows of x (the last one
// shorter), one after the other: for each block of 32 columns, 16 rows of mb pairs
// (x[i][2p], x[i][2p + 1]). Columns past the last whole block of 32 are not packed.
void pack_x(const BFloat16* x, std::int64_t ldx, std::int64_t m, std::int64_t k,
            std::uint32_t* packed);

// y[i * ldy + j] = sum_t x[i * ldx + t] * w[j * ldw + t] for i < m, j < n, t < k, with `packed`
// = pack_x(x), any m >= 1 (in blocks of 16 rows). Weight rows in tiles of 16 (32 in flight); the
// k tail past the last block of 32 and the n tail past the last tile of 16 go through the
// AVX-512 BF16 kernel.
void matvec_bf16(const std::uint32_t* packed, const BFloat16* x, std::int64_t ldx, std::int64_t m,
                 const BFloat16* w, std::int64_t ldw, std::int64_t n, std::int64_t k, float* y,
                 std::int64_t ldy);

}  // namespace strata::cpu::amx

// AMX bf16 small-batch product (see amx.h).
//
// Roles: the weight is the A operand (16 weight rows x 32 bf16 of k, loaded straight from the
// row-major [n, k] matrix with the row stride), x is the B operand, packed once per call into
// the pair-interleaved layout AMX wants (16 pairs of k x m columns), and each C tile holds
// 16 weight rows x m outputs. Two C tiles (32 weight rows) share each B load.

#include "cpu/amx.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/simd.h"
#include "strata/core/error.h"

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cpu/simd_target.h"

namespace strata::cpu::amx {
namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl codes (asm/prctl.h, Linux 5.16+)
constexpr long kArchGetXcompPerm = 0x1022;
constexpr long kXfeatureXtiledata = 18;

// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  std::uint8_t palette_id = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// Tiles: 0, 1 = C (16 weight rows x m floats), 2, 3 = A (16 weight rows x 32 bf16), 4 = B
// (16 pairs of k x m columns).
TileConfig config_for(std::int64_t m) {
  TileConfig c;
  const auto m_bytes = static_cast<std::uint16_t>(4 * m);
  for (const int t : {0, 1}) {
    c.rows[t] = 16;
    c.colsb[t] = m_bytes;
  }
  for (const int t : {2, 3}) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  c.rows[4] = 16;
  c.colsb[4] = m_bytes;
  return c;
}

STRATA_SIMD_TARGET_BEGIN("amx-tile,amx-bf16,avx512f")

// One or two tiles of 16 weight rows starting at w (k32 columns), C stored to c[2][16][m].
template <int Tiles>
void tile_rows(const std::uint32_t* packed, std::int64_t m, const BFloat16* w, std::int64_t ldw,
               std::int64_t k32, float* c) {
  const long w_stride = static_cast<long>(ldw * sizeof(BFloat16));
  const long b_stride = static_cast<long>(4 * m);
  _tile_zero(0);
  if constexpr (Tiles == 2) _tile_zero(1);
  for (std::int64_t kb = 0; kb < k32 / 32; ++kb) {
    _tile_loadd(4, packed + kb * 16 * m, b_stride);
    _tile_loadd(2, w + kb * 32, w_stride);
    _tile_dpbf16ps(0, 2, 4);
    if constexpr (Tiles == 2) {
      _tile_loadd(3, w + 16 * ldw + kb * 32, w_stride);
      _tile_dpbf16ps(1, 3, 4);
    }
  }
  _tile_stored(0, c, b_stride);
  if constexpr (Tiles == 2) _tile_stored(1, c + 16 * m, b_stride);
}

void run_tiles(const std::uint32_t* packed, std::int64_t m, const BFloat16* w, std::int64_t ldw,
               std::int64_t n16, std::int64_t k32, float* y, std::int64_t ldy) {
  const TileConfig config = config_for(m);
  _tile_loadconfig(&config);
  float c[2 * 16 * 16];
  std::int64_t j = 0;
  const auto scatter = [&](std::int64_t rows) {  // c[r][i] -> y[i][j + r]
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t i = 0; i < m; ++i) y[i * ldy + j + r] = c[r * m + i];
    }
  };
  for (; j + 32 <= n16; j += 32) {
    tile_rows<2>(packed, m, w + j * ldw, ldw, k32, c);
    scatter(32);
  }
  for (; j < n16; j += 16) {
    tile_rows<1>(packed, m, w + j * ldw, ldw, k32, c);
    scatter(16);
  }
  _tile_release();  // back to the init state: no tile data to save on a context switch
}

STRATA_SIMD_TARGET_END

bool cpu_has_amx_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (edx & (1u << 22)) != 0 && (edx & (1u << 24)) != 0;  // AMX-BF16, AMX-TILE
}

bool os_grants_tiles() {
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long features = 0;
  return syscall(SYS_arch_prctl, kArchGetXcompPerm, &features) == 0 &&
         (features & (1ul << kXfeatureXtiledata)) != 0;
}

}  // namespace

bool usable() {
  static const bool ok = cpu_has_amx_bf16() && os_grants_tiles();
  return ok;
}

void pack_x(const BFloat16* x, std::int64_t ldx, std::int64_t m, std::int64_t k,
            std::uint32_t* packed) {
  for (std::int64_t i0 = 0; i0 < m; i0 += 16) {  // blocks of 16 rows, one after the other
    const std::int64_t mb = std::min<std::int64_t>(16, m - i0);
    std::uint32_t* block = packed + packed_words(i0, k);
    for (std::int64_t kb = 0; kb < k / 32; ++kb) {
      for (std::int64_t p = 0; p < 16; ++p) {
        std::uint32_t* row = block + (kb * 16 + p) * mb;
        for (std::int64_t i = 0; i < mb; ++i) {
          std::memcpy(row + i, x + (i0 + i) * ldx + kb * 32 + 2 * p, sizeof(std::uint32_t));
        }
      }
    }
  }
}

namespace {

// One block of mb <= 16 rows of x (its packed words at `packed`).
void block_product(const std::uint32_t* packed, const BFloat16* x, std::int64_t ldx,
                   std::int64_t mb, const BFloat16* w, std::int64_t ldw, std::int64_t n,
                   std::int64_t k, float* y, std::int64_t ldy) {
  const simd::MatvecBf16NativeFn vector_kernel = simd::avx512_kernels()->matvec_bf16_native;
  const std::int64_t n16 = n / 16 * 16, k32 = k / 32 * 32;
  if (k32 > 0 && n16 > 0) {
    run_tiles(packed, mb, w, ldw, n16, k32, y, ldy);
  } else {
    for (std::int64_t i = 0; i < mb; ++i) std::fill(y + i * ldy, y + i * ldy + n16, 0.0f);
  }
  if (k32 < k && n16 > 0) {  // the columns past the last block of 32, added to the tiles' sums
    std::vector<float> tail(static_cast<std::size_t>(mb * n16));
    vector_kernel(x + k32, ldx, mb, w + k32, ldw, n16, k - k32, tail.data(), n16);
    for (std::int64_t i = 0; i < mb; ++i) {
      for (std::int64_t j = 0; j < n16; ++j) y[i * ldy + j] += tail[i * n16 + j];
    }
  }
  if (n16 < n) vector_kernel(x, ldx, mb, w + n16 * ldw, ldw, n - n16, k, y + n16, ldy);
}

}  // namespace

void matvec_bf16(const std::uint32_t* packed, const BFloat16* x, std::int64_t ldx, std::int64_t m,
                 const BFloat16* w, std::int64_t ldw, std::int64_t n, std::int64_t k, float* y,
                 std::int64_t ldy) {
  STRATA_ASSERT(m >= 1, "AMX matvec called with {} rows", m);
  // Blocks of 16 rows of x over the same weight rows: the caller's range of weight rows (a few
  // hundred KiB) stays in L2 after the first block, so DRAM still sees it once.
  for (std::int64_t i0 = 0; i0 < m; i0 += 16) {
    block_product(packed + packed_words(i0, k), x + i0 * ldx, ldx,
                  std::min<std::int64_t>(16, m - i0), w, ldw, n, k, y + i0 * ldy, ldy);
  }
}

}  // namespace strata::cpu::amx

#else

namespace strata::cpu::amx {
bool usable() { return false; }
void pack_x(const BFloat16*, std::int64_t, std::int64_t, std::int64_t, std::uint32_t*) {}
void matvec_bf16(const std::uint32_t*, const BFloat16*, std::int64_t, std::int64_t, const BFloat16*,
                 std::int64_t, std::int64_t, std::int64_t, float*, std::int64_t) {
  STRATA_ASSERT(false, "AMX is not built for this platform");
}
}  // namespace strata::cpu::amx

#endif

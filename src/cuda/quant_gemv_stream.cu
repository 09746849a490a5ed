// Decode GEMV for 1-2 rows of x built to stream the packed weights at the HBM rate (issue 16):
// the quant_gemv.cu kernels of session 5 measured 23-59% of the copy rate, bound by instructions
// per weight (a conversion-pipe cvt per fp8 weight, shift + and + or + sub per integer code) and by
// few bytes in flight (one 16-byte load per output row per lane step). Here:
//  - every lane issues U 16-byte loads per output row (O rows per warp) before the first use, as
//    the bf16 matvec.cu does (8 in flight per lane reach 80-84% there);
//  - FP8 e4m3 bytes become float32 with shifts and one LOP3 each, no conversion instruction: the
//    bits sign << 31 | (e4m3 & 0x7F) << 20 are the float e4m3 * 2^-120 exactly (subnormals
//    become float denormals, which the FMA handles at full rate: no flush to zero in this
//    library), and x is pre-multiplied by 2^32 so no product falls near the denormal range;
//    the 2^88 is put back once per 16 inputs. (The NaN code 0x7F is read as 480: checkpoints
//    never hold NaN weights.)
//  - integer codes are read in place: code j of a word, masked where it lies (bits BITS*j..) and
//    OR-ed with the bits of 2^23, is the float 2^23 + q * 2^(BITS*j) while it stays below bit 23
//    (one LOP3, no shift); the upper codes take one shift per word. Subtracting 2^23 + z *
//    2^(BITS*j) leaves (q - z) * 2^(BITS*j) exactly, so each position keeps its own partial sum,
//    scaled by 2^-(BITS*j) once per chunk.
// Per int4 weight: ~1.1 LOP3, 1 FSUB, 1 FFMA (was ~4 + FFMA); per fp8 weight ~2.75 + 1 FFMA.
// These are the FP8 and compressed-tensors row kernels; this file also dispatches the tensor-core
// kernels of quant_gemv_tc.cu (every int4 format and FP8 in bf16, the defaults below). The
// variants (outputs per warp, loads in flight; the tc kernels' stages) are picked at run time
// from STRATA_QUANT_GEMV (the benchmark sweeps them; "v1" selects the quant_gemv.cu kernels).

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda/quant_gemv_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kRowWarps = 4;  // row kernels: 4-warp blocks (matvec.cu)

// N consecutive elements of x as float32 times `mul` (a power of two, exact); p aligned to 16
// bytes when N * sizeof(T) >= 16 (else to N * sizeof(T)).
template <int N, typename T>
__device__ __forceinline__ void load_xs(const T* p, float mul, float (&o)[N]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p) + i);
      o[4 * i] = v.x * mul;
      o[4 * i + 1] = v.y * mul;
      o[4 * i + 2] = v.z * mul;
      o[4 * i + 3] = v.w * mul;
    }
  } else {
    constexpr int kWords = N / 2;
    std::uint32_t u[kWords];
    if constexpr (kWords >= 4) {
#pragma unroll
      for (int i = 0; i < kWords / 4; ++i) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
        u[4 * i] = v.x, u[4 * i + 1] = v.y, u[4 * i + 2] = v.z, u[4 * i + 3] = v.w;
      }
    } else {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
      u[0] = v.x, u[1] = v.y;
    }
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      if constexpr (std::is_same_v<T, BF16Bits>) {
        o[2 * i] = bf16_lo(u[i]) * mul;
        o[2 * i + 1] = bf16_hi(u[i]) * mul;
      } else {
        __half2 h;
        std::memcpy(&h, &u[i], 4);
        const float2 f = __half22float2(h);  // exact
        o[2 * i] = f.x * mul;
        o[2 * i + 1] = f.y * mul;
      }
    }
  }
}

__device__ __forceinline__ std::uint32_t part_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// e4m3 byte i (0..3) of `w` as a float32 equal to its value times 2^-120 (header comment).
template <int I>
__device__ __forceinline__ float fp8_scaled(std::uint32_t w) {
  constexpr int kUp = 24 - 8 * I;  // moves the byte's sign bit to bit 31
  const std::uint32_t sign = (w << kUp) & 0x80000000u;
  std::uint32_t mag;
  if constexpr (I == 3) {
    mag = (w >> 4) & 0x07F00000u;
  } else {
    mag = (w << (kUp - 4)) & 0x07F00000u;
  }
  return __uint_as_float(sign | mag);
}

// Integer code layout of the in-place trick: codes 0..kInPlace-1 of a word are read where they
// lie; codes kInPlace.. are read from word >> kShift at position j - kShift / BITS.
template <int BITS>
struct Codes {
  static constexpr int kPer = 32 / BITS;
  static constexpr int kInPlace = BITS == 4 ? 5 : 2;
  static constexpr int kShift = BITS == 4 ? 12 : 16;
  static constexpr std::uint32_t kMask = (1u << BITS) - 1;
  // Position (0..kInPlace-1) of code j.
  __host__ __device__ static constexpr int pos(int j) {
    return j < kInPlace ? j : j - kShift / BITS;
  }
  // Code j of (word, word >> kShift) as the float 2^23 + q * 2^(BITS * pos(j)).
  __device__ __forceinline__ static float raw(std::uint32_t word, std::uint32_t hi, int j) {
    const std::uint32_t src = j < kInPlace ? word : hi;
    return __uint_as_float((src & (kMask << (BITS * pos(j)))) | kMagicBits);
  }
  // Code j of (word, word >> kShift) as 2^23 + q * 2^(BITS * pos(j)), minus mz[pos(j)].
  __device__ __forceinline__ static float minus(std::uint32_t word, std::uint32_t hi, int j,
                                                const float* mz) {
    const std::uint32_t src = j < kInPlace ? word : hi;
    return __uint_as_float((src & (kMask << (BITS * pos(j)))) | kMagicBits) - mz[pos(j)];
  }
  // mz[p] = 2^23 + z * 2^(BITS * p) (exact: below 2^24).
  __device__ __forceinline__ static void magic_zero(float z, float (&mz)[kInPlace]) {
#pragma unroll
    for (int p = 0; p < kInPlace; ++p)
      mz[p] = fmaf(z, static_cast<float>(1u << (BITS * p)), kMagic);
  }
  // sum_p part[p] * 2^(-BITS * p) (powers of two: one rounding per step).
  __device__ __forceinline__ static float combine(const float (&part)[kInPlace]) {
    float s = part[kInPlace - 1];
#pragma unroll
    for (int p = kInPlace - 2; p >= 0; --p)
      s = fmaf(s, 1.0f / static_cast<float>(1u << BITS), part[p]);
    return s;
  }
};

// Programmatic dependent launch, row kernels: the first U 16-byte chunks of each of the O weight
// rows into L2 while the previous kernel drains, then wait for it before reading x (no-ops when
// not launched so).
template <int O, int U>
__device__ __forceinline__ void prefetch_rows_then_wait(const uint4* const (&wrow)[O], int lane,
                                                        int chunks) {
#pragma unroll
  for (int o = 0; o < O; ++o) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (lane + 32 * u < chunks) prefetch_to_l2(wrow[o] + lane + 32 * u);
    }
  }
  wait_for_producer();
  allow_dependents();
}

// ---- FP8 rows: O outputs per warp, U 16-byte loads per output in flight per lane ----------------
// Needs k % 16 == 0, block_in % 16 == 0, 16-byte aligned weight and x rows.
template <int R, int O, int U, typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    fp8_rows_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows,
                    const T* __restrict__ bias, T* __restrict__ out, ChunkDiv per_scale) {
  const int lane = threadIdx.x & 31;
  const std::int64_t first =
      (static_cast<std::int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5)) * O;
  if (first >= w.n) return;
  const int chunks = static_cast<int>(w.k / 16);
  const auto* scale = static_cast<const float*>(w.scale);
  const bool blocked = w.block_out != 0;
  const std::int64_t scale_cols = blocked ? (w.k + w.block_in - 1) / w.block_in : 0;
  const uint4* wrow[O];
  const float* srow[O];
#pragma unroll
  for (int o = 0; o < O; ++o) {
    const std::int64_t n = first + o < w.n ? first + o : w.n - 1;
    wrow[o] = reinterpret_cast<const uint4*>(static_cast<const std::uint8_t*>(w.weight) + n * w.k);
    srow[o] = blocked ? scale + (n / w.block_out) * scale_cols : scale;
  }
  prefetch_rows_then_wait<O, U>(wrow, lane, chunks);
  float acc[O][R] = {};
  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    // The weights and their block scales are requested together: a scale read after the weights
    // arrived was a second round trip per step (session 6, call 1).
    uint4 v[O][U];
    float sv[O][U];
#pragma unroll
    for (int o = 0; o < O; ++o) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        v[o][u] = c < chunks ? __ldcs(wrow[o] + c) : make_uint4(0, 0, 0, 0);
        sv[o][u] = blocked && c < chunks ? __ldg(srow[o] + column_of(c, per_scale)) : 1.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      float xs[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) load_xs<16>(x + x_row(r, rows) * w.k + c * 16, 0x1p32f, xs[r]);
#pragma unroll
      for (int o = 0; o < O; ++o) {
        const float s = sv[o][u];
        float part[R] = {};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const std::uint32_t word = part_of(v[o][u], q);
          const float f[4] = {fp8_scaled<0>(word), fp8_scaled<1>(word), fp8_scaled<2>(word),
                              fp8_scaled<3>(word)};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int r = 0; r < R; ++r) part[r] = fmaf(f[i], xs[r][4 * q + i], part[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) acc[o][r] = fmaf(part[r] * 0x1p88f, s, acc[o][r]);
      }
    }
  }
  const float tensor_scale = blocked ? 1.0f : __ldg(scale);
#pragma unroll
  for (int o = 0; o < O; ++o) {
    const std::int64_t n = first + o;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = warp_sum(acc[o][r]);
      if (lane == 0 && n < w.n && r < rows) {
        store_out(out, w.residual, w.gate, r * w.n + n, sum * tensor_scale + bias_of(bias, n));
      }
    }
  }
}

// ---- compressed-tensors rows: O outputs per warp, U chunks of 4 words in flight per lane -------
// Needs k % (4 * 32/BITS) == 0, the group a multiple of 4 words (or one group), aligned rows.
template <int R, int O, int U, int BITS, typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    ct_rows_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows,
                   const T* __restrict__ bias, T* __restrict__ out, ChunkDiv per_group) {
  using C = Codes<BITS>;
  constexpr int kIn = 4 * C::kPer;  // inputs per chunk
  const int lane = threadIdx.x & 31;
  const std::int64_t first =
      (static_cast<std::int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5)) * O;
  if (first >= w.n) return;
  const std::int64_t packed_cols = w.k / C::kPer;
  const int chunks = static_cast<int>(packed_cols / 4);
  const uint4* wrow[O];
  std::int64_t nrow[O];
#pragma unroll
  for (int o = 0; o < O; ++o) {
    nrow[o] = first + o < w.n ? first + o : w.n - 1;
    wrow[o] = reinterpret_cast<const uint4*>(static_cast<const std::int32_t*>(w.weight) +
                                             nrow[o] * packed_cols);
  }
  prefetch_rows_then_wait<O, U>(wrow, lane, chunks);
  float acc[O][R] = {};
  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    // Weights, scales and zero points requested together (one round trip per step).
    uint4 v[O][U];
    float sv[O][U], zv[O][U];
#pragma unroll
    for (int o = 0; o < O; ++o) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        const bool in = c < chunks;
        const std::int64_t gi = w.groups == 1 || !in ? 0 : column_of(c, per_group);
        v[o][u] = in ? __ldcs(wrow[o] + c) : make_uint4(0, 0, 0, 0);
        sv[o][u] = in ? load_scale(w.scale, w.scale_type, nrow[o] * w.groups + gi) : 0.0f;
        zv[o][u] =
            w.zeros != nullptr && in
                ? static_cast<float>(field_of(w.zeros, (nrow[o] / C::kPer) * w.groups + gi,
                                              static_cast<int>(nrow[o] % C::kPer) * BITS, C::kMask))
                : static_cast<float>(1u << (BITS - 1));
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      float xs[R][kIn];
#pragma unroll
      for (int r = 0; r < R; ++r) load_xs<kIn>(x + x_row(r, rows) * w.k + c * kIn, 1.0f, xs[r]);
#pragma unroll
      for (int o = 0; o < O; ++o) {
        float mz[C::kInPlace];
        C::magic_zero(zv[o][u], mz);
        const float s = sv[o][u];
        float part[R][C::kInPlace] = {};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const std::uint32_t word = part_of(v[o][u], q), hi = word >> C::kShift;
#pragma unroll
          for (int j = 0; j < C::kPer; ++j) {
            const float t = C::minus(word, hi, j, mz);
#pragma unroll
            for (int r = 0; r < R; ++r) {
              part[r][C::pos(j)] = fmaf(t, xs[r][q * C::kPer + j], part[r][C::pos(j)]);
            }
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) acc[o][r] = fmaf(C::combine(part[r]), s, acc[o][r]);
      }
    }
  }
#pragma unroll
  for (int o = 0; o < O; ++o) {
    const std::int64_t n = first + o;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = warp_sum(acc[o][r]);
      if (lane == 0 && n < w.n && r < rows) {
        store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
      }
    }
  }
}

// ---- host side
// ------------------------------------------------------------------------------------

// The tensor-core kernels' settings of one format per layer class: from how many rows of x on (9:
// never) and the kernel's options.
enum TcClass { kTcSmall = 0, kTcWideOut = 1, kTcLongIn = 2 };
constexpr std::int64_t kTcWide = 8192;
int tc_class(const QuantWeight& w) {
  return w.n >= kTcWide ? kTcWideOut : w.k >= kTcWide ? kTcLongIn : kTcSmall;
}
struct FormatTc {
  int from[3] = {9, 9, 9};
  TcOptions options[3];
};

// Session 7's call 1 (in a CUDA graph with PDL, share of the copy rate at batch 1, 7B shapes
// 4096x4096 / 11008x4096 / 4096x11008): GPTQ 4-bit 42/59/61% with 4 steps and 1 block per SM
// against 35/44/39% for quant_gemv.cu's kernel; AWQ 33/52/46% against 32/36/37% for the column
// kernel here; compressed-tensors int4 29-52% against 40/48/50% for quant_gemv.cu's (kept at 1-2
// rows); at 8 rows the tc kernels read GPTQ at 39-64%, AWQ 30-34%, ct4 30-46% against 16-20%,
// 12-16%, 27-36% for quant_gemv_mma.cu's. FP8: 72/76/79% against 56/88/66% for the row kernel
// here, so FP8 layers of fewer than 8192 outputs take it from one row, wider ones from 3 rows.
FormatTc default_tc(QuantKind kind) {
  FormatTc f;
  const auto all = [&](int from, int unroll, int bps) {
    for (int c = 0; c < 3; ++c) {
      f.from[c] = from;
      f.options[c].unroll = unroll;
      f.options[c].blocks_per_sm = bps;
    }
  };
  switch (kind) {
    case QuantKind::FP8:
      all(1, 4, 1);
      f.from[kTcWideOut] = 3;
      break;
    case QuantKind::AWQ:
    case QuantKind::GPTQ:
      all(1, 4, 1);
      break;
    case QuantKind::Compressed:
      all(3, 2, 2);
      break;
  }
  return f;
}

// The variant in use: STRATA_QUANT_GEMV = "v1" (quant_gemv.cu's kernels) or a comma list of
// ro=O, ru=U (row kernels), f8=0|1 / ct=0|1 (FP8 / compressed-tensors rows here or in
// quant_gemv.cu), tc=N / tf=N (the tensor-core kernels of quant_gemv_tc.cu for the int4 formats /
// FP8 from N rows on, 0 never), tu=U (their steps per stage), tb=B (their blocks per SM), ts=S
// (their splits of the inputs, 0 = from tb), tk=0|1 (the splits meet in a thread block cluster's
// shared memory), tr=1|2 (compressed-tensors tiles of 16 or 32 rows), tg=0|1 (q/k/v groups in one
// launch), tw=0|1 (GPTQ's 32-output tiles of session 7, or the 128-output ones at 1-2 rows),
// aw=0|1 (AWQ's 64-output tiles, or the 256-output ones at 1-2 rows), tv=4|8|16 (the wide tiles'
// steps per stage; 0 from the shape), each for every layer class; unknown
// values fall back to the defaults.
struct StreamConfig {
  bool enabled = true;
  int row_o = 2, row_u = 4;
  // Which formats take this file's row kernels (f8=0, ct=0: quant_gemv.cu's instead). Session 6's
  // call 2 (batch 1): FP8 here (64% of the copy rate for a 7B token against 25%),
  // compressed-tensors with quant_gemv.cu's kernel (39% against 32%). Session 7 removed this
  // file's AWQ and GPTQ column kernels: the tensor-core kernels took their place for bf16 x (the
  // column kernels read a 7B token at 35% / 26%, the tensor-core ones at 43% / 53%).
  bool fp8 = true, compressed = false;
  // Since session 8 by layer class (tc_class: 4096-wide layers, n >= 8192, k >= 8192), so each
  // shape of a decoder layer takes what the sweep measured best for it.
  FormatTc tc[4] = {default_tc(QuantKind::FP8), default_tc(QuantKind::AWQ),
                    default_tc(QuantKind::GPTQ), default_tc(QuantKind::Compressed)};
  bool tc_group = true;  // tg=0: a group (q/k/v) launches its layers one by one
};

StreamConfig read_config() {
  StreamConfig c;
  const char* env = std::getenv("STRATA_QUANT_GEMV");
  if (env == nullptr || *env == '\0') return c;
  if (std::strcmp(env, "v1") == 0) {
    c.enabled = false;
    return c;
  }
  const char* p = env;
  while (*p != '\0') {
    const char* eq = std::strchr(p, '=');
    if (eq == nullptr) break;
    const int value = std::atoi(eq + 1);
    const auto key = [&](const char* k) {
      return static_cast<std::size_t>(eq - p) == std::strlen(k) && std::strncmp(p, k, eq - p) == 0;
    };
    if (key("ro") && (value == 2 || value == 4)) c.row_o = value;
    if (key("ru") && (value == 2 || value == 4 || value == 8)) c.row_u = value;
    if (key("f8")) c.fp8 = value != 0;
    if (key("ct")) c.compressed = value != 0;
    // 1 = from one row on, 0 = never, 2..8 = from that many rows on; tc: the int4 formats, tf:
    // FP8, every layer class.
    const int from = value == 0 ? 9 : value;
    const auto each = [&](auto set) {
      for (FormatTc& f : c.tc) {
        for (int k = 0; k < 3; ++k) set(f, k);
      }
    };
    if ((key("tc") || key("tf")) && value >= 0 && value <= 8) {
      const bool fp8 = key("tf");
      for (int i = 0; i < 4; ++i) {
        if ((i == static_cast<int>(QuantKind::FP8)) != fp8) continue;
        for (int k = 0; k < 3; ++k) c.tc[i].from[k] = from;
      }
    }
    if (key("tu") && (value == 1 || value == 2 || value == 4)) {
      each([&](FormatTc& f, int k) { f.options[k].unroll = value; });
    }
    if (key("tb") && value >= 1 && value <= 8) {
      each([&](FormatTc& f, int k) { f.options[k].blocks_per_sm = value; });
    }
    if (key("ts") && value >= 0 && value <= 16) {
      each([&](FormatTc& f, int k) { f.options[k].splits = value; });
    }
    if (key("tk")) each([&](FormatTc& f, int k) { f.options[k].cluster = value != 0; });
    if (key("tr") && (value == 1 || value == 2)) {
      each([&](FormatTc& f, int k) { f.options[k].ct_tiles = value; });
    }
    if (key("tw")) each([&](FormatTc& f, int k) { f.options[k].gptq_wide = value != 0; });
    if (key("aw")) each([&](FormatTc& f, int k) { f.options[k].awq_wide = value != 0; });
    if (key("tv") && (value == 0 || value == 4 || value == 8 || value == 16)) {
      each([&](FormatTc& f, int k) { f.options[k].wide_rows = value; });
    }
    if (key("tg")) c.tc_group = value != 0;
    const char* comma = std::strchr(eq, ',');
    if (comma == nullptr) break;
    p = comma + 1;
  }
  return c;
}

const StreamConfig& config() {
  static const StreamConfig c = read_config();
  return c;
}

bool row_layout(const QuantWeight& w) {
  if (!aligned16(w.weight)) return false;
  if (w.kind == QuantKind::FP8) return w.k % 16 == 0 && (w.block_out == 0 || w.block_in % 16 == 0);
  if (w.kind != QuantKind::Compressed) return false;
  const int per = 32 / w.bits;
  return w.k % (4 * per) == 0 && (w.groups == 1 || w.group % (4 * per) == 0);
}

template <int R, int O, int U, typename T>
cudaError_t launch_rows_ou(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias,
                           T* out, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((w.n + kRowWarps * O - 1) / (kRowWarps * O));
  const dim3 threads(kRowWarps * 32);
  if (w.kind == QuantKind::FP8) {
    return launch_maybe_pdl(fp8_rows_kernel<R, O, U, T>, dim3(blocks), threads, 0, stream, w.pdl, w,
                            x, rows, bias, out, chunk_div(w.block_out ? w.block_in / 16 : 1));
  } else {
    const int per = 32 / w.bits;
    const ChunkDiv per_group = chunk_div(w.groups == 1 ? 1 : w.group / (4 * per));
    if (w.bits == 4) {
      return launch_maybe_pdl(ct_rows_kernel<R, O, U, 4, T>, dim3(blocks), threads, 0, stream,
                              w.pdl, w, x, rows, bias, out, per_group);
    }
    return launch_maybe_pdl(ct_rows_kernel<R, O, U, 8, T>, dim3(blocks), threads, 0, stream, w.pdl,
                            w, x, rows, bias, out, per_group);
  }
}

// Only bf16 x gets the sweep's other variants (the benchmark's dtype); float32 and f16 x take the
// defaults, so the instantiations stay few.
template <int R, typename T>
cudaError_t launch_rows(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias, T* out,
                        cudaStream_t stream) {
  const StreamConfig& c = config();
  if constexpr (std::is_same_v<T, BF16Bits>) {
    if (c.row_o == 4 && c.row_u == 4)
      return launch_rows_ou<R, 4, 4, T>(w, x, rows, bias, out, stream);
    if (c.row_o == 4 && c.row_u == 2)
      return launch_rows_ou<R, 4, 2, T>(w, x, rows, bias, out, stream);
    if (c.row_o == 2 && c.row_u == 2)
      return launch_rows_ou<R, 2, 2, T>(w, x, rows, bias, out, stream);
    if (c.row_o == 2 && c.row_u == 8)
      return launch_rows_ou<R, 2, 8, T>(w, x, rows, bias, out, stream);
  }
  return launch_rows_ou<R, 2, 4, T>(w, x, rows, bias, out, stream);
}

// The layer and call this file takes (else quant_gemv.cu's kernels run).
bool format_on(const QuantWeight& w) {
  const StreamConfig& c = config();
  return w.kind == QuantKind::FP8 ? c.fp8 : w.kind == QuantKind::Compressed && c.compressed;
}

bool takes(const QuantWeight& w, std::int64_t rows, const void* x, Type x_type) {
  return config().enabled && format_on(w) && rows >= 1 && rows <= 2 &&
         x_vector_ok(x, w.k, x_type) && row_layout(w);
}

// w's tensor-core kernel settings (by format and layer class): from how many rows, and the
// kernel's options.
struct TcSetting {
  int from = 9;
  TcOptions options;
};
TcSetting tc_setting(const QuantWeight& w) {
  const FormatTc& f = config().tc[static_cast<int>(w.kind)];
  const int k = tc_class(w);
  return {f.from[k], f.options[k]};
}

// A group takes the tensor-core kernels when each of its layers would on its own at these rows.
bool group_on(const QuantWeight* w, int count, std::int64_t rows) {
  if (!config().enabled || !config().tc_group || rows < 1 || rows > 8) return false;
  for (int i = 0; i < count; ++i) {
    if (rows < tc_setting(w[i]).from) return false;
  }
  return true;
}

}  // namespace

QuantGemvScratch quant_gemv_stream_scratch(const QuantWeight& w, std::int64_t rows, int sms) {
  // Only the tensor-core kernels split the inputs over blocks here (the row kernels finish in one).
  const TcSetting t = tc_setting(w);
  if (!config().enabled || rows < t.from || rows > 8) return {};
  return quant_tc_scratch(w, rows, t.options, sms);
}

QuantGemvScratch quant_gemv_group_scratch(const QuantWeight* w, int count, std::int64_t rows,
                                          int sms) {
  if (!group_on(w, count, rows)) return {};
  return quant_tc_group_scratch(w, count, rows, tc_setting(w[0]).options, sms);
}

bool quant_gemv_group(const QuantWeight* w, int count, const void* x, Type x_type,
                      std::int64_t rows, const void* const* bias, void* const* out,
                      float* workspace, unsigned* tickets, int sms, cudaStream_t stream,
                      cudaError_t* error) {
  if (!group_on(w, count, rows) || !quant_tc_group_takes(w, count, x, x_type, rows)) return false;
  *error = quant_tc_gemv_group(w, count, x, rows, bias, out, workspace, tickets,
                               tc_setting(w[0]).options, sms, stream);
  return true;
}

bool quant_gemv_stream(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows,
                       const void* bias, void* out, float* workspace, unsigned* tickets, int sms,
                       cudaStream_t stream, cudaError_t* error) {
  // The tensor-core variants take up to 8 rows of x at about the cost of one.
  if (config().enabled && rows >= 1 && rows <= 8) {
    const TcSetting t = tc_setting(w);
    if (rows >= t.from && quant_tc_takes(w, x, x_type, rows)) {
      *error = quant_tc_gemv(w, x, rows, bias, out, workspace, tickets, t.options, sms, stream);
      return true;
    }
  }
  if (!takes(w, rows, x, x_type)) return false;
  *error = dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    const auto* bt = static_cast<const T*>(bias);
    auto* ot = static_cast<T*>(out);
    return rows == 1 ? launch_rows<1, T>(w, xt, rows, bt, ot, stream)
                     : launch_rows<2, T>(w, xt, rows, bt, ot, stream);
  });
  return true;
}

}  // namespace strata::cuda::kernels

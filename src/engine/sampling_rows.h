#pragma once
// What the sampler's backends share: the per-row parameters and penalty entries the front end
// packs (uploaded as one buffer for the GPU), the Philox4x32-10 generator, the order-preserving
// key of a float and the fixed-point token weights. C++17 and free of strata headers so the CUDA
// kernel (src/cuda/sampling.cu) includes it: both backends run the same arithmetic, so the same
// seed gives the same token on the CPU and the GPU unless expf differs in the last bit right at a
// boundary.

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define STRATA_HOST_DEVICE __host__ __device__
#else
#define STRATA_HOST_DEVICE
#endif

namespace strata::engine::detail {

// One row of a sampling call. Plain data, 8-byte aligned, copied to the GPU as is.
struct RowParams {
  std::uint64_t seed = 0;
  std::uint64_t counter = 0;       // which draw of the row's stream (tokens generated so far)
  std::int64_t top_k = 0;          // 0: off
  std::int64_t penalty_begin = 0;  // [begin, end) in the PenaltyEntry array
  std::int64_t penalty_end = 0;
  float temperature = 1.0f;         // 1 for greedy rows
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::int32_t greedy = 0;  // argmax after the penalties, no filtering or draw
  std::int32_t pad = 0;
};
static_assert(sizeof(RowParams) % 8 == 0);

// A distinct token of a row's prompt + output (each appears once, so penalties apply once).
struct PenaltyEntry {
  std::int32_t token = 0;
  std::int32_t output_count = 0;  // occurrences among the generated tokens
  std::int32_t in_context = 1;    // in prompt or output: the repetition penalty applies
  std::int32_t pad = 0;
};

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// generator of Random123 and cuRAND: a counter-based generator, so a draw is a pure function of
// (key, counter) and rows and devices need no shared state.
struct Philox4 {
  std::uint32_t v[4];
};
STRATA_HOST_DEVICE inline void mul_hi_lo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi,
                                         std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}
STRATA_HOST_DEVICE inline Philox4 philox4x32_10(Philox4 ctr, std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(0xD2511F53u, ctr.v[0], hi0, lo0);
    mul_hi_lo(0xCD9E8D57u, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}
// The 64 random bits of draw `counter` of stream `seed`.
STRATA_HOST_DEVICE inline std::uint64_t random_bits(std::uint64_t seed, std::uint64_t counter) {
  const Philox4 out =
      philox4x32_10(Philox4{{static_cast<std::uint32_t>(counter),
                             static_cast<std::uint32_t>(counter >> 32), 0u, 0u}},
                    static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return (static_cast<std::uint64_t>(out.v[1]) << 32) | out.v[0];
}

// Float bits mapped so that unsigned order is numeric order (-inf lowest, +inf highest).
STRATA_HOST_DEVICE inline std::uint32_t order_key(float x) {
  std::uint32_t bits;
#ifdef __CUDA_ARCH__
  bits = __float_as_uint(x);
#else
  std::memcpy(&bits, &x, 4);
#endif
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Token weights in fixed point: exp(x - max) * 2^40, truncated. Integer sums are exact and
// independent of order, so thresholds and draws do not depend on how a backend reduces; 2^40
// keeps 262144 tokens of weight <= 2^40 below 2^58, and a token under 2^-40 of the top one
// (never drawn in practice) weighs 0.
inline constexpr double kWeightScale = 1099511627776.0;  // 2^40
STRATA_HOST_DEVICE inline std::uint64_t fixed_weight(float relative_exp) {
  return static_cast<std::uint64_t>(static_cast<double>(relative_exp) * kWeightScale);
}

// The position of a draw in [0, total): floor(bits * total / 2^64).
STRATA_HOST_DEVICE inline std::uint64_t scaled_draw(std::uint64_t bits, std::uint64_t total) {
#ifdef __CUDA_ARCH__
  return __umul64hi(bits, total);
#else
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(bits) * total) >> 64);
#endif
}

// a * b rounded once: nvcc would otherwise fuse `x - a * b` into an fma, which the CPU does not.
STRATA_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// The penalties on one logit, in the documented order: repetition (transformers: divide a positive
// logit, multiply a negative one) on prompt + output tokens, then frequency and presence (OpenAI,
// vLLM) on output tokens.
STRATA_HOST_DEVICE inline float penalized(float x, const RowParams& row, const PenaltyEntry& e) {
  if (e.in_context && row.repetition_penalty != 1.0f) {
    x = x < 0.0f ? mul_rn(x, row.repetition_penalty) : x / row.repetition_penalty;
  }
  if (e.output_count > 0) {
    x = x - mul_rn(row.frequency_penalty, static_cast<float>(e.output_count));
    x = x - row.presence_penalty;
  }
  return x;
}

}  // namespace strata::engine::detail

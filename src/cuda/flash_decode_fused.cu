// Flash decoding in ONE kernel (kernels.h, FlashDecodeArgs; docs/cuda-backend.md, "Attention").
//
// Grid: x = (split, row chunk), y = (batch, kv head). A block (4 warps) takes up to R query rows
// of one kv head's group (all of them for GQA ratios up to 8 at q_len 1: K and V are read once for
// the group) and one chunk of its keys. The chunk is streamed through shared memory in tiles of
// TK keys with cp.async, STAGES tiles in flight: the bytes in flight sit in shared memory, not in
// registers, so a block keeps (STAGES - 1) * TK * row bytes of K and V requested while it computes
// (the ~13 KB per SM HBM needs at full rate, several times over).
//
// Inside a tile each key row is read from shared memory by kLanes lanes, W 16-byte chunks each
// (W = 2 halves the shuffles of the score reduction per key at twice the registers). Each lane
// group keeps its own online-softmax state (base 2) and output columns in registers; the groups of
// the block are merged through shared memory at the end. With one split the block writes the
// output; otherwise it writes its partial (max, sum, unnormalised output, float32) to the scratch
// and takes a ticket from the head's counter: the LAST block of the (batch, kv head, row chunk)
// merges the partials of every split and writes the output, then resets the counter to zero so
// that the next launch (a CUDA-graph replay) finds it as the first did. No second kernel: at 8k
// keys the whole attention of a layer is ~11 us of HBM time, and a dependent launch costs ~2-3.
//
// The kernel template is in flash_decode_fused.cuh (flash_decode_cluster.cu instantiates it with
// the cluster merge); this file holds the scratch-merge instantiations and their launcher.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "cuda/flash_decode_fused.cuh"
#include "cuda/flash_decode_fused.h"

namespace strata::cuda::kernels::fused_decode {
namespace {

template <typename T, int DMAX, int R, int W, int TK, int STAGES>
const Instance& instance() {
  static const Instance v =
      make_instance(fused_decode_kernel<T, DMAX, R, W, TK, STAGES, kThreads, false>,
                    Shape<DMAX, R, W, TK, STAGES, kThreads>::kSmem, kThreads, false);
  return v;
}

template <typename T, int DMAX, int W, int TK, int STAGES>
const Instance& by_rows(int rows) {
  return rows == 1   ? instance<T, DMAX, 1, W, TK, STAGES>()
         : rows == 2 ? instance<T, DMAX, 2, W, TK, STAGES>()
         : rows == 4 ? instance<T, DMAX, 4, W, TK, STAGES>()
                     : instance<T, DMAX, 8, W, TK, STAGES>();
}

template <typename T, int W, int TK, int STAGES>
const Instance& by_width(int widest, int rows) {
  return widest <= 64    ? by_rows<T, 64, W, TK, STAGES>(rows)
         : widest <= 128 ? by_rows<T, 128, W, TK, STAGES>(rows)
                         : by_rows<T, 256, W, TK, STAGES>(rows);
}

// Two 16-byte chunks a lane take twice the registers: four rows at most (eight spill).
template <typename T>
const Instance& by_width_w2(int widest, int rows) {
  constexpr int W = 2, TK = 32, STAGES = 3;
  const auto at = [&](auto dmax) -> const Instance& {
    constexpr int D = decltype(dmax)::value;
    return rows == 1   ? instance<T, D, 1, W, TK, STAGES>()
           : rows == 2 ? instance<T, D, 2, W, TK, STAGES>()
                       : instance<T, D, 4, W, TK, STAGES>();
  };
  return widest <= 64    ? at(std::integral_constant<int, 64>{})
         : widest <= 128 ? at(std::integral_constant<int, 128>{})
                         : at(std::integral_constant<int, 256>{});
}

// The tensor-core instantiations: 8 rows a block whatever the group (the rows cost no registers:
// Q's fragments and O's accumulators are those of one m16 tile).
// Head dim 256 takes 64-key tiles of 128 threads (two stages of 128 keys would be 270 KB).
template <typename T, int TK, int STAGES, int THREADS = kThreads>
const Instance& mma_by_width(int widest) {
  const auto at = [&](auto dmax) -> const Instance& {
    constexpr int D = decltype(dmax)::value;
    constexpr int K = D > 128 ? 64 : TK;
    constexpr int N = D > 128 ? kThreads : THREADS;
    static const Instance v =
        make_instance(fused_decode_kernel<T, D, 8, 1, K, STAGES, N, false, true>,
                      Shape<D, 8, 1, K, STAGES, N, true>::kSmem, N, false);
    return v;
  };
  return widest <= 64    ? at(std::integral_constant<int, 64>{})
         : widest <= 128 ? at(std::integral_constant<int, 128>{})
                         : at(std::integral_constant<int, 256>{});
}

// The tile configurations the bench sweeps (FlashDecodeArgs::variant 2..5, 10..12 and 14; 0 takes
// the default).
template <typename T>
const Instance& by_config(int config, int widest, int rows) {
  switch (config) {
    case 10:
      return mma_by_width<T, 64, 3>(widest);
    case 11:
      return mma_by_width<T, 64, 2>(widest);
    case 12:
      return mma_by_width<T, 128, 2>(widest);
    case 14:
      return mma_by_width<T, 128, 2, 256>(widest);
    case 3:
      return by_width<T, 1, 16, 4>(widest, rows);
    case 2:
      return by_width<T, 1, 32, 3>(widest, rows);
    case 5:
      return by_width<T, 1, 64, 2>(widest, rows);
    default:  // 0 and 4: two chunks a lane, at most 4 rows a block (rows_per_block)
      return by_width_w2<T>(widest, rows);
  }
}

}  // namespace

bool is_mma_variant(int variant) { return variant >= 10 && variant <= 14; }

int rows_per_block(const FlashDecodeArgs& a) {
  if (is_mma_variant(a.variant)) return 8;  // what the instantiations take (mma_by_width)
  const int group_rows = a.q_heads / a.kv_heads * a.q_len;
  // The two-chunk configurations (0, 4, 6-8) take 4 rows a block; larger groups take several row
  // chunks, which read the same K/V tiles at the same time (adjacent blocks: the L2 serves the
  // second). Measured on H100 (device call 1) it beat 8 rows of one chunk a lane.
  const int most =
      a.variant == 0 || a.variant == 4 || (is_cluster_variant(a.variant) && a.variant != 9) ? 4 : 8;
  return group_rows <= 1 ? 1 : group_rows <= 2 ? 2 : group_rows <= 4 ? 4 : most;
}

int row_chunks_of(const FlashDecodeArgs& a) {
  const int rows = rows_per_block(a);
  return (a.q_heads / a.kv_heads * a.q_len + rows - 1) / rows;
}

namespace {
const Instance& instance_of(const FlashDecodeArgs& a) {
  const int widest = std::max(a.head_dim, a.v_dim), rows = rows_per_block(a);
  return a.type == Type::BFloat16 ? by_config<BF16Bits>(a.variant, widest, rows)
                                  : by_config<HalfBits>(a.variant, widest, rows);
}
}  // namespace

int blocks_per_sm(const FlashDecodeArgs& a) { return instance_of(a).blocks_per_sm; }

std::size_t counters_offset(const FlashDecodeArgs& a) {
  const std::size_t rows = static_cast<std::size_t>(a.batch) * a.q_heads * a.q_len;
  return rows * a.splits * (a.v_dim + 2) * sizeof(float);
}

std::size_t counters_bytes(const FlashDecodeArgs& a) {
  return static_cast<std::size_t>(a.batch) * a.kv_heads * row_chunks_of(a) * sizeof(unsigned);
}

cudaError_t launch(const FlashDecodeArgs& a, cudaStream_t stream) {
  const Instance& k = instance_of(a);
  const cudaError_t ready = opt_in(k);
  if (ready != cudaSuccess) return ready;
  const int row_chunks = row_chunks_of(a);
  const dim3 grid(static_cast<unsigned>(a.splits * row_chunks),
                  static_cast<unsigned>(a.batch * a.kv_heads));
  return launch_maybe_pdl(k.kernel, grid, dim3(k.threads), static_cast<std::size_t>(k.smem), stream,
                          a.pdl, a, row_chunks);
}

}  // namespace strata::cuda::kernels::fused_decode

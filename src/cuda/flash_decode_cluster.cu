// Flash decoding in one kernel with the splits of a head merged inside a thread-block cluster
// (sm_90; FlashDecodeArgs::variant 6-9; docs/cuda-backend.md, "Attention").
//
// The one-kernel decode of flash_decode_fused.cu ends with a tail that costs more than the keys
// at 1k-8k: every block writes its partial to a global scratch, fences, takes a ticket, and the
// last block of the head reads every split's partial back (several dependent L2 round trips).
// Here the splits of a (batch, kv head, row chunk) are the blocks of one cluster (at most 16,
// Hopper's non-portable limit): each block keeps its partial in its own shared memory, a cluster
// barrier publishes it, and every block merges a share of the outputs over distributed shared
// memory. No scratch, no counter, no fence. With at most 16 splits of a head and one head's
// cluster in one GPC, the blocks are larger (256 threads, 64-key tiles, deeper pipelines) so that
// one block per SM keeps enough bytes in flight.

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/flash_decode_fused.cuh"
#include "cuda/flash_decode_fused.h"

namespace strata::cuda::kernels::fused_decode {
namespace {

template <typename T, int DMAX, int R, int W, int TK, int STAGES, int THREADS>
const Instance& cluster_instance() {
  static const Instance v =
      make_instance(fused_decode_kernel<T, DMAX, R, W, TK, STAGES, THREADS, true>,
                    Shape<DMAX, R, W, TK, STAGES, THREADS>::kSmem, THREADS, true);
  return v;
}

// W 16-byte chunks a lane: two take at most 4 rows a block, one at most 8 (rows_per_block).
template <typename T, int W, int TK, int STAGES, int THREADS>
const Instance& cluster_by_shape(int widest, int rows) {
  const auto at = [&](auto dmax) -> const Instance& {
    constexpr int D = decltype(dmax)::value;
    if constexpr (W == 1) {
      if (rows > 4) return cluster_instance<T, D, 8, W, TK, STAGES, THREADS>();
    }
    return rows == 1   ? cluster_instance<T, D, 1, W, TK, STAGES, THREADS>()
           : rows == 2 ? cluster_instance<T, D, 2, W, TK, STAGES, THREADS>()
                       : cluster_instance<T, D, 4, W, TK, STAGES, THREADS>();
  };
  return widest <= 64    ? at(std::integral_constant<int, 64>{})
         : widest <= 128 ? at(std::integral_constant<int, 128>{})
                         : at(std::integral_constant<int, 256>{});
}

// The cluster configurations the bench sweeps: 6: 256 threads, 64-key tiles, 4 stages (128 KB at
// head dim 128: one block per SM); 7: 128 threads, 32-key tiles, 6 stages; 8: 256 threads,
// 64-key tiles, 2 stages (two blocks per SM, for more heads than SMs); 9: as 6 with one chunk a
// lane and up to 8 rows a block (GQA groups of 5-8 read K and V once).
// The tensor-core kernel with the cluster merge (13): 128 threads, 64-key tiles, 3 stages, 8 rows.
template <typename T>
const Instance& cluster_mma(int widest) {
  const auto at = [&](auto dmax) -> const Instance& {
    constexpr int D = decltype(dmax)::value;
    static const Instance v = make_instance(fused_decode_kernel<T, D, 8, 1, 64, 3, 128, true, true>,
                                            Shape<D, 8, 1, 64, 3, 128, true>::kSmem, 128, true);
    return v;
  };
  return widest <= 64    ? at(std::integral_constant<int, 64>{})
         : widest <= 128 ? at(std::integral_constant<int, 128>{})
                         : at(std::integral_constant<int, 256>{});
}

template <typename T>
const Instance& cluster_by_config(int variant, int widest, int rows) {
  switch (variant) {
    case 13:
      return cluster_mma<T>(widest);
    case 7:
      return cluster_by_shape<T, 2, 32, 6, 128>(widest, rows);
    case 8:
      return cluster_by_shape<T, 2, 64, 2, 256>(widest, rows);
    case 9:
      return cluster_by_shape<T, 1, 64, 4, 256>(widest, rows);
    default:
      return cluster_by_shape<T, 2, 64, 4, 256>(widest, rows);
  }
}

const Instance& cluster_instance_of(const FlashDecodeArgs& a) {
  const int widest = std::max(a.head_dim, a.v_dim), rows = rows_per_block(a);
  return a.type == Type::BFloat16 ? cluster_by_config<BF16Bits>(a.variant, widest, rows)
                                  : cluster_by_config<HalfBits>(a.variant, widest, rows);
}

}  // namespace

bool is_cluster_variant(int variant) { return (variant >= 6 && variant <= 9) || variant == 13; }

bool cluster_ready(const FlashDecodeArgs& a) {
  const Instance& k = cluster_instance_of(a);
  return k.ok && k.most_cluster >= 8;
}

int cluster_splits_cap(const FlashDecodeArgs& a) {
  return std::max(cluster_instance_of(a).most_cluster, 1);
}

int cluster_splits(const FlashDecodeArgs& a) {
  const Instance& k = cluster_instance_of(a);
  if (!k.ok) return 1;
  // Time ~ waves of clusters x keys per block ~ waves(s) / s: the fewest splits with the fewest
  // waves per split, each split at least kFlashDecodeMinChunk keys.
  const std::int64_t clusters =
      std::max<std::int64_t>(1, std::int64_t{a.batch} * a.kv_heads * row_chunks_of(a));
  const std::int64_t most = std::clamp<std::int64_t>(
      (a.max_kv_len + kFlashDecodeMinChunk - 1) / kFlashDecodeMinChunk, 1, k.most_cluster);
  int best = 1;
  std::int64_t best_waves =
      (clusters + std::max(k.active_clusters[1], 1) - 1) / std::max(k.active_clusters[1], 1);
  for (int s = 2; s <= most; ++s) {
    if (k.active_clusters[s] <= 0) continue;
    const std::int64_t waves = (clusters + k.active_clusters[s] - 1) / k.active_clusters[s];
    if (waves * best < best_waves * s) {
      best = s;
      best_waves = waves;
    }
  }
  return best;
}

cudaError_t cluster_launch(const FlashDecodeArgs& args, cudaStream_t stream) {
  const Instance& k = cluster_instance_of(args);
  const cudaError_t ready = opt_in(k);
  if (ready != cudaSuccess) return ready;
  // The splits are the cluster: more than the device takes in one cluster are folded into fewer
  // (the chunk per split follows a.splits on the device).
  FlashDecodeArgs a = args;
  a.splits = std::clamp(args.splits, 1, k.most_cluster);
  const int row_chunks = row_chunks_of(a);
  cudaLaunchConfig_t config = {};
  config.gridDim =
      dim3(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.batch * a.kv_heads),
           static_cast<unsigned>(row_chunks));
  config.blockDim = dim3(static_cast<unsigned>(k.threads));
  config.dynamicSmemBytes = static_cast<std::size_t>(k.smem);
  config.stream = stream;
  cudaLaunchAttribute attribute[2];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(a.splits);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  attribute[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = a.pdl ? 2 : 1;
  const cudaError_t status = cudaLaunchKernelEx(&config, k.kernel, a, row_chunks);
  if (status != cudaSuccess) {
    cudaGetLastError();  // a refused launch must not surface again at the next launch's check
    return status;
  }
  return launched();
}

}  // namespace strata::cuda::kernels::fused_decode

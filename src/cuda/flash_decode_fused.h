#pragma once
// The one-kernel flash decoding (flash_decode_fused.cu) as flash_decode.cu's launcher calls it,
// and the layout both kernels share: a block covers `rows_per_block` query rows of a kv head's
// group; the scratch holds the partials, then (fused kernel) one ticket counter per (batch, kv
// head, row chunk).

#include <cuda_runtime.h>

#include <cstddef>

#include "cuda/kernels.h"

namespace strata::cuda::kernels::fused_decode {

// The tensor-core variants (10-12 and 14 scratch merge, 13 cluster merge): 8 query rows a block.
bool is_mma_variant(int variant);
int rows_per_block(const FlashDecodeArgs& a);
int row_chunks_of(const FlashDecodeArgs& a);
// Blocks of a.variant's instantiation resident per SM (an occupancy query, made once).
int blocks_per_sm(const FlashDecodeArgs& a);
// Where the counters start in the scratch, and their bytes (for a.splits > 1).
std::size_t counters_offset(const FlashDecodeArgs& a);
std::size_t counters_bytes(const FlashDecodeArgs& a);
// Callers have checked flash_decode_supported and a.splits <= kFlashDecodeMaxSplits.
cudaError_t launch(const FlashDecodeArgs& a, cudaStream_t stream);

// The cluster variants (flash_decode_cluster.cu, FlashDecodeArgs::variant 6-9 and 13): a head's
// splits are one thread-block cluster and merge over distributed shared memory (sm_90).
bool is_cluster_variant(int variant);
// Whether a.variant's cluster kernel runs on this device with clusters of 8 or more.
bool cluster_ready(const FlashDecodeArgs& a);
// The most splits a cluster launch takes on this device (more are folded into this many).
int cluster_splits_cap(const FlashDecodeArgs& a);
// The split count (cluster size) for a.max_kv_len keys on this device.
int cluster_splits(const FlashDecodeArgs& a);
cudaError_t cluster_launch(const FlashDecodeArgs& a, cudaStream_t stream);

}  // namespace strata::cuda::kernels::fused_decode

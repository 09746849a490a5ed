#pragma once
// The sampler front end (sampler.cc) packs the rows once; the backends (sampler_cpu.cc and, on a
// GPU, cuda::sample_rows in src/cuda/) run the same per-row algorithm on them.

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampling_rows.h"
#include "strata/core/tensor.h"
#include "strata/engine/sampling.h"

namespace strata::engine::detail {

struct PackedRows {
  std::vector<RowParams> rows;
  std::vector<PenaltyEntry> penalties;
};

// Validates every row against `vocab` and packs it (penalty entries only for rows that have
// penalties).
PackedRows pack_rows(std::span<const SampleRow> rows, std::int64_t vocab, const char* who);

// CPU backend: `logits` a contiguous [batch, vocab] float tensor on the cpu; `ids` gets one id per
// row; `probs` (nullable) the [batch, vocab] float32 distribution each row draws from.
void sample_rows_cpu(const Tensor& logits, const PackedRows& packed, std::int64_t* ids,
                     float* probs);

}  // namespace strata::engine::detail

#pragma once
// Split-K variant of the residual decode GEMV (o_proj, down_proj: AddResidual), bf16 at batch 1
// (src/cuda/matvec_splitk.cu). Those GEMVs have too few rows to fill more than one wave of the
// default kernel (7B: 4096 rows, 512 blocks, each warp streaming two whole rows), so the launch
// ends in a tail where a few slow warps keep HBM half idle. Here each warp takes one of `split`
// segments of its rows' k; the segments' float32 partial sums go to `partials`, and the warp that
// finishes a row group's segments last (a ticket per row group) adds them up in segment order
// (deterministic), rounds once and does the residual epilogue. More, shorter tasks: more than one
// wave, a short tail. The sums differ from the default kernel's by summation order only.
// Also takes the tail norm (kernels::Gemv::tail_norm_out).

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace strata::cuda::kernels {

struct GemvSplitK {
  Gemv g;         // AddResidual, one group, bf16, batch 1; g.rows 1 or 2 (0: 2), g.unroll 8
  int split = 4;  // segments of k, 2..16
  float* partials = nullptr;    // [split, batch, n] float32
  unsigned* tickets = nullptr;  // [ceil(n / rows)], zero before the launch, left zero after
};
// Whether a split-K kernel is built for this request (type, batch, rows, epilogue, split).
bool gemv_split_k_supported(const GemvSplitK& args);
cudaError_t gemv_split_k(const GemvSplitK& args, cudaStream_t stream);

}  // namespace strata::cuda::kernels

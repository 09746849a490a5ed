#pragma once
// Launchers of the quantized-linear kernels (src/cuda/quant_gemv.cu, quant_dequant.cu), the CUDA
// side of ops::quantized_linear (docs/quantization.md). C++17 and free of strata's headers, like
// kernels.h; the host entry point (quant_linear.cc) has checked every shape and dtype.

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace strata::cuda::kernels {

enum class QuantKind : std::uint8_t { FP8, AWQ, GPTQ, Compressed };

// The packed weight of one layer (pointers into contiguous device tensors).
struct QuantWeight {
  QuantKind kind = QuantKind::FP8;
  std::int64_t n = 0, k = 0;  // out_features, in_features
  int bits = 4;
  std::int64_t group = 0;   // integer formats: inputs per group (k for one group)
  std::int64_t groups = 1;  // rows of the scales (GPTQ, AWQ) / columns (compressed-tensors)
  std::int64_t block_out = 0, block_in = 0;  // FP8; 0, 0 = one scale
  const void* weight = nullptr;              // fp8 bytes / int32 words
  const void* scale = nullptr;               // FP8: float32; others: scale_type
  Type scale_type = Type::Float32;
  const std::int32_t* zeros = nullptr;  // qzeros / weight_zero_point (null: symmetric CT)
  const std::int32_t* g_idx = nullptr;  // GPTQ (values clamped to [0, groups) on the device)
  bool g_idx_sequential = false;        // GPTQ: g_idx[k] == k / group for every k
  // Launch the decode GEMV with programmatic dependent launch (sm_90; the fused decode graph):
  // quant_gemv_stream.cu's kernels prefetch their first weights into L2 and quant_gemv_tc.cu's
  // load their first stage, then wait for the previous kernel before reading x or writing
  // anything. quant_gemv.cu's kernels ignore it (launched normally).
  bool pdl = false;
  // Decode GEMV only: out = residual + (x w^T + bias), each sum rounded to x's dtype as the
  // separate add would (the dense GEMV's AddResidual epilogue); residual [rows, n] like out, which
  // may be the same buffer. Null: out = x w^T + bias.
  const void* residual = nullptr;
  // Decode GEMV only: out = silu(gate) * (x w^T + bias) with gate [rows, n] of x's dtype (the up
  // projection after the gate's), rounded where the separate SiLU and multiply round.
  const void* gate = nullptr;
};

// Decode: rows of x up to this many go through the GEMV kernels.
inline constexpr int kQuantMaxRows = 8;

// Scratch of one quant_gemv call: float32 partial sums of the blocks that split the inputs and one
// ticket per column tile (zero before the call; the kernel leaves them zero). None for layouts
// that finish in one block.
struct QuantGemvScratch {
  std::int64_t floats = 0;
  std::int64_t tickets = 0;
};
QuantGemvScratch quant_gemv_scratch(const QuantWeight& w, std::int64_t rows, int sms);

// out[r, n] = sum_k x[r, k] * w[n, k] (+ bias[n]) for r < rows <= kQuantMaxRows, in one launch:
// x [rows, k] contiguous, bias [n] and out [rows, n] all of x_type (float32, bfloat16, float16),
// accumulated in float32 and rounded once; workspace and tickets as quant_gemv_scratch says (the
// tickets are shared by calls queued on one stream, never by two streams at once).
cudaError_t quant_gemv(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows,
                       const void* bias, void* out, float* workspace, unsigned* tickets, int sms,
                       cudaStream_t stream);

// The streaming GEMV of 1-2 rows (quant_gemv_stream.cu) that quant_gemv tries first: false when
// it does not take this layout (or STRATA_QUANT_GEMV=v1); else *error is the launch's result.
// Its scratch is counted by quant_gemv_scratch.
QuantGemvScratch quant_gemv_stream_scratch(const QuantWeight& w, std::int64_t rows, int sms);
bool quant_gemv_stream(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows,
                       const void* bias, void* out, float* workspace, unsigned* tickets, int sms,
                       cudaStream_t stream, cudaError_t* error);

// The streaming tensor-core GEMV (quant_gemv_tc.cu; compressed-tensors int4 with groups of 128k or
// per channel, GPTQ 4-bit with sequential g_idx, AWQ, FP8 with k % 64 == 0 and blocks of 16k x
// 64k or one scale; bf16 x, 1-8 rows), tried by quant_gemv_stream under STRATA_QUANT_GEMV=...,
// tc=N (int4) / tf=N (FP8). The scratch (split-K partial sums, tickets) is quant_tc_scratch's
// for the same options.
struct TcOptions {
  int unroll = 4;         // steps per stage: 1, 2, 4
  int blocks_per_sm = 1;  // blocks of 8 warps per SM that the split of the inputs aims at
  int splits = 0;         // > 0: split the inputs over this many blocks (capped by the stages)
  // The splits of a tile meet in distributed shared memory (one thread block cluster of at most
  // 8 blocks per tile, sm_90) instead of the float32 workspace and the ticket.
  bool cluster = false;
  int ct_tiles = 1;  // compressed-tensors: 16-row mma tiles per warp (1 or 2)
  // GPTQ at 1-2 rows of x: 128-output tiles, a lane owning 4 outputs (gptq4_wide in
  // quant_gemv_tc.cu), instead of the 32-output tiles of session 7 (STRATA_QUANT_GEMV=tw=1). Off
  // until a device run shows it faster in the library: session 14's standalone probe read the 7B
  // shapes 1.25-1.4x faster on an H100; the library's first version (128 registers, loads held
  // across the PDL wait) took a 16-layer GPTQ decode step 16% longer on an H200 (1.75 against
  // 1.51 ms). `unroll`, `blocks_per_sm` do not apply.
  bool gptq_wide = false;
  // AWQ at 1-2 rows of x: 256-output tiles, a lane owning one word column (awq_wide), instead of
  // awq_tc's 64-output tiles (STRATA_QUANT_GEMV=aw=1). Off until a device run measures it.
  bool awq_wide = false;
  // Steps per stage of the wide tiles (4, 8, 16; 0: from the shape): GPTQ packed rows, AWQ
  // quadruples of input rows (16 bytes of a lane's weights each).
  int wide_rows = 0;
};
bool quant_tc_takes(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows);
QuantGemvScratch quant_tc_scratch(const QuantWeight& w, std::int64_t rows, const TcOptions& options,
                                  int sms);
cudaError_t quant_tc_gemv(const QuantWeight& w, const void* x, std::int64_t rows, const void* bias,
                          void* out, float* ws, unsigned* tickets, const TcOptions& options,
                          int sms, cudaStream_t stream);

// Up to kQuantGroupMax layers of one format that read the same x (q, k, v) in one launch of the
// tensor-core kernels: every layer takes them (quant_tc_takes), they agree on the format, k, bits,
// groups / blocks and scale dtype, and none has an epilogue; bias[i] and out[i] are layer i's. The
// scratch is quant_tc_group_scratch's (one workspace slice and tickets per layer).
inline constexpr int kQuantGroupMax = 3;
bool quant_tc_group_takes(const QuantWeight* w, int count, const void* x, Type x_type,
                          std::int64_t rows);
QuantGemvScratch quant_tc_group_scratch(const QuantWeight* w, int count, std::int64_t rows,
                                        const TcOptions& options, int sms);
cudaError_t quant_tc_gemv_group(const QuantWeight* w, int count, const void* x, std::int64_t rows,
                                const void* const* bias, void* const* out, float* ws,
                                unsigned* tickets, const TcOptions& options, int sms,
                                cudaStream_t stream);

// A group of layers reading the same x (q, k, v) in one launch where the tensor-core kernels take
// each of them at these rows (and STRATA_QUANT_GEMV does not say tg=0): false, having done
// nothing, otherwise (the caller launches them one by one); else *error is the launch's result.
// Its scratch is quant_gemv_group_scratch's (zero where the group is not taken).
QuantGemvScratch quant_gemv_group_scratch(const QuantWeight* w, int count, std::int64_t rows,
                                          int sms);
bool quant_gemv_group(const QuantWeight* w, int count, const void* x, Type x_type,
                      std::int64_t rows, const void* const* bias, void* const* out,
                      float* workspace, unsigned* tickets, int sms, cudaStream_t stream,
                      cudaError_t* error);

// dst[(n - n0) * k + kk] = w[n, kk] in `type` (float32, bfloat16, float16) for n in [n0, n1):
// a row-major tile of the dequantised weight for a GEMM.
cudaError_t quant_dequantize_rows(const QuantWeight& w, std::int64_t n0, std::int64_t n1, void* dst,
                                  Type type, cudaStream_t stream);

// x [m, k] (float32/bf16/f16, contiguous) -> codes [m, k] float8_e4m3fn and float32 scales with
// x ~= code * scale: one scale (per_block false; amax_scratch: one unsigned of device memory) or
// one per 128 inputs of a row, row-major [m, k / 128] (k % 128 == 0).
cudaError_t quant_fp8_activations(const void* x, Type type, std::int64_t m, std::int64_t k,
                                  bool per_block, std::uint8_t* codes, float* scales,
                                  unsigned* amax_scratch, cudaStream_t stream);

}  // namespace strata::cuda::kernels

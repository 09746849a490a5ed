#pragma once
// FP8 prefill through cuBLASLt (quant_fp8_gemm.cc): opt-in, see docs/quantization.md "Prefill".

#include "cuda/quant_kernels.h"
#include "strata/core/tensor.h"

namespace strata::cuda {

// True when STRATA_FP8_PREFILL=cublaslt asks quantized_linear's FP8 prefill to use cuBLASLt.
bool fp8_prefill_cublaslt_enabled();

// out[M, N] = x[M, K] W^T through cuBLASLt's FP8 GEMM with x quantised to fp8 on the fly (no
// bias). Returns false, having done nothing, when the layout (128 x 128 blocks or one scale,
// K and N multiples of 16) or cuBLASLt (no algorithm: remembered per GPU) does not allow it.
bool fp8_prefill_cublaslt(const Tensor& x, const kernels::QuantWeight& w, const Tensor& out);

}  // namespace strata::cuda

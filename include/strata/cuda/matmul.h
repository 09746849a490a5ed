#pragma once
// Matrix-product settings of the CUDA backend. bfloat16 and float16 products always use the
// tensor cores (float32 accumulation); float32 products stay exact IEEE float32 unless TF32 is
// allowed here (faster, about 1e-3 relative error).

namespace strata::cuda {

void set_allow_tf32(bool allow) noexcept;
bool allow_tf32() noexcept;

}  // namespace strata::cuda

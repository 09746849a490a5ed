// FP8 prefill through cuBLASLt's FP8 GEMM on Hopper (docs/quantization.md, "Prefill"): the
// activations are quantised to float8_e4m3fn on the fly (quant_fp8_act.cu) and multiplied with
// the stored fp8 weight, the scales applied by cuBLASLt:
// - per-tensor weight scale: one dynamic activation scale, both SCALAR_32F;
// - 128 x 128 weight blocks: the checkpoint's weight_scale_inv [ceil(N/128), ceil(K/128)] as
//   BLK128x128_32F, the activations per 1 x 128 block as VEC128_32F (CUDA 12.9+).
// Row-major y[M, N] = x[M, K] W[N, K]^T is the column-major D[N, M] = op(A) B with A = W viewed
// as K x N (ld K, transposed) and B = x viewed as K x M (ld K): the "TN" layout FP8 needs.
//
// This rounds the activations to fp8 (relative error up to 2^-4 per element), which the exact
// dequantise + bf16 GEMM path does not; it is opt-in (STRATA_FP8_PREFILL=cublaslt) until the
// accuracy trade is decided by the benchmarks (quant_linear_bench measures both).

#include "cuda/quant_fp8_gemm.h"

#include <cublasLt.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "cuda/cuda_check.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"

namespace strata::cuda {
namespace {

constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

struct LtState {
  std::mutex mutex;
  bool tried = false;
  cublasLtHandle_t handle = nullptr;
  Tensor workspace;
  Tensor amax;  // one unsigned for the per-tensor amax
  bool block_unsupported = false, tensor_unsupported = false;  // no algorithm: latched
};

LtState& state(int device) {
  static std::array<LtState, 64> states;
  STRATA_CHECK(device >= 0 && device < static_cast<int>(states.size()), InternalError,
               "fp8 prefill: cuda:{} is past the {} GPUs covered", device, states.size());
  return states[static_cast<std::size_t>(device)];
}

cudaDataType_t lt_type(DType dtype) {
  switch (dtype) {
    case DType::BFloat16:
      return CUDA_R_16BF;
    case DType::Float16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// RAII holders of the cuBLASLt descriptors.
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~Desc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
  template <typename T>
  bool set(cublasLtMatmulDescAttributes_t a, const T& v) {
    return cublasLtMatmulDescSetAttribute(d, a, &v, sizeof v) == CUBLAS_STATUS_SUCCESS;
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
};
struct Pref {
  cublasLtMatmulPreference_t p = nullptr;
  ~Pref() {
    if (p) cublasLtMatmulPreferenceDestroy(p);
  }
};

}  // namespace

bool fp8_prefill_cublaslt_enabled() {
  const char* env = std::getenv("STRATA_FP8_PREFILL");
  return env != nullptr && std::strcmp(env, "cublaslt") == 0;
}

bool fp8_prefill_cublaslt(const Tensor& x, const kernels::QuantWeight& w, const Tensor& out) {
  const int device = out.device().index();
  const std::int64_t m = x.size(0), k = w.k, n = w.n;
  const bool per_block = w.block_out != 0;
  if (per_block && (w.block_out != 128 || w.block_in != 128 || k % 128 != 0)) return false;
  if (k % 16 != 0 || n % 16 != 0) return false;
  LtState& s = state(device);
  const std::lock_guard lock(s.mutex);
  if ((per_block && s.block_unsupported) || (!per_block && s.tensor_unsupported)) return false;
  DeviceGuard guard(device);
  if (!s.tried) {
    s.tried = true;
    if (cublasLtCreate(&s.handle) != CUBLAS_STATUS_SUCCESS) s.handle = nullptr;
    s.workspace = Tensor::empty({static_cast<std::int64_t>(kWorkspaceBytes)}, DType::UInt8,
                                Device::cuda(device));
    s.amax = Tensor::zeros({1}, DType::Int32, Device::cuda(device));
  }
  if (s.handle == nullptr) return false;
  const cudaStream_t stream = detail::compute_stream_handle(device);

  Desc desc;
  if (cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) {
    return false;
  }
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const Tensor codes = Tensor::empty({m, k}, DType::UInt8, x.device());
  const Tensor scales = Tensor::empty({per_block ? m * (k / 128) : 1}, DType::Float32, x.device());
  const void* a_scale = w.scale;
  const void* b_scale = scales.data_ptr();
  bool ok = desc.set(CUBLASLT_MATMUL_DESC_TRANSA, ta) &&
            desc.set(CUBLASLT_MATMUL_DESC_TRANSB, tb) &&
            desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale) &&
            desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);
  if (per_block) {
    const std::int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const std::int32_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    ok = ok && desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, a_mode) &&
         desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, b_mode);
  }
  Layout a, b, d;
  ok = ok &&
       cublasLtMatrixLayoutCreate(&a.l, CUDA_R_8F_E4M3, static_cast<std::uint64_t>(k),
                                  static_cast<std::uint64_t>(n), k) == CUBLAS_STATUS_SUCCESS &&
       cublasLtMatrixLayoutCreate(&b.l, CUDA_R_8F_E4M3, static_cast<std::uint64_t>(k),
                                  static_cast<std::uint64_t>(m), k) == CUBLAS_STATUS_SUCCESS &&
       cublasLtMatrixLayoutCreate(&d.l, lt_type(out.dtype()), static_cast<std::uint64_t>(n),
                                  static_cast<std::uint64_t>(m), n) == CUBLAS_STATUS_SUCCESS;
  Pref pref;
  const std::size_t ws_bytes = kWorkspaceBytes;
  ok = ok && cublasLtMatmulPreferenceCreate(&pref.p) == CUBLAS_STATUS_SUCCESS &&
       cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &ws_bytes, sizeof ws_bytes) == CUBLAS_STATUS_SUCCESS;
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  ok = ok &&
       cublasLtMatmulAlgoGetHeuristic(s.handle, desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &heuristic,
                                      &found) == CUBLAS_STATUS_SUCCESS &&
       found > 0;
  if (!ok) {
    (per_block ? s.block_unsupported : s.tensor_unsupported) = true;
    return false;
  }
  detail::check(kernels::quant_fp8_activations(
                    x.data_ptr(), static_cast<kernels::Type>(x.dtype()), m, k, per_block,
                    static_cast<std::uint8_t*>(codes.data_ptr()), scales.data<float>(),
                    static_cast<unsigned*>(s.amax.data_ptr()), stream),
                "quantized_linear (fp8 activations)", device);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status = cublasLtMatmul(
      s.handle, desc.d, &alpha, w.weight, a.l, codes.data_ptr(), b.l, &beta, out.data_ptr(), d.l,
      out.data_ptr(), d.l, &heuristic.algo, s.workspace.data_ptr(), kWorkspaceBytes, stream);
  STRATA_CHECK(status == CUBLAS_STATUS_SUCCESS, DeviceError,
               "quantized_linear on cuda:{}: cublasLtMatmul (fp8, {} x {} x {}) failed: {}", device,
               m, n, k, cublasGetStatusString(status));
  return true;
}

}  // namespace strata::cuda

// Dequantise a tile of output rows of a quantized weight into a dense row-major matrix of the
// activation dtype: the prefill path multiplies x by such tiles with cuBLAS, whose reuse of each
// tile over the rows of x hides the dequantisation (docs/quantization.md).

#include <cstdint>

#include "cuda/quant_common.cuh"

namespace strata::cuda::kernels {
namespace {

template <typename T>
__global__ void dequantize_rows_kernel(QuantWeight w, std::int64_t n0, std::int64_t count, T* dst) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const std::int64_t n = n0 + i / w.k, kk = i % w.k;
    dst[i] = from_float<T>(dequantize_one(w, n, kk));
  }
}

}  // namespace

cudaError_t quant_dequantize_rows(const QuantWeight& w, std::int64_t n0, std::int64_t n1, void* dst,
                                  Type type, cudaStream_t stream) {
  const std::int64_t count = (n1 - n0) * w.k;
  if (count <= 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    dequantize_rows_kernel<T>
        <<<grid_for(count), kThreads, 0, stream>>>(w, n0, count, static_cast<T*>(dst));
    return launched();
  });
}

}  // namespace strata::cuda::kernels

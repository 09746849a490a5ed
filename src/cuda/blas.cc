// linear and matmul through cuBLAS: tensor cores for bf16/f16 with float32 accumulation, exact
// float32 unless TF32 is allowed. One handle per device, bound to the compute stream.

#include <cublas_v2.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "cuda/kernels.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"
#include "strata/cuda/matmul.h"

namespace strata::cuda {
namespace {

std::atomic<bool> g_allow_tf32{false};

void check_cublas(cublasStatus_t status, const char* what, int device) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  if (status == CUBLAS_STATUS_ALLOC_FAILED) {
    STRATA_THROW(OutOfMemory,
                 "{} failed on cuda:{}: cuBLAS could not allocate its workspace; free "
                 "tensors or lower the memory budget of this device",
                 what, device);
  }
  STRATA_THROW(DeviceError, "{} failed on cuda:{}: {} ({})", what, device,
               cublasGetStatusString(status), static_cast<int>(status));
}

// The handle of `device`, bound to its compute stream; created once, kept for the process.
cublasHandle_t handle_for(int device) {
  static std::mutex mutex;
  static auto* handles = new std::vector<cublasHandle_t>(device_count(), nullptr);
  std::lock_guard lock(mutex);
  cublasHandle_t& h = (*handles)[static_cast<std::size_t>(device)];
  if (h == nullptr) {
    DeviceGuard guard(device);
    check_cublas(cublasCreate(&h), "cublasCreate", device);
    check_cublas(cublasSetStream(h, detail::compute_stream_handle(device)), "cublasSetStream",
                 device);
    // Half-precision products accumulate in float32, split-K partial sums included: by default
    // cuBLAS may reduce those partials in the output's half precision (an extra rounding per
    // split, seen as f16 errors beyond one output rounding at 16 x 515 x 1000 on the H100).
    check_cublas(cublasSetMathMode(h, static_cast<cublasMath_t>(
                                          CUBLAS_DEFAULT_MATH |
                                          CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                 "cublasSetMathMode", device);
  }
  return h;
}

cudaDataType_t data_type(DType dtype) {
  switch (dtype) {
    case DType::Float32:
      return CUDA_R_32F;
    case DType::BFloat16:
      return CUDA_R_16BF;
    case DType::Float16:
      return CUDA_R_16F;
    default:
      break;
  }
  STRATA_THROW(NotSupported, "matrix products on CUDA take float32, bfloat16 or float16, not {}",
               dtype);
}

cublasComputeType_t compute_type(DType dtype) {
  if (dtype == DType::Float32) {
    return allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
  return CUBLAS_COMPUTE_32F;
}

int as_int(std::int64_t v, const char* what) {
  STRATA_CHECK(v <= INT_MAX, NotSupported, "matrix dimension {} = {} exceeds cuBLAS's int range",
               what, v);
  return static_cast<int>(v);
}

// Row-major C[m, n] = A[m, k] @ B[k, n] (B given as stored, `b_transposed` when B is held as
// [n, k]); batches at the given element strides (0 = shared). cuBLAS is column-major, so it
// computes C^T = B^T A^T.
void gemm(const void* a, std::int64_t stride_a, const void* b, std::int64_t stride_b,
          bool b_transposed, void* c, std::int64_t stride_c, std::int64_t batch, std::int64_t m,
          std::int64_t n, std::int64_t k, DType dtype, int device) {
  if (m == 0 || n == 0 || batch == 0) return;
  DeviceGuard guard(device);
  cublasHandle_t h = handle_for(device);
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t t = data_type(dtype);
  const int mi = as_int(m, "m"), ni = as_int(n, "n"), ki = as_int(k, "k");
  const cublasOperation_t op_b = b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int ldb = b_transposed ? ki : ni;
  if (k == 0) {  // an empty sum is zero; cuBLAS may leave C untouched
    detail::check(cudaMemsetAsync(c, 0, static_cast<std::size_t>(batch * m * n) * dtype_size(dtype),
                                  detail::compute_stream_handle(device)),
                  "cudaMemsetAsync", device);
    return;
  }
  check_cublas(
      cublasGemmStridedBatchedEx(h, op_b, CUBLAS_OP_N, ni, mi, ki, &alpha, b, t, ldb, stride_b, a,
                                 t, ki, stride_a, &beta, c, t, ni, stride_c, as_int(batch, "batch"),
                                 compute_type(dtype), CUBLAS_GEMM_DEFAULT),
      "cublasGemmStridedBatchedEx", device);
}

// The element stride between batches when every batch dimension is broadcast (stride 0) and
// the matrix itself is row-major; -1 otherwise.
std::int64_t broadcast_batch_stride(const Tensor& t) {
  const std::int64_t r = t.dim();
  if (t.stride(r - 1) != 1 || t.stride(r - 2) != t.size(r - 1)) return -1;
  for (std::int64_t d = 0; d + 2 < r; ++d) {
    if (t.stride(d) != 0 && t.size(d) != 1) return -1;
  }
  return 0;
}

}  // namespace

void gemm_nt(const void* a, std::int64_t lda, const void* b, std::int64_t ldb, void* c,
             std::int64_t ldc, std::int64_t m, std::int64_t n, std::int64_t k, DType dtype,
             int device) {
  if (m == 0 || n == 0 || k == 0) return;
  DeviceGuard guard(device);
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t t = data_type(dtype);
  // Column-major view: C^T[n, m] = B[n, k] (stored [n, k] row-major = B^T column-major) A^T.
  check_cublas(
      cublasGemmEx(handle_for(device), CUBLAS_OP_T, CUBLAS_OP_N, as_int(n, "n"), as_int(m, "m"),
                   as_int(k, "k"), &alpha, b, t, as_int(ldb, "ldb"), a, t, as_int(lda, "lda"),
                   &beta, c, t, as_int(ldc, "ldc"), compute_type(dtype), CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx", device);
}

void set_allow_tf32(bool allow) noexcept { g_allow_tf32.store(allow); }
bool allow_tf32() noexcept { return g_allow_tf32.load(); }

namespace {

// Whether the decode GEMV (kernels::gemv) takes x [m, k] against these weights into `out`.
bool gemv_takes(const Tensor& x, std::initializer_list<const Tensor*> weights, const Tensor& out) {
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  const std::int64_t m = x.size(0), k = x.size(1);
  const auto per16 = static_cast<std::int64_t>(16 / dtype_size(x.dtype()));
  if (m < 1 || m > kernels::kMaxGemvBatch || k % per16 != 0 || !aligned(x.data_ptr()) ||
      !aligned(out.data_ptr())) {
    return false;
  }
  return std::all_of(weights.begin(), weights.end(),
                     [&](const Tensor* w) { return aligned(w->data_ptr()); });
}

}  // namespace

bool swiglu_gemv(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (!gemv_takes(x, {&gate, &up}, out)) return false;
  const int device = out.device().index();
  const std::int64_t n = gate.size(0);
  kernels::Gemv g;
  g.type = static_cast<kernels::Type>(out.dtype());
  g.batch = x.size(0);
  g.k = x.size(1);
  g.x = x.data_ptr();
  g.ldx = g.k;
  g.group_count = 2;
  g.groups[0] = kernels::GemvGroup{gate.data_ptr(), nullptr, out.data_ptr(), n, n};
  g.groups[1] = kernels::GemvGroup{up.data_ptr(), nullptr, nullptr, n, n};
  g.epilogue = kernels::GemvEpilogue::SiluMul;
  DeviceGuard guard(device);
  detail::check(kernels::gemv(g, detail::compute_stream_handle(device)), "swiglu (gemv)", device);
  return true;
}

void linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
            const Tensor& out) {
  const int device = out.device().index();
  const std::int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  if (gemv_takes(x, {&weight}, out)) {
    // Decode (1..8 rows): bound by streaming the weight once for all rows; the bias joins before
    // the one rounding. cuBLAS reads the weight at well under the HBM rate for so few rows.
    kernels::Gemv g;
    g.type = static_cast<kernels::Type>(out.dtype());
    g.batch = m;
    g.k = k;
    g.x = x.data_ptr();
    g.ldx = k;
    g.groups[0] = kernels::GemvGroup{weight.data_ptr(), bias ? bias->data_ptr() : nullptr,
                                     out.data_ptr(), n, n};
    DeviceGuard guard(device);
    detail::check(kernels::gemv(g, detail::compute_stream_handle(device)), "linear (gemv)", device);
    return;
  }
  gemm(x.data_ptr(), 0, weight.data_ptr(), 0, /*b_transposed=*/true, out.data_ptr(), 0, 1, m, n, k,
       x.dtype(), device);
  if (bias) {
    DeviceGuard guard(device);
    detail::check(kernels::add_bias_rows(out.data_ptr(), bias->data_ptr(),
                                         static_cast<kernels::Type>(out.dtype()), m, n,
                                         detail::compute_stream_handle(device)),
                  "linear bias add", device);
  }
}

bool grouped_linear(const Tensor& x, const std::vector<Tensor>& weights,
                    const std::vector<std::int64_t>& rows, const Tensor& out) {
  const int device = out.device().index();
  const std::int64_t k = x.size(1), n = out.size(1);
  if (k == 0 || n == 0) return false;
  // One problem per group with rows (cuBLAS groups share m, n and k; here only m differs), each
  // C_g^T [n, m_g] = W_g [n, k] (row-major = W^T column-major, op T) x_g^T (op N), as gemm().
  std::vector<int> m_array, n_array, k_array, lda, ldb, ldc, group_size;
  std::vector<cublasOperation_t> trans_a, trans_b;
  std::vector<const void*> pointers;  // every problem's W, then its x, then its out
  std::vector<const void*> xs;
  std::vector<void*> outs;
  const std::size_t element = dtype_size(x.dtype());
  std::int64_t first = 0;
  for (std::size_t g = 0; g < weights.size(); ++g) {
    const std::int64_t m = rows[g];
    if (m > 0) {
      trans_a.push_back(CUBLAS_OP_T);
      trans_b.push_back(CUBLAS_OP_N);
      m_array.push_back(as_int(n, "n"));
      n_array.push_back(as_int(m, "m"));
      k_array.push_back(as_int(k, "k"));
      lda.push_back(as_int(k, "k"));
      ldb.push_back(as_int(k, "k"));
      ldc.push_back(as_int(n, "n"));
      group_size.push_back(1);
      pointers.push_back(weights[g].data_ptr());
      xs.push_back(static_cast<const std::uint8_t*>(x.data_ptr()) +
                   static_cast<std::size_t>(first * k) * element);
      outs.push_back(static_cast<std::uint8_t*>(out.data_ptr()) +
                     static_cast<std::size_t>(first * n) * element);
    }
    first += m;
  }
  const auto groups = static_cast<int>(group_size.size());
  if (groups == 0) return true;
  pointers.insert(pointers.end(), xs.begin(), xs.end());
  pointers.insert(pointers.end(), outs.begin(), outs.end());
  // cuBLAS reads the pointer arrays on the device: one copy of all three, queued on the compute
  // stream before the product without waiting for it (cudaMemcpyAsync has read pageable memory
  // when it returns; the caching allocator reuses the table only after the product, in stream
  // order).
  std::vector<std::int64_t> addresses;
  for (const void* p : pointers) {
    addresses.push_back(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p)));
  }
  const Tensor on_device = Tensor::from_vector(addresses).to(out.device(), /*non_blocking=*/true);
  const auto* table = static_cast<const void* const*>(on_device.data_ptr());
  const std::vector<float> alpha(static_cast<std::size_t>(groups), 1.0f);
  const std::vector<float> beta(static_cast<std::size_t>(groups), 0.0f);
  const cudaDataType_t t = data_type(x.dtype());
  DeviceGuard guard(device);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      handle_for(device), trans_a.data(), trans_b.data(), m_array.data(), n_array.data(),
      k_array.data(), alpha.data(), table, t, lda.data(), table + groups, t, ldb.data(),
      beta.data(), const_cast<void* const*>(table + 2 * groups), t, ldc.data(), groups,
      group_size.data(), compute_type(x.dtype()));
  // A cuBLAS without this type combination: the caller runs one product per group.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  check_cublas(status, "cublasGemmGroupedBatchedEx", device);
  return true;
}

void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const std::int64_t r = out.dim();
  const std::int64_t m = out.size(r - 2), n = out.size(r - 1), k = a.size(r - 1);
  const std::int64_t batch = m * n == 0 ? 0 : out.numel() / (m * n);
  // Broadcast operands stay shared (stride 0); anything else is made contiguous.
  std::int64_t stride_a = broadcast_batch_stride(a);
  std::int64_t stride_b = broadcast_batch_stride(b);
  const Tensor ac = stride_a == 0 ? a : a.contiguous();
  const Tensor bc = stride_b == 0 ? b : b.contiguous();
  if (stride_a != 0) stride_a = m * k;
  if (stride_b != 0) stride_b = k * n;
  gemm(ac.data_ptr(), stride_a, bc.data_ptr(), stride_b, false, out.data_ptr(), m * n, batch, m, n,
       k, out.dtype(), out.device().index());
}

}  // namespace strata::cuda

// linear and matmul on the CPU.
//
// - Up to simd::kMaxMatvecRows rows of x (decode), any dtype: the weight is streamed once by the
//   vectorised matvec kernel, widened to float32 in registers. This is memory-bound; the goal is
//   DRAM bandwidth on the weight bytes.
// - bfloat16 from 5 rows on, where the CPU has AMX: the same partition over output features,
//   with AMX tiles (cpu/amx.h); x in blocks of 16 rows, each chunk of weight rows read from
//   DRAM once and from L2 for the further blocks.
// - More rows (prefill), float32: OpenBLAS sgemm straight on the caller's memory.
// - More rows, bfloat16 (without AMX) / float16: weight tiles are widened to float32 once and fed
//   to sgemm, whose O(M) reuse of each tile hides the conversion.
// Every path accumulates in float32, adds the bias in float32 and rounds the output once.

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "cpu/amx.h"
#include "cpu/float_io.h"
#include "cpu/layer_kernels.h"
#include "cpu/simd.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

// Floats of weight converted per sgemm call in the tiled path (4 MiB: stays in L2/L3 while
// OpenBLAS packs it).
constexpr std::int64_t kTileFloats = std::int64_t{1} << 20;
// Weight bytes per parallel chunk of the matvec kernel, so small layers stay on one thread.
constexpr std::int64_t kMatvecChunkBytes = std::int64_t{256} << 10;
// Output features per unit of the matvec partition (whole 64-byte lines of y in every dtype).
constexpr std::int64_t kRowAlign = 64;
// Rows of x from which bf16 takes the AMX kernel where there is one.
constexpr std::int64_t kAmxMinRows = 5;

int blas_int(std::int64_t value, const char* op, const char* what) {
  STRATA_CHECK(value <= INT_MAX, NotSupported,
               "{}: {} is {}, beyond the 32-bit sizes OpenBLAS takes; split the operation", op,
               what, value);
  return static_cast<int>(value);
}

// The bias as float32 (empty when there is none).
template <typename T>
std::vector<float> bias_as_float(const std::optional<Tensor>& bias) {
  std::vector<float> out;
  if (bias) {
    out.resize(static_cast<std::size_t>(bias->numel()));
    convert_row_to_float(bias->data<T>(), out.data(), bias->numel());
  }
  return out;
}

// out[m, n0 + j] = T(acc[m * ld + j] + bias[n0 + j]) for m < rows, j < cols.
template <typename T>
void store_rows(const float* acc, std::int64_t ld, std::int64_t rows, std::int64_t cols,
                const std::vector<float>& bias, std::int64_t n0, T* out, std::int64_t ldo,
                float* scratch) {
  for (std::int64_t m = 0; m < rows; ++m) {
    const float* src = acc + m * ld;
    if (!bias.empty()) {
      for (std::int64_t j = 0; j < cols; ++j) scratch[j] = src[j] + bias[n0 + j];
      src = scratch;
    }
    store_row_from_float(src, out + m * ldo + n0, cols);
  }
}

// float32 with enough rows to reuse the weight: one sgemm on the caller's memory, the bias
// pre-loaded into y (beta = 1).
void linear_sgemm(const float* x, const float* w, const std::vector<float>& bias, float* y,
                  std::int64_t m, std::int64_t n, std::int64_t k) {
  if (!bias.empty()) {
    for (std::int64_t i = 0; i < m; ++i) std::memcpy(y + i * n, bias.data(), n * sizeof(float));
  }
  const int bn = blas_int(n, "linear", "out_features");
  const int bk = blas_int(k, "linear", "in_features");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(m, "linear", "rows of x"), bn, bk,
              1.0f, x, bk, w, bk, bias.empty() ? 0.0f : 1.0f, y, bn);
}

// Whether bf16 with m rows of k columns goes to the AMX kernel (where there is one): from
// kAmxMinRows rows on, and k >= 32 (AMX takes blocks of 32 columns).
template <typename T>
bool amx_takes(std::int64_t m, std::int64_t k) {
  return std::is_same_v<T, BFloat16> && simd::kernels().amx_matvec_bf16 != nullptr &&
         m >= kAmxMinRows && k >= 32;
}

// Per-thread scratch reused across calls: decode runs hundreds of linears per token, each cut
// into a few chunks per thread, and none of them should reach the allocator.
float* thread_scratch(std::size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

// Few rows (decode, small batches): stream the weight once through the matvec kernel, in
// parallel over output features. Chunks are whole blocks of kRowAlign output features (whole
// cache lines of y, so no two threads write the same line) and at least kMatvecChunkBytes of
// weight; parallel_for hands a few per thread, claimed dynamically. bfloat16 uses the AVX-512
// BF16 kernel on x as it is where the CPU has one; otherwise x is widened once to float32. Also
// used for float32, where it beats sgemv (measured: docs/cpu-kernels.md).
template <typename T>
void linear_matvec(const T* x, const T* w, const std::vector<float>& bias, T* y, std::int64_t m,
                   std::int64_t n, std::int64_t k) {
  const simd::Kernels& kernels = simd::kernels();
  simd::MatvecBf16NativeFn native = nullptr;
  if constexpr (std::is_same_v<T, BFloat16>) native = kernels.matvec_bf16_native;
  // AMX from 5 rows on (up to 4, the vector kernels are memory-bound already), also past
  // kMaxMatvecRows (prefill): x packed once.
  std::vector<std::uint32_t> x_packed;
  if constexpr (std::is_same_v<T, BFloat16>) {
    if (amx_takes<T>(m, k)) {
      x_packed.resize(static_cast<std::size_t>(amx::packed_words(m, k)));
      // Blocks of 16 rows pack independently (prefill packs megabytes).
      parallel_for((m + 15) / 16, 1, [&](std::int64_t b0, std::int64_t b1) {
        kernels.amx_pack_x(x + b0 * 16 * k, k, std::min(m, b1 * 16) - b0 * 16, k,
                           x_packed.data() + amx::packed_words(b0 * 16, k));
      });
    }
  }
  std::vector<float> xf;
  if (native == nullptr) {
    xf.resize(static_cast<std::size_t>(m * k));
    convert_row_to_float(x, xf.data(), m * k);
  }
  const simd::MatvecFn<T> matvec = [&] {
    if constexpr (std::is_same_v<T, float>) {
      return kernels.matvec_f32;
    } else if constexpr (std::is_same_v<T, BFloat16>) {
      return kernels.matvec_bf16;
    } else {
      return kernels.matvec_f16;
    }
  }();
  const std::int64_t blocks = (n + kRowAlign - 1) / kRowAlign;
  const std::int64_t block_bytes = kRowAlign * k * static_cast<std::int64_t>(sizeof(T));
  const std::int64_t grain = std::max<std::int64_t>(1, kMatvecChunkBytes / block_bytes);
  parallel_for(blocks, grain, [&](std::int64_t first_block, std::int64_t end_block) {
    const std::int64_t begin = first_block * kRowAlign;
    const std::int64_t cols = std::min(n, end_block * kRowAlign) - begin;
    float* acc = thread_scratch(static_cast<std::size_t>((m + 1) * cols));
    float* scratch = acc + m * cols;
    if (native != nullptr) {
      if constexpr (std::is_same_v<T, BFloat16>) {
        if (!x_packed.empty()) {
          kernels.amx_matvec_bf16(x_packed.data(), x, k, m, w + begin * k, k, cols, k, acc, cols);
        } else {
          native(x, k, m, w + begin * k, k, cols, k, acc, cols);
        }
      }
    } else {
      matvec(xf.data(), k, m, w + begin * k, k, cols, k, acc, cols);
    }
    store_rows(acc, cols, m, cols, bias, begin, y, n, scratch);
  });
}

// Many rows: widen x once, then the weight one tile of rows at a time, and let sgemm do the math.
template <typename T>
void linear_tiled(const T* x, const T* w, const std::vector<float>& bias, T* y, std::int64_t m,
                  std::int64_t n, std::int64_t k) {
  std::vector<float> xf(static_cast<std::size_t>(m * k));
  parallel_for(m, std::max<std::int64_t>(1, 16384 / k), [&](std::int64_t b, std::int64_t e) {
    convert_row_to_float(x + b * k, xf.data() + b * k, (e - b) * k);
  });
  const std::int64_t tile = std::min(n, std::max<std::int64_t>(16, kTileFloats / k / 16 * 16));
  std::vector<float> wf(static_cast<std::size_t>(tile * k));
  std::vector<float> acc(static_cast<std::size_t>(m * tile));
  const int bm = blas_int(m, "linear", "rows of x");
  const int bk = blas_int(k, "linear", "in_features");
  for (std::int64_t n0 = 0; n0 < n; n0 += tile) {
    const std::int64_t cols = std::min(tile, n - n0);
    parallel_for(cols, std::max<std::int64_t>(1, 16384 / k), [&](std::int64_t b, std::int64_t e) {
      convert_row_to_float(w + (n0 + b) * k, wf.data() + b * k, (e - b) * k);
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bm, static_cast<int>(cols), bk, 1.0f,
                xf.data(), bk, wf.data(), bk, 0.0f, acc.data(), static_cast<int>(cols));
    parallel_for(m, std::max<std::int64_t>(1, 4096 / cols), [&](std::int64_t b, std::int64_t e) {
      std::vector<float> scratch(static_cast<std::size_t>(cols));
      store_rows(acc.data() + b * cols, cols, e - b, cols, bias, n0, y + b * n, n, scratch.data());
    });
  }
}

// One matrix operand of matmul as sgemm sees it: row-major with leading dimension `ld`,
// transposed or not. Strided views that are neither are copied.
struct BlasMatrix {
  const float* data;
  CBLAS_TRANSPOSE trans;
  int ld;
};

// Rows x cols matrix at `p` with strides (rs, cs) as float32, in place when the layout allows.
template <typename T>
BlasMatrix as_blas_matrix(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t rs,
                          std::int64_t cs, std::vector<float>& buffer) {
  // The stride of a size-1 dimension is arbitrary; give it the value BLAS expects.
  if (rows == 1) rs = std::max<std::int64_t>(cols, 1);
  if (cols == 1) cs = std::max<std::int64_t>(rows, 1);
  if constexpr (std::is_same_v<T, float>) {
    if (cs == 1 && rs >= std::max<std::int64_t>(cols, 1)) {
      return {p, CblasNoTrans, blas_int(rs, "matmul", "a row stride")};
    }
    if (rs == 1 && cs >= std::max<std::int64_t>(rows, 1)) {
      return {p, CblasTrans, blas_int(cs, "matmul", "a column stride")};
    }
  }
  buffer.resize(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    float* dst = buffer.data() + r * cols;
    if (cs == 1) {
      convert_row_to_float(p + r * rs, dst, cols);
    } else {
      for (std::int64_t c = 0; c < cols; ++c) dst[c] = load_as_float(p, r * rs + c * cs);
    }
  }
  return {buffer.data(), CblasNoTrans, blas_int(std::max<std::int64_t>(cols, 1), "matmul", "k")};
}

template <typename T>
void matmul_typed(const Tensor& a, const Tensor& b, const Tensor& out) {
  const std::int64_t rank = out.dim();
  const std::int64_t m = out.size(-2), n = out.size(-1), k = a.size(-1);
  const Shape batch(out.shape().begin(), out.shape().end() - 2);
  const std::int64_t batches = shape_numel(batch);
  T* y = out.data<T>();
  if (k == 0) {
    std::fill(y, y + out.numel(), float_to<T>(0.0f));
    return;
  }
  const int bm = blas_int(m, "matmul", "m"), bn = blas_int(n, "matmul", "n");
  const int bk = blas_int(k, "matmul", "k");
  std::vector<float> a_buf, b_buf, acc;
  if constexpr (!std::is_same_v<T, float>) acc.resize(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < batches; ++i) {
    // Element offsets of batch i in a and b (their batch strides may be 0: broadcast).
    std::int64_t a_off = 0, b_off = 0;
    for (std::int64_t d = rank - 3, rest = i; d >= 0; --d) {
      const std::int64_t idx = rest % batch[d];
      rest /= batch[d];
      a_off += idx * a.stride(d);
      b_off += idx * b.stride(d);
    }
    const T* ap = a.data<T>() + a_off;
    const T* bp = b.data<T>() + b_off;
    const BlasMatrix am = as_blas_matrix(ap, m, k, a.stride(-2), a.stride(-1), a_buf);
    const BlasMatrix bmat = as_blas_matrix(bp, k, n, b.stride(-2), b.stride(-1), b_buf);
    float* c = nullptr;
    if constexpr (std::is_same_v<T, float>) {
      c = y + i * m * n;
    } else {
      c = acc.data();
    }
    cblas_sgemm(CblasRowMajor, am.trans, bmat.trans, bm, bn, bk, 1.0f, am.data, am.ld, bmat.data,
                bmat.ld, 0.0f, c, bn);
    if constexpr (!std::is_same_v<T, float>) store_row_from_float(c, y + i * m * n, m * n);
  }
}

}  // namespace

void linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
            const Tensor& out) {
  const std::int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  if (m == 0 || n == 0) return;
  visit_compute_float(x.dtype(), [&]<typename T>(TypeTag<T>) {
    const std::vector<float> bias_f = bias_as_float<T>(bias);
    T* y = out.data<T>();
    if (k == 0) {  // an empty sum: the bias alone
      for (std::int64_t i = 0; i < m; ++i) {
        for (std::int64_t j = 0; j < n; ++j) y[i * n + j] = float_to<T>(bias ? bias_f[j] : 0.0f);
      }
      return;
    }
    if (m <= simd::kMaxMatvecRows || amx_takes<T>(m, k)) {
      linear_matvec(x.data<T>(), weight.data<T>(), bias_f, y, m, n, k);
    } else if constexpr (std::is_same_v<T, float>) {
      linear_sgemm(x.data<float>(), weight.data<float>(), bias_f, y, m, n, k);
    } else {
      linear_tiled(x.data<T>(), weight.data<T>(), bias_f, y, m, n, k);
    }
  });
}

void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  if (out.numel() == 0) return;
  visit_compute_float(a.dtype(), [&]<typename T>(TypeTag<T>) { matmul_typed<T>(a, b, out); });
}

}  // namespace strata::cpu

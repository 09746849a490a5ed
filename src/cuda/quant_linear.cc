// ops::quantized_linear on a GPU (docs/quantization.md):
// - decode (up to kQuantMaxRows rows of x): one GEMV launch that reads x in its dtype and the
// packed
//   words and scales in registers, dequantising on the fly (quant_gemv.cu);
// - prefill: tiles of output rows dequantised into the activation dtype (quant_dequant.cu), each
//   multiplied by x with cuBLAS straight into its columns of the output; a tile holds at most
//   kTileElements weights, so the dense weight never exists whole.

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_ops.h"
#include "cuda/quant_fp8_gemm.h"
#include "cuda/quant_kernels.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"

namespace strata::cuda {
namespace {

constexpr std::int64_t kTileElements = std::int64_t{16} << 20;  // 32 MiB in bf16

kernels::QuantKind kind_of(ops::QuantFormat format) {
  switch (format) {
    case ops::QuantFormat::FP8:
      return kernels::QuantKind::FP8;
    case ops::QuantFormat::AWQ:
      return kernels::QuantKind::AWQ;
    case ops::QuantFormat::GPTQ:
      return kernels::QuantKind::GPTQ;
    case ops::QuantFormat::CompressedTensors:
      return kernels::QuantKind::Compressed;
  }
  STRATA_THROW(InternalError, "quantized_linear: unknown format {}", static_cast<int>(format));
}

void require_on(const Tensor& t, const char* name, Device device) {
  STRATA_CHECK(t.device() == device, InvalidArgument,
               "quantized_linear: '{}' is on {} but x is on {}; a quantized layer's packed tensors "
               "must be on the device that computes",
               name, t.device(), device);
}

kernels::QuantWeight kernel_weight(const ops::QuantizedWeight& w, Device device) {
  kernels::QuantWeight q;
  q.kind = kind_of(w.format);
  q.n = w.out_features;
  q.k = w.in_features;
  q.bits = w.bits;
  q.group = w.group_size > 0 ? w.group_size : w.in_features;
  require_on(w.weight, "weight", device);
  require_on(w.scale, "scale", device);
  q.weight = w.weight.data_ptr();
  q.scale = w.scale.data_ptr();
  q.scale_type = static_cast<kernels::Type>(w.scale.dtype());
  switch (w.format) {
    case ops::QuantFormat::FP8:
      STRATA_CHECK(w.weight.dtype() == DType::Float8E4M3FN, NotSupported,
                   "quantized_linear on {}: the FP8 weight is {}; the GPU kernels read "
                   "float8_e4m3fn as stored (load the checkpoint without casting it)",
                   device, w.weight.describe());
      q.bits = 8;
      q.block_out = w.block_out;
      q.block_in = w.block_in;
      break;
    case ops::QuantFormat::AWQ:
    case ops::QuantFormat::GPTQ:
      q.groups = w.scale.size(0);
      break;
    case ops::QuantFormat::CompressedTensors:
      q.groups = w.scale.size(1);
      break;
  }
  if (w.zeros) {
    require_on(*w.zeros, "zeros", device);
    q.zeros = w.zeros->data<std::int32_t>();
  }
  if (w.g_idx) {
    require_on(*w.g_idx, "g_idx", device);
    q.g_idx = w.g_idx->data<std::int32_t>();
    q.g_idx_sequential = w.g_idx_sequential.value_or(false);
  }
  return q;
}

int multiprocessors(int device) {
  static std::array<std::atomic<int>, 64> counts{};
  const auto slot = static_cast<std::size_t>(device);
  if (slot < counts.size()) {
    if (const int known = counts[slot].load(std::memory_order_relaxed); known > 0) return known;
  }
  const int count = device_properties(device).multiprocessor_count;
  if (slot < counts.size()) counts[slot].store(count, std::memory_order_relaxed);
  return count;
}

// The GEMV's split-K scratch of one GPU, kept between calls so a decode step allocates nothing and
// launches one kernel per layer. Only the device's compute stream uses it (calls queued there run
// one after another); a buffer outgrown is retired, not freed, since queued kernels may still read
// it.
struct GemvScratch {
  std::mutex mutex;
  Tensor floats, tickets;
  std::vector<Tensor> retired;
};

std::pair<float*, unsigned*> gemv_scratch(int device, const kernels::QuantGemvScratch& need) {
  static std::array<GemvScratch, 64> scratch;
  STRATA_CHECK(device >= 0 && device < static_cast<int>(scratch.size()), InternalError,
               "quantized_linear: cuda:{} is past the {} GPUs the scratch covers", device,
               scratch.size());
  if (need.floats == 0) return {nullptr, nullptr};
  GemvScratch& s = scratch[static_cast<std::size_t>(device)];
  const std::lock_guard lock(s.mutex);
  if (!s.floats.defined() || s.floats.numel() < need.floats) {
    if (s.floats.defined()) s.retired.push_back(s.floats);
    s.floats = Tensor::empty({std::max<std::int64_t>(need.floats, 1 << 20)}, DType::Float32,
                             Device::cuda(device));
  }
  if (!s.tickets.defined() || s.tickets.numel() < need.tickets) {
    if (s.tickets.defined()) s.retired.push_back(s.tickets);
    s.tickets = Tensor::zeros({std::max<std::int64_t>(need.tickets, 4096)}, DType::Int32,
                              Device::cuda(device));
  }
  return {s.floats.data<float>(), static_cast<unsigned*>(s.tickets.data_ptr())};
}

}  // namespace

void reserve_quantized_gemv(const ops::QuantizedWeight& w, std::int64_t rows) {
  const Device device = w.weight.device();
  STRATA_CHECK(device.is_cuda(), InternalError, "reserve_quantized_gemv: the weight is on {}",
               device);
  const int gpu = device.index();
  const kernels::QuantWeight q = kernel_weight(w, device);
  gemv_scratch(gpu, kernels::quant_gemv_scratch(q, rows, multiprocessors(gpu)));
}

void reserve_quantized_gemv_group(const std::vector<const ops::QuantizedWeight*>& weights,
                                  std::int64_t rows) {
  STRATA_CHECK(!weights.empty() && weights.size() <= kernels::kQuantGroupMax, InternalError,
               "reserve_quantized_gemv_group: {} layers (1 to {})", weights.size(),
               kernels::kQuantGroupMax);
  const Device device = weights[0]->weight.device();
  STRATA_CHECK(device.is_cuda(), InternalError, "reserve_quantized_gemv_group: the weight is on {}",
               device);
  const int gpu = device.index();
  std::array<kernels::QuantWeight, kernels::kQuantGroupMax> q;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    reserve_quantized_gemv(*weights[i], rows);  // the fallback's scratch
    q[i] = kernel_weight(*weights[i], device);
  }
  gemv_scratch(gpu, kernels::quant_gemv_group_scratch(q.data(), static_cast<int>(weights.size()),
                                                      rows, multiprocessors(gpu)));
}

void quantized_linear_group_pdl(const Tensor& x, const std::vector<QuantizedProjection>& group,
                                bool pdl) {
  const auto count = static_cast<int>(group.size());
  const std::int64_t m = x.size(0);
  const auto run_each = [&] {
    for (const QuantizedProjection& p : group) {
      static const std::optional<Tensor> none;
      quantized_linear_pdl(x, *p.weight, p.bias != nullptr ? *p.bias : none, *p.out, pdl);
    }
  };
  if (count < 2 || count > kernels::kQuantGroupMax || m < 1 || m > kernels::kQuantMaxRows ||
      !x.device().is_cuda() || !x.is_contiguous()) {
    return run_each();
  }
  const int device = x.device().index();
  std::array<kernels::QuantWeight, kernels::kQuantGroupMax> q;
  std::array<const void*, kernels::kQuantGroupMax> bias{};
  std::array<void*, kernels::kQuantGroupMax> out{};
  for (int i = 0; i < count; ++i) {
    const QuantizedProjection& p = group[static_cast<std::size_t>(i)];
    const std::int64_t n = p.weight->out_features;
    STRATA_CHECK(p.weight->in_features == x.size(1) && p.out->is_contiguous() &&
                     p.out->shape() == (Shape{m, n}) && p.out->dtype() == x.dtype() &&
                     p.out->device() == x.device(),
                 InternalError, "quantized_linear_group_pdl: projection {} does not fit x {}", i,
                 x.describe());
    const bool has_bias = p.bias != nullptr && p.bias->has_value();
    STRATA_CHECK(!has_bias || ((**p.bias).is_contiguous() && (**p.bias).dtype() == x.dtype() &&
                               (**p.bias).numel() == n && (**p.bias).device() == x.device()),
                 InternalError, "quantized_linear_group_pdl: projection {}'s bias", i);
    q[static_cast<std::size_t>(i)] = kernel_weight(*p.weight, x.device());
    q[static_cast<std::size_t>(i)].pdl = pdl;
    bias[static_cast<std::size_t>(i)] = has_bias ? (**p.bias).data_ptr() : nullptr;
    out[static_cast<std::size_t>(i)] = p.out->data_ptr();
  }
  const int sms = multiprocessors(device);
  const auto [ws, tickets] =
      gemv_scratch(device, kernels::quant_gemv_group_scratch(q.data(), count, m, sms));
  const cudaStream_t stream = detail::compute_stream_handle(device);
  cudaError_t error = cudaSuccess;
  bool taken = false;
  {
    DeviceGuard guard(device);
    taken = kernels::quant_gemv_group(q.data(), count, x.data_ptr(),
                                      static_cast<kernels::Type>(x.dtype()), m, bias.data(),
                                      out.data(), ws, tickets, sms, stream, &error);
  }
  if (!taken) return run_each();
  detail::check(error, "quantized_linear (grouped gemv)", device);
}

void quantized_linear(const Tensor& x, const ops::QuantizedWeight& w,
                      const std::optional<Tensor>& bias, const Tensor& out) {
  quantized_linear_pdl(x, w, bias, out, false, nullptr, nullptr);
}

void quantized_linear_pdl(const Tensor& x, const ops::QuantizedWeight& w,
                          const std::optional<Tensor>& bias, const Tensor& out, bool pdl,
                          const Tensor* residual, const Tensor* gate) {
  const int device = out.device().index();
  const std::int64_t m = x.size(0), k = w.in_features, n = w.out_features;
  if (m == 0 || n == 0) return;
  kernels::QuantWeight q = kernel_weight(w, x.device());
  q.pdl = pdl;
  STRATA_CHECK(
      residual == nullptr || (m <= kernels::kQuantMaxRows && residual->is_contiguous() &&
                              residual->shape() == out.shape() && residual->dtype() == out.dtype()),
      InternalError, "quantized_linear: a residual epilogue needs decode rows and out's shape");
  q.residual = residual != nullptr ? residual->data_ptr() : nullptr;
  STRATA_CHECK(gate == nullptr || (m <= kernels::kQuantMaxRows && gate->is_contiguous() &&
                                   gate->shape() == out.shape() && gate->dtype() == out.dtype() &&
                                   gate->data_ptr() != out.data_ptr()),
               InternalError,
               "quantized_linear: a gate epilogue needs decode rows and out's shape");
  q.gate = gate != nullptr ? gate->data_ptr() : nullptr;
  const auto out_type = static_cast<kernels::Type>(out.dtype());
  const cudaStream_t stream = detail::compute_stream_handle(device);
  if (m <= kernels::kQuantMaxRows) {
    const int sms = multiprocessors(device);
    const auto [ws, tickets] = gemv_scratch(device, kernels::quant_gemv_scratch(q, m, sms));
    DeviceGuard guard(device);
    detail::check(
        kernels::quant_gemv(q, x.data_ptr(), out_type, m, bias ? bias->data_ptr() : nullptr,
                            out.data_ptr(), ws, tickets, sms, stream),
        "quantized_linear (gemv)", device);
    return;
  }
  const bool lt_done = q.kind == kernels::QuantKind::FP8 && fp8_prefill_cublaslt_enabled() &&
                       fp8_prefill_cublaslt(x, q, out);
  if (lt_done) {
    if (bias) {
      DeviceGuard guard(device);
      detail::check(
          kernels::add_bias_rows(out.data_ptr(), bias->data_ptr(), out_type, m, n, stream),
          "quantized_linear bias add", device);
    }
    return;
  }
  const std::int64_t rows_per_tile = std::clamp<std::int64_t>(kTileElements / k, 1, n);
  const Tensor tile = Tensor::empty({rows_per_tile, k}, x.dtype(), x.device());
  const auto esize = static_cast<std::int64_t>(dtype_size(x.dtype()));
  for (std::int64_t n0 = 0; n0 < n; n0 += rows_per_tile) {
    const std::int64_t n1 = std::min(n, n0 + rows_per_tile);
    {
      DeviceGuard guard(device);
      detail::check(kernels::quant_dequantize_rows(q, n0, n1, tile.data_ptr(), out_type, stream),
                    "quantized_linear (dequantise)", device);
    }
    // The next tile's dequantisation queues behind this GEMM on the same stream.
    gemm_nt(x.data_ptr(), k, tile.data_ptr(), k, static_cast<char*>(out.data_ptr()) + n0 * esize, n,
            m, n1 - n0, k, x.dtype(), device);
  }
  if (bias) {
    DeviceGuard guard(device);
    detail::check(kernels::add_bias_rows(out.data_ptr(), bias->data_ptr(), out_type, m, n, stream),
                  "quantized_linear bias add", device);
  }
}

}  // namespace strata::cuda

// quantized_linear: checks the packed tensors against the format's layout (docs/quantization.md),
// normalises them for the kernels (contiguous, scales as float32, g_idx as int32) and dispatches.
// Kernels: src/cpu/quant_*.cc and src/cuda/quant_*.

#include <fmt/format.h>

#include <climits>

#include "cpu/quant_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {
namespace {

// A tensor in a check's message, described only when the message is formatted (the checks run
// on every call and pass).
struct Described {
  const Tensor& tensor;
};

}  // namespace
}  // namespace strata::ops

template <>
struct fmt::formatter<strata::ops::Described> : fmt::formatter<std::string> {
  auto format(const strata::ops::Described& d, fmt::format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.tensor.describe(), ctx);
  }
};

namespace strata::ops {
namespace {

constexpr const char* kOp = "quantized_linear";

const char* format_name(QuantFormat format) {
  switch (format) {
    case QuantFormat::FP8:
      return "fp8";
    case QuantFormat::AWQ:
      return "awq";
    case QuantFormat::GPTQ:
      return "gptq";
    case QuantFormat::CompressedTensors:
      return "compressed-tensors pack-quantized";
  }
  return "unknown";
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

class Checker {
 public:
  explicit Checker(const QuantizedWeight& w) : w_(w) {}

  [[noreturn]] void fail(std::string_view what) const {
    STRATA_THROW(CheckpointError, "{}: {} linear [in_features {}, out_features {}]: {}", kOp,
                 format_name(w_.format), w_.in_features, w_.out_features, what);
  }
  // The message is formatted only when the check fails: these run on every call, and
  // check_gptq_g_idx once per input (a string formatted per input per call cost a CPU GPTQ
  // decode call ~15%: perf, session 15).
  template <typename... Args>
  void require(bool ok, fmt::format_string<Args...> what, Args&&... args) const {
    if (!ok) fail(fmt::format(what, std::forward<Args>(args)...));
  }
  void tensor(const Tensor& t, const char* name, const Shape& shape, bool integer) const {
    detail::check_materialized(kOp, name, t);
    require(t.shape() == shape,
            "'{}' is {} but the layout needs shape [{}]; the "
            "checkpoint does not match its quantization_config",
            name, Described{t}, fmt::join(shape, ", "));
    if (integer) {
      require(t.dtype() == DType::Int32, "'{}' is {}; packed tensors are int32", name,
              Described{t});
    } else {
      require(detail::is_compute_float(t.dtype()),
              "'{}' is {}; scales are float32, bfloat16 or float16", name, Described{t});
    }
  }

 private:
  const QuantizedWeight& w_;
};

// Checks `w` and returns the copy the kernels read.
QuantizedWeight normalised(const QuantizedWeight& w) {
  const Checker check(w);
  const std::int64_t K = w.in_features, N = w.out_features, g = w.group_size;
  check.require(K > 0 && N > 0 && K < INT_MAX && N < INT_MAX,
                "in_features and out_features must be positive 32-bit sizes");
  check.require(g >= 0, "group_size {} is negative", g);
  QuantizedWeight out = w;
  switch (w.format) {
    case QuantFormat::FP8: {
      detail::check_materialized(kOp, "weight", w.weight);
      check.require(w.weight.shape() == Shape{N, K}, "'weight' is {}; it must be [{}, {}]",
                    Described{w.weight}, N, K);
      check.require(
          w.weight.dtype() == DType::Float8E4M3FN || detail::is_compute_float(w.weight.dtype()),
          "'weight' is {}; FP8 weights are float8_e4m3fn", Described{w.weight});
      check.require((w.block_out > 0) == (w.block_in > 0), "block sizes must both be set or 0");
      if (w.block_out > 0) {
        check.tensor(w.scale, "weight_scale_inv",
                     {ceil_div(N, w.block_out), ceil_div(K, w.block_in)}, false);
      } else {
        detail::check_materialized(kOp, "weight_scale_inv", w.scale);
        check.require(w.scale.numel() == 1 && detail::is_compute_float(w.scale.dtype()),
                      "'weight_scale_inv' is {}; a per-tensor scale is one float",
                      Described{w.scale});
      }
      break;
    }
    case QuantFormat::AWQ:
      check.require(w.bits == 4, "bits {}; AWQ GEMM is 4-bit", w.bits);
      check.require(N % 8 == 0 && g > 0 && K % g == 0,
                    "AWQ needs out_features a multiple of 8 and in_features a "
                    "multiple of group_size {}",
                    g);
      check.tensor(w.weight, "qweight", {K, N / 8}, true);
      check.require(w.zeros.has_value(), "'qzeros' is missing");
      check.tensor(*w.zeros, "qzeros", {K / g, N / 8}, true);
      check.tensor(w.scale, "scales", {K / g, N}, false);
      break;
    case QuantFormat::GPTQ: {
      check.require(w.bits == 4 || w.bits == 8, "bits {}; GPTQ is 4 or 8-bit", w.bits);
      const int per = 32 / w.bits;
      const std::int64_t groups = g > 0 ? ceil_div(K, g) : 1;
      check.require(K % per == 0 && N % per == 0,
                    "{}-bit GPTQ needs in and out features multiples of {}", w.bits, per);
      check.tensor(w.weight, "qweight", {K / per, N}, true);
      check.require(w.zeros.has_value(), "'qzeros' is missing");
      check.tensor(*w.zeros, "qzeros", {groups, N / per}, true);
      check.tensor(w.scale, "scales", {groups, N}, false);
      check.require(w.g_idx.has_value(), "'g_idx' is missing");
      detail::check_materialized(kOp, "g_idx", *w.g_idx);
      check.require(w.g_idx->shape() == Shape{K} &&
                        (w.g_idx->dtype() == DType::Int32 || w.g_idx->dtype() == DType::Int64),
                    "'g_idx' is {}; it must be int32 [{}]", Described{*w.g_idx}, K);
      out.g_idx = w.g_idx->to(DType::Int32).contiguous();
      // g_idx_sequential is set by a caller that checked the values (check_gptq_g_idx, once per
      // layer in QuantizedLinear): the CPU's tile path indexes by them, a GPU kernel clamps them.
      // Unset, they are checked here on every call (on a GPU a device-to-host copy; on the CPU
      // an O(in_features) pass per call, which a decode step repeats for every GPTQ projection).
      if (!w.g_idx_sequential) {
        out.g_idx_sequential = check_gptq_g_idx(out);
      }
      break;
    }
    case QuantFormat::CompressedTensors: {
      check.require(w.bits == 4 || w.bits == 8, "num_bits {}; pack-quantized is 4 or 8-bit",
                    w.bits);
      const int per = 32 / w.bits;
      const std::int64_t groups = g > 0 ? ceil_div(K, g) : 1;
      check.tensor(w.weight, "weight_packed", {N, ceil_div(K, per)}, true);
      check.tensor(w.scale, "weight_scale", {N, groups}, false);
      if (w.zeros) check.tensor(*w.zeros, "weight_zero_point", {ceil_div(N, per), groups}, true);
      break;
    }
  }
  out.weight = w.weight.contiguous();
  // FP8 scales are few (one per block) and read as float32; the integer formats' scales are
  // widened tile by tile in the kernels (a whole-model copy per call would add ~6% to the bytes a
  // 4-bit decode step reads).
  out.scale =
      w.format == QuantFormat::FP8 ? w.scale.to(DType::Float32).contiguous() : w.scale.contiguous();
  if (w.zeros) out.zeros = w.zeros->contiguous();
  return out;
}

}  // namespace

bool check_gptq_g_idx(const QuantizedWeight& w) {
  const Checker check(w);
  check.require(w.g_idx.has_value(), "'g_idx' is missing");
  detail::check_materialized(kOp, "g_idx", *w.g_idx);
  const std::int64_t g = w.group_size, K = w.in_features;
  const std::int64_t groups = g > 0 ? ceil_div(K, g) : 1;
  const std::vector<std::int64_t> values =
      w.g_idx->to(Device::cpu(), DType::Int64).to_vector<std::int64_t>();
  bool sequential = true;
  for (std::size_t k = 0; k < values.size(); ++k) {
    const std::int64_t v = values[k];
    check.require(v >= 0 && v < groups, "'g_idx' holds group {} at input {}; there are {} groups",
                  v, k, groups);
    sequential = sequential && v == (g > 0 ? static_cast<std::int64_t>(k) / g : 0);
  }
  return sequential;
}

Tensor quantized_linear(const Tensor& x, const QuantizedWeight& weight,
                        const std::optional<Tensor>& bias) {
  detail::check_materialized(kOp, "x", x);
  detail::check_float_dtype(kOp, "x", x);
  STRATA_CHECK_ARG(x.dim() >= 1 && x.size(-1) == weight.in_features,
                   "{}: 'x' ({}) must be [..., in_features] with in_features = {}", kOp,
                   x.describe(), weight.in_features);
  if (bias) {
    detail::check_materialized(kOp, "bias", *bias);
    detail::check_same_dtype(kOp, {{"x", &x}, {"bias", &*bias}});
    detail::check_same_device(kOp, {{"x", &x}, {"bias", &*bias}});
    STRATA_CHECK_ARG(bias->dim() == 1 && bias->size(0) == weight.out_features,
                     "{}: 'bias' ({}) must be [out_features] = [{}]", kOp, bias->describe(),
                     weight.out_features);
  }
  if (weight.weight.defined() && !weight.weight.is_meta()) {
    detail::check_same_device(kOp, {{"x", &x}, {"weight", &weight.weight}});
  }
  STRATA_CHECK(detail::has_kernels(x.device()), NotSupported,
               "{}: no kernels for {} in this build (quantized weights run on the CPU, and on "
               "CUDA GPUs in a build with STRATA_CUDA=ON)",
               kOp, x.device());
  const QuantizedWeight w = normalised(weight);
  Shape out_shape = x.shape();
  out_shape.back() = weight.out_features;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  const std::int64_t rows = x.numel() / weight.in_features;
  std::optional<Tensor> bias_c;
  if (bias) bias_c = bias->contiguous();
  STRATA_OP_KERNEL(x.device(), quantized_linear)
  (x.contiguous().view({rows, weight.in_features}), w, bias_c,
   out.view({rows, weight.out_features}));
  return out;
}

}  // namespace strata::ops

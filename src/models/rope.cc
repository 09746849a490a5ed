// RoPE frequencies. Every step is evaluated in float32 where torch evaluates it in float32 (a
// Python float meeting a float32 tensor is rounded to float32 first), so the frequencies match
// transformers' to the last bit or two.

#include "strata/models/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "strata/core/error.h"

namespace strata::models {
namespace {

// 1 / base ** (arange(0, dim, 2) / dim), in float32.
std::vector<float> default_inv_freq(float base, std::int64_t dim) {
  std::vector<float> inv(static_cast<std::size_t>(dim / 2));
  for (std::size_t i = 0; i < inv.size(); ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  return inv;
}

RopeFrequencies llama3(const RopeConfig& r) {
  RopeFrequencies f{default_inv_freq(static_cast<float>(r.theta), r.dim), 1.0f};
  const auto old_context = static_cast<float>(r.original_max_position_embeddings);
  const auto factor = static_cast<float>(r.factor);
  const auto low = static_cast<float>(r.low_freq_factor);
  const auto low_freq_wavelen = static_cast<float>(
      static_cast<double>(r.original_max_position_embeddings) / r.low_freq_factor);
  const auto high_freq_wavelen = static_cast<float>(
      static_cast<double>(r.original_max_position_embeddings) / r.high_freq_factor);
  const auto two_pi = static_cast<float>(2.0 * std::numbers::pi);
  const auto span = static_cast<float>(r.high_freq_factor - r.low_freq_factor);
  for (float& inv : f.inv_freq) {
    const float wavelen = two_pi / inv;
    float scaled = wavelen > low_freq_wavelen ? inv / factor : inv;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      const float smooth = (old_context / wavelen - low) / span;
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv = scaled;
  }
  return f;
}

RopeFrequencies yarn(const RopeConfig& r) {
  const double factor = r.factor;
  const auto get_mscale = [](double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
  };
  double attention_factor;
  if (r.attention_factor) {
    attention_factor = *r.attention_factor;
  } else if (r.mscale && r.mscale_all_dim && *r.mscale != 0.0 && *r.mscale_all_dim != 0.0) {
    attention_factor = get_mscale(factor, *r.mscale) / get_mscale(factor, *r.mscale_all_dim);
  } else {
    attention_factor = get_mscale(factor, 1.0);
  }
  const double base = r.theta;
  const auto dim = static_cast<double>(r.dim);
  const auto correction_dim = [&](double rotations) {
    return dim *
           std::log(static_cast<double>(r.original_max_position_embeddings) /
                    (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(base));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;  // transformers: "prevent singularity"

  const auto half = static_cast<std::size_t>(r.dim / 2);
  RopeFrequencies f;
  f.inv_freq.resize(half);
  f.attention_scaling = static_cast<float>(attention_factor);
  const auto ffactor = static_cast<float>(factor);
  const auto flow = static_cast<float>(low);
  const auto range = static_cast<float>(high - low);
  for (std::size_t i = 0; i < half; ++i) {
    const float pos_freq =
        std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(r.dim));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (ffactor * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - flow) / range, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    f.inv_freq[i] =
        interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return f;
}

RopeFrequencies dynamic(const RopeConfig& r, std::int64_t seq_len) {
  // transformers computes the new base from a tensor seq_len, hence in float32.
  const std::int64_t len = std::max(seq_len, r.max_position_embeddings);
  const auto factor = static_cast<float>(r.factor);
  const float ratio =
      factor * static_cast<float>(len) / static_cast<float>(r.max_position_embeddings) -
      static_cast<float>(r.factor - 1.0);
  const auto exponent =
      static_cast<float>(static_cast<double>(r.dim) / static_cast<double>(r.dim - 2));
  const float base = static_cast<float>(r.theta) * std::pow(ratio, exponent);
  return {default_inv_freq(base, r.dim), 1.0f};
}

// transformers' _compute_longrope_parameters: 1 / (ext * base ** (arange(0, dim, 2) / dim)) with
// the long factors for sequences longer than original_max_position_embeddings, the short ones
// otherwise; cos and sin scaled by the attention factor either way.
RopeFrequencies longrope(const RopeConfig& r, std::int64_t seq_len) {
  const bool long_context = seq_len > r.original_max_position_embeddings;
  const std::vector<double>& ext = long_context ? r.long_factor : r.short_factor;
  STRATA_CHECK_ARG(static_cast<std::int64_t>(ext.size()) == r.dim / 2,
                   "compute_rope_frequencies: longrope needs {} {} factors, got {}", r.dim / 2,
                   long_context ? "long" : "short", ext.size());
  RopeFrequencies f{std::vector<float>(ext.size()),
                    static_cast<float>(r.attention_factor.value_or(1.0))};
  const auto base = static_cast<float>(r.theta);
  for (std::size_t i = 0; i < ext.size(); ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(r.dim);
    f.inv_freq[i] = 1.0f / (static_cast<float>(ext[i]) * std::pow(base, exponent));
  }
  return f;
}

}  // namespace

RopeFrequencies compute_rope_frequencies(const RopeConfig& rope, std::int64_t seq_len) {
  STRATA_CHECK_ARG(rope.dim > 0 && rope.dim % 2 == 0,
                   "compute_rope_frequencies: dim {} must be positive and even", rope.dim);
  if (rope.type == "default") return {default_inv_freq(static_cast<float>(rope.theta), rope.dim)};
  if (rope.type == "linear") {
    RopeFrequencies f{default_inv_freq(static_cast<float>(rope.theta), rope.dim)};
    for (float& inv : f.inv_freq) inv /= static_cast<float>(rope.factor);
    return f;
  }
  if (rope.type == "dynamic") {
    if (seq_len <= rope.max_position_embeddings) {
      return {default_inv_freq(static_cast<float>(rope.theta), rope.dim)};
    }
    return dynamic(rope, seq_len);
  }
  if (rope.type == "llama3") return llama3(rope);
  if (rope.type == "yarn") return yarn(rope);
  if (rope.type == "longrope") return longrope(rope, seq_len);
  STRATA_THROW(NotSupported, "rope type '{}' is not supported", rope.type);
}

namespace {

// cos and sin rows [positions.size(), dim] of `shape` ([..., n, dim] with n rows in all).
std::pair<Tensor, Tensor> tables_at(const RopeFrequencies& frequencies,
                                    const std::vector<std::int64_t>& positions, Shape shape) {
  const auto half = static_cast<std::int64_t>(frequencies.inv_freq.size());
  const std::int64_t dim = 2 * half;
  Tensor cos = Tensor::empty(shape);
  Tensor sin = Tensor::empty(shape);
  float* c = cos.data<float>();
  float* s = sin.data<float>();
  const float scale = frequencies.attention_scaling;
  for (std::size_t p = 0; p < positions.size(); ++p) {
    const auto position = static_cast<float>(positions[p]);
    float* crow = c + static_cast<std::int64_t>(p) * dim;
    float* srow = s + static_cast<std::int64_t>(p) * dim;
    for (std::int64_t i = 0; i < half; ++i) {
      // float32 product as torch's matmul gives it; cos/sin correctly rounded from it.
      const float angle = position * frequencies.inv_freq[static_cast<std::size_t>(i)];
      const float cv = static_cast<float>(std::cos(static_cast<double>(angle))) * scale;
      const float sv = static_cast<float>(std::sin(static_cast<double>(angle))) * scale;
      crow[i] = crow[half + i] = cv;
      srow[i] = srow[half + i] = sv;
    }
  }
  return {cos, sin};
}

}  // namespace

std::pair<Tensor, Tensor> rope_tables(const RopeFrequencies& frequencies, std::int64_t start,
                                      std::int64_t length) {
  std::vector<std::int64_t> positions(static_cast<std::size_t>(length));
  for (std::int64_t p = 0; p < length; ++p) positions[static_cast<std::size_t>(p)] = start + p;
  const auto dim = static_cast<std::int64_t>(2 * frequencies.inv_freq.size());
  return tables_at(frequencies, positions, {1, length, dim});
}

std::pair<Tensor, Tensor> rope_tables(const RopeFrequencies& frequencies,
                                      const Tensor& position_ids) {
  STRATA_CHECK_ARG(position_ids.dim() == 2 && position_ids.dtype() == DType::Int64,
                   "rope_tables: position_ids must be int64 [batch, seq], got {}",
                   position_ids.describe());
  const std::vector<std::int64_t> positions =
      position_ids.to(Device::cpu()).contiguous().to_vector<std::int64_t>();
  const auto dim = static_cast<std::int64_t>(2 * frequencies.inv_freq.size());
  return tables_at(frequencies, positions, {position_ids.size(0), position_ids.size(1), dim});
}

RotaryEmbedding::RotaryEmbedding(std::string class_name, RopeConfig rope)
    : nn::Module(std::move(class_name)),
      rope_(std::move(rope)),
      original_(compute_rope_frequencies(rope_, 0)) {
  const std::vector<float>& inv = original_.inv_freq;
  const auto half = static_cast<std::int64_t>(inv.size());
  // Under init_empty_weights(include_buffers) these become meta and are rebuilt by
  // reset_non_persistent_buffers; the computation never reads them (the host copy is exact).
  register_buffer("inv_freq", Tensor::from_vector(inv, {half}), /*persistent=*/false);
  register_buffer("original_inv_freq", Tensor::from_vector(inv, {half}), /*persistent=*/false);
}

RopeFrequencies RotaryEmbedding::frequencies(std::int64_t seq_len) const {
  if (rope_.type == "dynamic" && seq_len > rope_.max_position_embeddings) {
    return compute_rope_frequencies(rope_, seq_len);
  }
  // transformers' longrope_frequency_update: the long factors once the sequence passes
  // original_max_position_embeddings (keys cached before keep the short rotation, as there).
  if (rope_.type == "longrope" && seq_len > rope_.original_max_position_embeddings) {
    return compute_rope_frequencies(rope_, seq_len);
  }
  return original_;
}

Value RotaryEmbedding::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() >= 2, "{}: hidden_states must be [batch, seq, ...], got {}", who,
                   x.describe());
  const std::int64_t length = x.size(1);
  Tensor cos, sin;
  if (const Value* ids = args.keyword("position_ids"); ids != nullptr && !ids->is_none()) {
    STRATA_CHECK_ARG(ids->is_tensor(), "{}: position_ids must be a tensor, got {}", who,
                     ids->describe());
    const Tensor positions = ids->tensor().to(Device::cpu());
    STRATA_CHECK_ARG(positions.dim() == 2 && positions.dtype() == DType::Int64 &&
                         (positions.size(0) == x.size(0) || positions.size(0) == 1) &&
                         positions.size(1) == length,
                     "{}: position_ids is {}; it must be int64 [batch, seq] = [{}, {}] (or "
                     "[1, {}])",
                     who, positions.describe(), x.size(0), length, length);
    const std::vector<std::int64_t> values = positions.contiguous().to_vector<std::int64_t>();
    std::int64_t last = 0;
    for (const std::int64_t p : values) {
      STRATA_CHECK_ARG(p >= 0, "{}: position_ids holds {}; positions must be >= 0", who, p);
      last = std::max(last, p);
    }
    // transformers' dynamic RoPE: the length is the largest position + 1.
    std::tie(cos, sin) = rope_tables(frequencies(last + 1), positions);
  } else {
    const Value* past = args.keyword("past_length");
    const std::int64_t start = past ? past->to_int() : 0;
    STRATA_CHECK_ARG(start >= 0, "{}: past_length is {}; it must be >= 0", who, start);
    std::tie(cos, sin) = rope_tables(frequencies(start + length), start, length);
  }
  return nn::ValueList{cos.to(x.device(), x.dtype()), sin.to(x.device(), x.dtype())};
}

void RotaryEmbedding::reset_non_persistent_buffers(Device device) {
  const auto half = static_cast<std::int64_t>(original_.inv_freq.size());
  for (const char* name : {"inv_freq", "original_inv_freq"}) {
    buffer_slot(name)->set(Tensor::from_vector(original_.inv_freq, {half}).to(device));
  }
}

}  // namespace strata::models

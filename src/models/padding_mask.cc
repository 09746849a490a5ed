#include "models/padding_mask.h"

#include <algorithm>
#include <limits>

#include "strata/core/error.h"

namespace strata::models::detail {

PaddingMask::PaddingMask(const Tensor& mask, std::int64_t batch, std::int64_t seq,
                         std::int64_t past, std::string_view who)
    : batch_(batch), seq_(seq), past_(past), keys_(past + seq) {
  const DType dtype = mask.dtype();
  STRATA_CHECK_ARG(dtype == DType::Int64 || dtype == DType::Int32 || dtype == DType::Bool,
                   "{}: attention_mask has dtype {}; it must be int64 (or int32 or bool) with 1 "
                   "for a token and 0 for padding",
                   who, dtype);
  STRATA_CHECK_ARG(!mask.is_meta(), "{}: attention_mask {} has no data (a meta tensor)", who,
                   mask.describe());
  STRATA_CHECK_ARG(mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == keys_,
                   "{}: attention_mask is {}; it must be [batch, past + seq] = [{}, {}] ({} "
                   "cached and {} new tokens), one column per token of the cache and of "
                   "input_ids",
                   who, mask.describe(), batch, keys_, past, seq);
  mask_ = mask.to(Device::cpu(), DType::Int64).contiguous().to_vector<std::int64_t>();
  counts_.resize(mask_.size());
  for (std::int64_t b = 0; b < batch_; ++b) {
    std::int64_t sum = 0;
    for (std::int64_t j = 0; j < keys_; ++j) {
      const std::int64_t v = token(b, j);
      STRATA_CHECK_ARG(v == 0 || v == 1,
                       "{}: attention_mask[{}, {}] is {}; it must be 1 (token) or 0 (padding)", who,
                       b, j, v);
      sum += v;
      counts_[static_cast<std::size_t>(b * keys_ + j)] = sum;
    }
  }
}

std::optional<PaddingMask> PaddingMask::from_args(const nn::Args& args, std::int64_t batch,
                                                  std::int64_t seq, std::int64_t past,
                                                  std::string_view who) {
  const nn::Value* value = args.keyword("attention_mask");
  if (value == nullptr || value->is_none()) return std::nullopt;
  STRATA_CHECK_ARG(value->is_tensor(),
                   "{}: attention_mask must be a tensor [batch, past + seq] of 1 (token) and 0 "
                   "(padding), or none; got {}",
                   who, value->describe());
  PaddingMask mask(value->tensor(), batch, seq, past, who);
  if (std::all_of(mask.mask_.begin(), mask.mask_.end(), [](std::int64_t v) { return v == 1; })) {
    return std::nullopt;
  }
  return mask;
}

std::int64_t PaddingMask::token(std::int64_t b, std::int64_t j) const {
  return mask_[static_cast<std::size_t>(b * keys_ + j)];
}

std::int64_t PaddingMask::count(std::int64_t b, std::int64_t j) const {
  return counts_[static_cast<std::size_t>(b * keys_ + j)];
}

Tensor PaddingMask::tensor() const { return Tensor::from_vector(mask_, {batch_, keys_}); }

Tensor PaddingMask::position_ids(Device device) const {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(batch_ * seq_));
  for (std::int64_t b = 0; b < batch_; ++b) {
    for (std::int64_t i = 0; i < seq_; ++i) {
      const std::int64_t j = past_ + i;
      ids[static_cast<std::size_t>(b * seq_ + i)] = token(b, j) == 1 ? count(b, j) - 1 : 1;
    }
  }
  return Tensor::from_vector(ids, {batch_, seq_}).to(device);
}

Tensor PaddingMask::opt_position_ids(std::int64_t offset, Device device) const {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(batch_ * seq_));
  for (std::int64_t b = 0; b < batch_; ++b) {
    for (std::int64_t i = 0; i < seq_; ++i) {
      const std::int64_t j = past_ + i;
      ids[static_cast<std::size_t>(b * seq_ + i)] = count(b, j) * token(b, j) - 1 + offset;
    }
  }
  return Tensor::from_vector(ids, {batch_, seq_}).to(device);
}

std::int64_t PaddingMask::max_position() const {
  std::int64_t best = 0;
  for (std::int64_t b = 0; b < batch_; ++b) {
    for (std::int64_t i = 0; i < seq_; ++i) {
      const std::int64_t j = past_ + i;
      best = std::max(best, token(b, j) == 1 ? count(b, j) - 1 : 1);
    }
  }
  return best;
}

void PaddingMask::check_position_limit(std::int64_t limit, std::string_view who) const {
  const std::int64_t last = max_position();
  STRATA_CHECK_ARG(last < limit,
                   "{}: positions up to {} exceed the model's {} learned positions "
                   "(max_position_embeddings); use a shorter sequence",
                   who, last, limit);
}

Tensor PaddingMask::additive(std::int64_t window, Device device) {
  for (const Built& built : additive_) {
    if (built.window == window && built.device == device) return built.mask;
  }
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> values(static_cast<std::size_t>(batch_ * seq_ * keys_), neg_inf);
  for (std::int64_t b = 0; b < batch_; ++b) {
    for (std::int64_t i = 0; i < seq_; ++i) {
      const std::int64_t q = past_ + i;
      if (token(b, q) == 0) continue;
      float* row = values.data() + (b * seq_ + i) * keys_;
      for (std::int64_t j = 0; j <= q; ++j) {
        // count(q) - count(j) = position(q) - position(j) for tokens q and j.
        if (token(b, j) == 1 && (window <= 0 || count(b, q) - count(b, j) < window)) row[j] = 0.0f;
      }
    }
  }
  Tensor mask = Tensor::from_vector(values, {batch_, 1, seq_, keys_}).to(device);
  additive_.push_back({window, device, mask});
  return mask;
}

}  // namespace strata::models::detail

// The sampler front end: checks the logits and every row, packs the rows, and runs the CPU
// backend or the CUDA kernel where the logits are. Greedy batches without penalties take
// ops::argmax, the op models::generate_greedy uses, so they stay bit-identical to it.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "engine/sampler_backend.h"
#include "strata/core/error.h"
#include "strata/ops.h"

#ifdef STRATA_WITH_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace strata::engine {
namespace {

bool in_range(double v, double lo, double hi) { return v >= lo && v <= hi; }

// logits as [batch, vocab] (a [batch, 1, vocab] decode output is viewed as such).
Tensor as_rows(const Tensor& logits, std::size_t rows, const char* who) {
  STRATA_CHECK_ARG(logits.defined() && !logits.is_meta(),
                   "{}: logits must be a materialised tensor, got {}", who,
                   logits.defined() ? logits.describe() : std::string("an undefined tensor"));
  const DType dtype = logits.dtype();
  STRATA_CHECK_ARG(dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16,
                   "{}: logits have dtype {}; the sampler takes float32, bfloat16 or float16", who,
                   dtype);
  Tensor x = logits;
  if (x.dim() == 3 && x.size(1) == 1) x = x.select(1, 0);
  STRATA_CHECK_ARG(x.dim() == 2 && x.size(1) > 0,
                   "{}: logits must be [batch, vocab] or [batch, 1, vocab], got {}", who,
                   logits.describe());
  STRATA_CHECK_ARG(x.size(0) == static_cast<std::int64_t>(rows),
                   "{}: {} rows of parameters for logits {}; pass one SampleRow per row", who, rows,
                   logits.describe());
  STRATA_CHECK_ARG(x.is_cpu() || x.is_cuda(), "{}: logits on {}; the sampler runs on cpu or cuda",
                   who, x.device());
  return x.contiguous();
}

bool all_plain_greedy(std::span<const SampleRow> rows) {
  return std::all_of(rows.begin(), rows.end(), [](const SampleRow& r) {
    return r.params != nullptr && r.params->greedy() && !r.params->has_penalties();
  });
}

struct Result {
  std::vector<std::int64_t> ids;
  Tensor probs;
};

Result run(const Tensor& logits, std::span<const SampleRow> rows, bool want_probs,
           const char* who) {
  const Tensor x = as_rows(logits, rows.size(), who);
  const std::int64_t batch = x.size(0), vocab = x.size(1);
  const detail::PackedRows packed = detail::pack_rows(rows, vocab, who);
  Result result;
  result.ids.resize(static_cast<std::size_t>(batch));
  if (x.is_cpu()) {
    if (want_probs) result.probs = Tensor::empty({batch, vocab}, DType::Float32);
    detail::sample_rows_cpu(x, packed, result.ids.data(),
                            want_probs ? result.probs.data<float>() : nullptr);
    return result;
  }
#ifdef STRATA_WITH_CUDA
  // One upload: the rows, then the penalty entries.
  const std::size_t row_bytes = packed.rows.size() * sizeof(detail::RowParams);
  const std::size_t pen_bytes = packed.penalties.size() * sizeof(detail::PenaltyEntry);
  Tensor host = Tensor::empty({static_cast<std::int64_t>(row_bytes + pen_bytes)}, DType::UInt8);
  std::memcpy(host.data_ptr(), packed.rows.data(), row_bytes);
  if (pen_bytes > 0) {
    std::memcpy(static_cast<char*>(host.data_ptr()) + row_bytes, packed.penalties.data(),
                pen_bytes);
  }
  const Tensor device_rows = host.to(x.device());
  const Tensor ids = Tensor::empty({batch}, DType::Int64, x.device());
  if (want_probs) result.probs = Tensor::empty({batch, vocab}, DType::Float32, x.device());
  cuda::sample_rows(x, device_rows, static_cast<std::int64_t>(packed.penalties.size()), ids,
                    want_probs ? &result.probs : nullptr);
  result.ids = ids.to_vector<std::int64_t>();
  return result;
#else
  STRATA_THROW(NotSupported, "{}: logits on {} in a build without CUDA", who, x.device());
#endif
}

}  // namespace

void SamplingParams::validate() const {
  STRATA_CHECK_ARG(std::isfinite(temperature) && temperature >= 0.0,
                   "sampling: temperature is {}; it must be >= 0 (0 means greedy)", temperature);
  STRATA_CHECK_ARG(top_k >= 0, "sampling: top_k is {}; it must be >= 0 (0 disables it)", top_k);
  STRATA_CHECK_ARG(top_p > 0.0 && top_p <= 1.0,
                   "sampling: top_p is {}; it must be in (0, 1] (1 disables it)", top_p);
  STRATA_CHECK_ARG(in_range(min_p, 0.0, 1.0),
                   "sampling: min_p is {}; it must be in [0, 1] (0 disables it)", min_p);
  STRATA_CHECK_ARG(std::isfinite(repetition_penalty) && repetition_penalty > 0.0,
                   "sampling: repetition_penalty is {}; it must be > 0 (1 disables it)",
                   repetition_penalty);
  STRATA_CHECK_ARG(in_range(presence_penalty, -2.0, 2.0),
                   "sampling: presence_penalty is {}; it must be in [-2, 2]", presence_penalty);
  STRATA_CHECK_ARG(in_range(frequency_penalty, -2.0, 2.0),
                   "sampling: frequency_penalty is {}; it must be in [-2, 2]", frequency_penalty);
}

std::string SamplingParams::describe() const {
  std::string out = greedy() ? "greedy" : fmt::format("temperature={}", temperature);
  if (!greedy()) {
    if (top_k > 0) out += fmt::format(" top_k={}", top_k);
    if (top_p < 1.0) out += fmt::format(" top_p={}", top_p);
    if (min_p > 0.0) out += fmt::format(" min_p={}", min_p);
  }
  if (repetition_penalty != 1.0) out += fmt::format(" repetition_penalty={}", repetition_penalty);
  if (presence_penalty != 0.0) out += fmt::format(" presence_penalty={}", presence_penalty);
  if (frequency_penalty != 0.0) out += fmt::format(" frequency_penalty={}", frequency_penalty);
  if (seed) out += fmt::format(" seed={}", *seed);
  return out;
}

std::uint64_t resolve_seed(const SamplingParams& params) {
  if (params.seed) return *params.seed;
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

namespace detail {

PackedRows pack_rows(std::span<const SampleRow> rows, std::int64_t vocab, const char* who) {
  PackedRows packed;
  packed.rows.reserve(rows.size());
  std::vector<std::pair<std::int64_t, bool>> tokens;  // (id, generated)
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const SampleRow& row = rows[r];
    STRATA_CHECK_ARG(row.params != nullptr, "{}: row {} has no SamplingParams", who, r);
    const SamplingParams& p = *row.params;
    p.validate();
    const auto context = static_cast<std::int64_t>(row.context.size());
    STRATA_CHECK_ARG(row.generated >= 0 && row.generated <= context,
                     "{}: row {} says {} tokens were generated but its context holds {}", who, r,
                     row.generated, context);
    RowParams out;
    out.seed = row.seed;
    out.counter = static_cast<std::uint64_t>(row.generated);
    out.greedy = p.greedy() ? 1 : 0;
    out.temperature = p.greedy() ? 1.0f : static_cast<float>(p.temperature);
    out.top_k = p.top_k;
    out.top_p = static_cast<float>(p.top_p);
    out.min_p = static_cast<float>(p.min_p);
    out.repetition_penalty = static_cast<float>(p.repetition_penalty);
    out.presence_penalty = static_cast<float>(p.presence_penalty);
    out.frequency_penalty = static_cast<float>(p.frequency_penalty);
    out.penalty_begin = out.penalty_end = static_cast<std::int64_t>(packed.penalties.size());
    if (p.has_penalties()) {
      tokens.clear();
      for (std::int64_t i = 0; i < context; ++i) {
        const std::int64_t id = row.context[static_cast<std::size_t>(i)];
        STRATA_CHECK_ARG(id >= 0 && id < vocab,
                         "{}: row {} has token id {} at position {} of its context, outside the "
                         "vocabulary [0, {})",
                         who, r, id, i, vocab);
        tokens.emplace_back(id, i >= context - row.generated);
      }
      std::sort(tokens.begin(), tokens.end());
      for (std::size_t i = 0; i < tokens.size();) {
        PenaltyEntry e;
        e.token = static_cast<std::int32_t>(tokens[i].first);
        for (; i < tokens.size() && tokens[i].first == e.token; ++i) {
          e.output_count += tokens[i].second ? 1 : 0;
        }
        packed.penalties.push_back(e);
      }
      out.penalty_end = static_cast<std::int64_t>(packed.penalties.size());
    }
    packed.rows.push_back(out);
  }
  return packed;
}

}  // namespace detail

std::vector<std::int64_t> sample(const Tensor& logits, std::span<const SampleRow> rows) {
  constexpr const char* kWho = "sample";
  if (!rows.empty() && all_plain_greedy(rows)) {
    const Tensor x = as_rows(logits, rows.size(), kWho);
    return ops::argmax(x, -1).to(Device::cpu()).to_vector<std::int64_t>();
  }
  return run(logits, rows, false, kWho).ids;
}

Tensor sampling_probabilities(const Tensor& logits, std::span<const SampleRow> rows) {
  return run(logits, rows, true, "sampling_probabilities").probs;
}

}  // namespace strata::engine

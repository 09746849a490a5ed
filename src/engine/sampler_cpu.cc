// The sampler on the cpu: per row, the penalties, temperature, the top-k / top-p / min-p cuts as
// order keys (sampling_rows.h) and one draw over fixed-point weights in index order. The CUDA
// kernel (src/cuda/sampling.cu) finds the same cuts with radix selection; the integer weights make
// both give the same token for the same seed.

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/sampler_backend.h"
#include "strata/core/parallel.h"

namespace strata::engine::detail {
namespace {

// The row's logits as float32 with the penalties applied (each distinct token once).
template <typename T>
void load_row(const T* src, std::int64_t vocab, const RowParams& row,
              std::span<const PenaltyEntry> penalties, std::vector<float>& x) {
  x.resize(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) x[i] = static_cast<float>(src[i]);
  for (const PenaltyEntry& e : penalties) x[e.token] = penalized(x[e.token], row, e);
}

// Lowest index of the largest value; NaN ranks above everything (torch.argmax).
std::int64_t argmax_row(const std::vector<float>& x) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < static_cast<std::int64_t>(x.size()); ++i) {
    if (std::isnan(x[best])) break;
    if (std::isnan(x[i]) || x[i] > x[best]) best = i;
  }
  return best;
}

// Smallest key kept by top-k: the k-th largest key (ties with it stay).
std::uint32_t top_k_cut(const std::vector<std::uint32_t>& keys, std::int64_t k) {
  // Reused per thread: a fresh vocabulary-sized allocation per token would fault its pages in.
  thread_local std::vector<std::uint32_t> sorted;
  sorted.assign(keys.begin(), keys.end());
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<>());
  return sorted[static_cast<std::size_t>(k - 1)];
}

// Smallest key kept by top-p among keys >= `floor`: a key stays while the weight of the larger
// keys is below top_p times the total. Radix selection over the keys, 8 bits a pass from the top,
// as the CUDA kernel does: O(vocab) per pass, no sort.
std::uint32_t top_p_cut(const std::vector<std::uint32_t>& keys,
                        const std::vector<std::uint64_t>& weights, std::uint32_t floor,
                        float top_p) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] >= floor) total += weights[i];
  }
  // At least 1, so the top token stays however small top_p is (as the CUDA kernel).
  const auto limit = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(static_cast<double>(top_p) * static_cast<double>(total)));
  std::uint32_t prefix = 0, mask = 0;
  std::uint64_t above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    std::uint64_t masses[256] = {};
    std::uint32_t counts[256] = {};
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const std::uint32_t key = keys[i];
      if (key < floor || (key & mask) != prefix) continue;
      const std::uint32_t bin = (key >> shift) & 0xFFu;
      masses[bin] += weights[i];
      ++counts[bin];
    }
    int chosen = -1, lowest = -1;
    for (int b = 255; b >= 0; --b) {
      if (counts[b] == 0) continue;
      lowest = b;
      if (above + masses[b] >= limit) {
        chosen = b;
        break;
      }
      above += masses[b];
    }
    if (chosen < 0) chosen = lowest;  // rounding left the limit above the total: keep all
    prefix |= static_cast<std::uint32_t>(chosen) << shift;
    mask |= 0xFFu << shift;
  }
  return prefix;
}

template <typename T>
std::int64_t sample_one(const T* src, std::int64_t vocab, const RowParams& row,
                        std::span<const PenaltyEntry> penalties, float* probs) {
  // Per-thread scratch rows, reused across calls (see top_k_cut).
  thread_local std::vector<float> x, e;
  thread_local std::vector<std::uint32_t> keys;
  thread_local std::vector<std::uint64_t> w;
  load_row(src, vocab, row, penalties, x);
  const float top = *std::max_element(x.begin(), x.end(), [](float a, float b) { return a < b; });
  if (row.greedy || !std::isfinite(top) ||
      std::any_of(x.begin(), x.end(), [](float v) { return std::isnan(v); })) {
    // Greedy, or no distribution to draw from (NaN, +inf, every token -inf): the argmax.
    const std::int64_t id = argmax_row(x);
    if (probs != nullptr) {
      std::fill(probs, probs + vocab, 0.0f);
      probs[id] = 1.0f;
    }
    return id;
  }
  if (row.temperature != 1.0f) {
    for (float& v : x) v = v / row.temperature;
  }
  const float max = *std::max_element(x.begin(), x.end());
  keys.resize(x.size());
  e.resize(x.size());
  w.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    keys[i] = order_key(x[i]);
    e[i] = std::exp(x[i] - max);
    w[i] = fixed_weight(e[i]);
  }
  std::uint32_t cut = 0;
  if (row.top_k > 0 && row.top_k < vocab) cut = top_k_cut(keys, row.top_k);
  if (row.top_p < 1.0f) cut = std::max(cut, top_p_cut(keys, w, cut, row.top_p));
  const auto kept = [&](std::size_t i) {
    return keys[i] >= cut && (row.min_p == 0.0f || e[i] >= row.min_p);
  };
  std::uint64_t total = 0;
  double sum = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!kept(i)) continue;
    total += w[i];
    sum += e[i];
  }
  if (probs != nullptr) {
    const float norm = static_cast<float>(sum);
    for (std::size_t i = 0; i < x.size(); ++i) probs[i] = kept(i) ? e[i] / norm : 0.0f;
  }
  const std::uint64_t target = scaled_draw(random_bits(row.seed, row.counter), total);
  std::uint64_t acc = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!kept(i)) continue;
    acc += w[i];
    if (acc > target) return static_cast<std::int64_t>(i);
  }
  return argmax_row(x);  // unreachable: the top token weighs 2^40 > 0
}

}  // namespace

void sample_rows_cpu(const Tensor& logits, const PackedRows& packed, std::int64_t* ids,
                     float* probs) {
  const std::int64_t batch = logits.size(0), vocab = logits.size(1);
  visit_dtype(logits.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, Half> ||
                  std::is_same_v<T, BFloat16>) {
      const T* base = logits.data<T>();
      parallel_for(batch, 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t r = begin; r < end; ++r) {
          const RowParams& row = packed.rows[static_cast<std::size_t>(r)];
          const std::span<const PenaltyEntry> penalties(
              packed.penalties.data() + row.penalty_begin,
              static_cast<std::size_t>(row.penalty_end - row.penalty_begin));
          ids[r] = sample_one(base + r * vocab, vocab, row, penalties,
                              probs == nullptr ? nullptr : probs + r * vocab);
        }
      });
    } else {
      STRATA_THROW(InternalError, "sampler CPU kernel reached with dtype {}", logits.dtype());
    }
  });
}

}  // namespace strata::engine::detail

// Scaled dot-product attention on the CPU, flash-attention style: keys are visited in chunks with
// an online softmax, so a thread holds one [row block x key chunk] score tile, never a whole
// [q_len x k_len] matrix, and no float copy of K or V is made.
//
// Work is cut into blocks of query rows that share one kv head: for grouped-query attention the
// rows of every query head in the group go into the same block, so each K/V row is read once for
// all of them (this is what makes decode cheap). When there are too few blocks to keep the cores
// busy (decode with few kv heads), the keys of each block are also split into ranges whose partial
// softmax states are merged afterwards. The split depends only on the shapes, never on the thread
// count, so a result does not change with the number of threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/attention_elementwise.h"
#include "cpu/simd.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

constexpr std::int64_t kRowBlock = 32;   // query rows per block: K/V rows are loaded once per block
constexpr std::int64_t kKeyChunk = 128;  // keys per score tile
constexpr std::int64_t kTargetTasks = 64;       // split keys when there are fewer blocks
constexpr std::int64_t kMinKeysPerSplit = 256;  // ... but never into ranges shorter than this
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void axpy(float* y, float alpha, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// NaN-propagating maximum: a NaN score must give a NaN output, not be skipped.
inline float max_nan(float a, float b) { return (b > a || std::isnan(b)) ? b : a; }

// The vectorised matvec kernel for key rows of type U.
template <typename U>
simd::MatvecFn<U> matvec_for() {
  if constexpr (std::is_same_v<U, float>) {
    return simd::kernels().matvec_f32;
  } else if constexpr (std::is_same_v<U, BFloat16>) {
    return simd::kernels().matvec_bf16;
  } else {
    return simd::kernels().matvec_f16;
  }
}

// The vectorised probabilities-times-V kernel for value rows of type U.
template <typename U>
simd::WeightedSumFn<U> weighted_sum_for() {
  if constexpr (std::is_same_v<U, float>) {
    return simd::kernels().weighted_sum_f32;
  } else if constexpr (std::is_same_v<U, BFloat16>) {
    return simd::kernels().weighted_sum_bf16;
  } else {
    return simd::kernels().weighted_sum_f16;
  }
}

// Copies n elements `stride` apart into dst as floats.
template <typename T>
void gather_floats(const T* p, std::int64_t stride, std::int64_t n, float* dst) {
  const float* row = load_floats(p, stride, n, dst);
  if (row != dst) std::copy(row, row + n, dst);
}

// Softmax state of a block's rows over some keys: running max m, running sum l, and the
// unnormalised output acc. Laid out as [m: rows][l: rows][acc: rows x v_dim].
struct StateView {
  float* m;
  float* l;
  float* acc;
  StateView(float* base, std::int64_t rows, std::int64_t v_dim)
      : m(base), l(base + rows), acc(base + 2 * rows) {}
  static std::int64_t floats(std::int64_t rows, std::int64_t v_dim) { return rows * (2 + v_dim); }
};

template <typename T, typename M>
class AttentionKernel {
 public:
  AttentionKernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
                  bool causal, float scale, const Tensor& out, const Tensor* sinks)
      : q_(q.data<T>()),
        k_(k.data<T>()),
        v_(v.data<T>()),
        mask_(mask != nullptr ? mask->data<M>() : nullptr),
        sinks_(sinks != nullptr ? sinks->data<float>() : nullptr),
        out_(out.data<T>()),
        q_strides_(q.strides()),
        k_strides_(k.strides()),
        v_strides_(v.strides()),
        mask_strides_(mask != nullptr ? mask->strides() : Shape(4, 0)),
        causal_(causal),
        scale_(scale),
        batch_(q.size(0)),
        q_heads_(q.size(1)),
        kv_heads_(k.size(1)),
        q_len_(q.size(2)),
        k_len_(k.size(2)),
        head_dim_(q.size(3)),
        v_dim_(v.size(3)),
        group_(q_heads_ / kv_heads_) {
    const std::int64_t rows_per_head_group = group_ * q_len_;
    if (rows_per_head_group == 0 || batch_ == 0) return;  // no output rows: nothing to do
    block_rows_ = std::min(kRowBlock, rows_per_head_group);
    row_blocks_ = (rows_per_head_group + block_rows_ - 1) / block_rows_;
    blocks_ = batch_ * kv_heads_ * row_blocks_;
    if (blocks_ < kTargetTasks && k_len_ >= 2 * kMinKeysPerSplit) {
      splits_ = std::min((kTargetTasks + blocks_ - 1) / blocks_, k_len_ / kMinKeysPerSplit);
    }
    keys_per_split_ = (k_len_ + splits_ - 1) / splits_;
    splits_ = k_len_ == 0 ? 1 : (k_len_ + keys_per_split_ - 1) / keys_per_split_;
  }

  void run() const {
    if (blocks_ == 0) return;
    const std::int64_t state_floats = StateView::floats(block_rows_, v_dim_);
    if (splits_ == 1) {
      for_each_task(blocks_, [&](std::int64_t task, Scratch& scratch) {
        const std::int64_t block = block_of_task(task);
        attend(block, 0, k_len_, scratch, scratch.state.data());
        finish(block, scratch.state.data(), 1, state_floats, scratch);
      });
      return;
    }
    // Each (block, key range) writes its partial state; then each block merges its ranges.
    std::vector<float> partial(static_cast<std::size_t>(blocks_ * splits_ * state_floats));
    for_each_task(blocks_ * splits_, [&](std::int64_t task, Scratch& scratch) {
      const std::int64_t block = task / splits_;
      const std::int64_t key_begin = (task % splits_) * keys_per_split_;
      attend(block, key_begin, std::min(k_len_, key_begin + keys_per_split_), scratch,
             partial.data() + task * state_floats);
    });
    for_each_task(blocks_, [&](std::int64_t block, Scratch& scratch) {
      finish(block, partial.data() + block * splits_ * state_floats, splits_, state_floats,
             scratch);
    });
  }

 private:
  // Per-thread buffers, all bounded by the block and chunk sizes.
  struct Scratch {
    std::vector<float> q, k, v, scores, state, out;
    explicit Scratch(const AttentionKernel& a)
        : q(a.block_rows_ * a.head_dim_),
          k(a.k_strides_[3] == 1 ? 0 : kKeyChunk * a.head_dim_),  // only to gather a strided K
          v(a.v_dim_),
          scores(a.block_rows_ * kKeyChunk),
          state(StateView::floats(a.block_rows_, a.v_dim_)),
          out(a.v_dim_) {}
  };

  // Runs work(task, scratch) for every task in [0, count). Threads claim tasks one at a time, so
  // unequal tasks (causal rows see more or fewer keys) still spread evenly over the cores.
  template <typename Work>
  void for_each_task(std::int64_t count, Work&& work) const {
    std::atomic<std::int64_t> next{0};
    const std::int64_t workers = std::min<std::int64_t>(count, num_threads());
    parallel_for(workers, 1, [&](std::int64_t, std::int64_t) {
      Scratch scratch(*this);
      for (std::int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
        work(t, scratch);
      }
    });
  }

  // Later row blocks first: under a causal mask they are the expensive ones, and starting them
  // early keeps the tail of the parallel loop short.
  std::int64_t block_of_task(std::int64_t task) const {
    const std::int64_t heads = batch_ * kv_heads_;
    const std::int64_t row_block = row_blocks_ - 1 - task / heads;
    return (task % heads) * row_blocks_ + row_block;
  }

  // Where row `r` of a block lives: batch, query head, query position.
  struct Row {
    std::int64_t batch, head, pos;
  };
  Row row_of(std::int64_t block, std::int64_t r) const {
    const std::int64_t row_block = block % row_blocks_;
    const std::int64_t bk = block / row_blocks_;  // batch * kv_heads + kv_head
    const std::int64_t row = row_block * block_rows_ + r;
    const std::int64_t kv_head = bk % kv_heads_;
    return {bk / kv_heads_, kv_head * group_ + row / q_len_, row % q_len_};
  }
  std::int64_t rows_in(std::int64_t block) const {
    const std::int64_t first = (block % row_blocks_) * block_rows_;
    return std::min(block_rows_, group_ * q_len_ - first);
  }

  // scores[r][j] = q_r . key_j for the block's rows (float, in scratch.q) and `width` key rows
  // `ldk` apart, a few rows per call as the matvec kernel takes them.
  template <typename U>
  void tile_scores(simd::MatvecFn<U> matvec, const U* keys, std::int64_t ldk, std::int64_t rows,
                   std::int64_t width, Scratch& scratch) const {
    for (std::int64_t r = 0; r < rows; r += simd::kMaxMatvecRows) {
      const std::int64_t m = std::min(simd::kMaxMatvecRows, rows - r);
      matvec(scratch.q.data() + r * head_dim_, head_dim_, m, keys, ldk, width, head_dim_,
             scratch.scores.data() + r * kKeyChunk, kKeyChunk);
    }
  }

  // Partial softmax state of `block`'s rows over keys [key_begin, key_end).
  void attend(std::int64_t block, std::int64_t key_begin, std::int64_t key_end, Scratch& scratch,
              float* state_base) const {
    const std::int64_t rows = rows_in(block);
    const StateView state(state_base, block_rows_, v_dim_);
    std::fill(state.m, state.m + rows, kNegInf);
    std::fill(state.l, state.l + rows, 0.0f);
    std::fill(state.acc, state.acc + rows * v_dim_, 0.0f);

    const M* mask_rows[kRowBlock];
    std::int64_t key_limit[kRowBlock];  // row r sees keys [0, key_limit[r])
    std::int64_t block_limit = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const Row row = row_of(block, r);
      const T* q =
          q_ + row.batch * q_strides_[0] + row.head * q_strides_[1] + row.pos * q_strides_[2];
      gather_floats(q, q_strides_[3], head_dim_, scratch.q.data() + r * head_dim_);
      if (mask_ != nullptr) {
        mask_rows[r] = mask_ + row.batch * mask_strides_[0] + row.head * mask_strides_[1] +
                       row.pos * mask_strides_[2];
      }
      // Causal, aligned to the end of the keys: query pos sees keys [0, k_len - q_len + pos].
      key_limit[r] =
          causal_ ? std::clamp(k_len_ - q_len_ + row.pos + 1, std::int64_t{0}, k_len_) : k_len_;
      block_limit = std::max(block_limit, key_limit[r]);
    }
    const std::int64_t kv_offset_b = row_of(block, 0).batch;
    const std::int64_t kv_head = (block / row_blocks_) % kv_heads_;
    const T* k_base = k_ + kv_offset_b * k_strides_[0] + kv_head * k_strides_[1];
    const T* v_base = v_ + kv_offset_b * v_strides_[0] + kv_head * v_strides_[1];

    float* scores = scratch.scores.data();
    const std::int64_t end = std::min(key_end, block_limit);
    for (std::int64_t c0 = key_begin; c0 < end; c0 += kKeyChunk) {
      const std::int64_t width = std::min(kKeyChunk, end - c0);
      // Scores of the tile through the vectorised matvec (K rows widened in registers); a K
      // with strided head_dim is gathered into floats first.
      if (k_strides_[3] == 1) {
        tile_scores(matvec_for<T>(), k_base + c0 * k_strides_[2], k_strides_[2], rows, width,
                    scratch);
      } else {
        for (std::int64_t j = 0; j < width; ++j) {
          gather_floats(k_base + (c0 + j) * k_strides_[2], k_strides_[3], head_dim_,
                        scratch.k.data() + j * head_dim_);
        }
        tile_scores(matvec_for<float>(), scratch.k.data(), head_dim_, rows, width, scratch);
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        float* s = scores + r * kKeyChunk;
        for (std::int64_t j = 0; j < width; ++j) {
          s[j] = c0 + j < key_limit[r] ? s[j] * scale_ : kNegInf;
        }
      }
      if (mask_ != nullptr) {
        for (std::int64_t r = 0; r < rows; ++r) {
          float* s = scores + r * kKeyChunk;
          for (std::int64_t j = 0; j < width; ++j) {
            if (s[j] != kNegInf) s[j] += load_as_float(mask_rows[r], (c0 + j) * mask_strides_[3]);
          }
        }
      }
      // Online softmax: rescale what the row has so far to the new maximum, add this tile.
      for (std::int64_t r = 0; r < rows; ++r) {
        float* s = scores + r * kKeyChunk;
        float tile_max = kNegInf;
        for (std::int64_t j = 0; j < width; ++j) tile_max = max_nan(tile_max, s[j]);
        if (tile_max == kNegInf) {  // every key of the tile is masked for this row
          std::fill(s, s + width, 0.0f);
          continue;
        }
        const float new_max = max_nan(state.m[r], tile_max);
        const float rescale = std::exp(state.m[r] - new_max);  // 0 while the row was empty
        float sum = 0.0f;
        for (std::int64_t j = 0; j < width; ++j) {
          s[j] = std::exp(s[j] - new_max);
          sum += s[j];
        }
        state.l[r] = state.l[r] * rescale + sum;
        if (rescale != 1.0f) {
          float* acc = state.acc + r * v_dim_;
          for (std::int64_t i = 0; i < v_dim_; ++i) acc[i] *= rescale;
        }
        state.m[r] = new_max;
      }
      // acc += p @ V for the tile, each value row loaded once for four rows, widened in
      // registers (a V with strided head_dim goes row by row through a float copy).
      if (v_strides_[3] == 1) {
        weighted_sum_for<T>()(scores, kKeyChunk, rows, v_base + c0 * v_strides_[2], v_strides_[2],
                              width, v_dim_, state.acc, v_dim_);
        continue;
      }
      for (std::int64_t j = 0; j < width; ++j) {
        const float* value =
            load_floats(v_base + (c0 + j) * v_strides_[2], v_strides_[3], v_dim_, scratch.v.data());
        for (std::int64_t r = 0; r < rows; ++r) {
          const float p = scores[r * kKeyChunk + j];
          if (p != 0.0f) axpy(state.acc + r * v_dim_, p, value, v_dim_);
        }
      }
    }
  }

  // Merges `splits` partial states (`stride` floats apart) of a block and stores its rows.
  void finish(std::int64_t block, float* states, std::int64_t splits, std::int64_t stride,
              Scratch& scratch) const {
    const std::int64_t rows = rows_in(block);
    float* o = scratch.out.data();
    for (std::int64_t r = 0; r < rows; ++r) {
      const Row row = row_of(block, r);
      T* dst = out_ + ((row.batch * q_heads_ + row.head) * q_len_ + row.pos) * v_dim_;
      float max = kNegInf;
      for (std::int64_t s = 0; s < splits; ++s) {
        max = max_nan(max, StateView(states + s * stride, block_rows_, v_dim_).m[r]);
      }
      std::fill(o, o + v_dim_, 0.0f);
      if (max != kNegInf) {  // else every key is masked: the row is zeros, not NaN
        // A sink is one more key whose value is zero: it only adds to the denominator.
        float sum = 0.0f;
        if (sinks_ != nullptr) {
          const float sink = sinks_[row.head];
          max = max_nan(max, sink);
          sum = std::exp(sink - max);
        }
        for (std::int64_t s = 0; s < splits; ++s) {
          const StateView part(states + s * stride, block_rows_, v_dim_);
          if (part.m[r] == kNegInf) continue;
          const float weight = std::exp(part.m[r] - max);
          sum += part.l[r] * weight;
          axpy(o, weight, part.acc + r * v_dim_, v_dim_);
        }
        const float inv = 1.0f / sum;
        for (std::int64_t i = 0; i < v_dim_; ++i) o[i] *= inv;
      }
      store_row_from_float(o, dst, v_dim_);
    }
  }

  const T* q_;
  const T* k_;
  const T* v_;
  const M* mask_;
  const float* sinks_;  // [q_heads] or null
  T* out_;
  Shape q_strides_, k_strides_, v_strides_, mask_strides_;
  bool causal_;
  float scale_;
  std::int64_t batch_, q_heads_, kv_heads_, q_len_, k_len_, head_dim_, v_dim_, group_;
  std::int64_t block_rows_ = 1;
  std::int64_t row_blocks_ = 0;
  std::int64_t blocks_ = 0;
  std::int64_t splits_ = 1;
  std::int64_t keys_per_split_ = 1;
};

}  // namespace

void scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor* mask, bool causal, float scale, const Tensor& out,
                                  const Tensor* sinks) {
  visit_compute_float(q.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    // The mask is float32 or q's dtype (the front end checked).
    if (mask == nullptr || mask->dtype() == DType::Float32) {
      AttentionKernel<T, float>(q, k, v, mask, causal, scale, out, sinks).run();
    } else {
      AttentionKernel<T, T>(q, k, v, mask, causal, scale, out, sinks).run();
    }
  });
}

}  // namespace strata::cpu

// The cpu experts of a decode step in one parallel region (cpu/expert_gemv.h).

#include "cpu/expert_gemv.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cpu/float_io.h"
#include "cpu/simd.h"
#include "strata/core/error.h"
#include "strata/core/parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace strata::cpu {
namespace {

constexpr std::int64_t kAlign = 64;
constexpr std::int64_t kMaxRows = 4;

template <typename T>
T* scratch_of(std::size_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// One block of the queue: output features [begin, begin + cols) of job `job`'s gate and up
// (phase 0) or down (phase 1).
struct Item {
  std::uint32_t job;
  std::uint32_t phase;
  std::int64_t begin, cols;
};

template <typename T>
class Runner {
 public:
  Runner(std::vector<CpuExpertJob>& jobs, const std::function<void(std::size_t)>& activate,
         ExpertBlocks blocks)
      : jobs_(jobs),
        activate_(activate),
        remaining_(jobs.size()),
        ready_(jobs.size()),
        xf_(jobs.size()),
        hf_(jobs.size()) {
    const simd::Kernels& k = simd::kernels();
    if constexpr (std::is_same_v<T, float>) {
      matvec_ = k.matvec_f32;
    } else if constexpr (std::is_same_v<T, BFloat16>) {
      matvec_ = k.matvec_bf16;
      native_ = k.matvec_bf16_native;
    } else {
      matvec_ = k.matvec_f16;
    }
    for (int phase = 0; phase < 2; ++phase) {
      const std::int64_t block = phase == 0 ? blocks.gate_up : blocks.down;
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        const std::int64_t n = (phase == 0 ? jobs[i].gate : jobs[i].down).size(0);
        std::int64_t items = 0;
        for (std::int64_t b = 0; b < n; b += block, ++items) {
          items_.push_back({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(phase), b,
                            std::min(block, n - b)});
        }
        if (phase == 0) remaining_[i].store(items);
      }
    }
    if (native_ == nullptr) {  // x widened once per expert (linear_matvec does it per call)
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        xf_[i].resize(static_cast<std::size_t>(jobs[i].x.numel()));
        convert_row_to_float(jobs[i].x.template data<T>(), xf_[i].data(), jobs[i].x.numel());
      }
    }
  }

  std::size_t items() const { return items_.size(); }

  // Claims and runs items until the queue is empty.
  void work() {
    for (std::size_t at; (at = next_.fetch_add(1)) < items_.size();) {
      if (failed_.load(std::memory_order_relaxed)) return;
      try {
        run(items_[at]);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true);
      }
    }
  }

  void rethrow() {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // acc[r * cols + j] = sum_k x[r, k] * w[begin + j, k], the linear's kernel for these rows.
  void product(const T* x, const float* xf, std::int64_t m, const Tensor& w, std::int64_t begin,
               std::int64_t cols, float* acc) const {
    const std::int64_t k = w.size(1);
    const T* rows = w.template data<T>() + begin * k;
    if constexpr (std::is_same_v<T, BFloat16>) {
      if (native_ != nullptr) return native_(x, k, m, rows, k, cols, k, acc, cols);
    }
    matvec_(xf, k, m, rows, k, cols, k, acc, cols);
  }

  void run(const Item& item) {
    CpuExpertJob& job = jobs_[item.job];
    const std::int64_t m = job.x.size(0);
    float* acc = scratch_of<float>(static_cast<std::size_t>(m * item.cols));
    if (item.phase == 0) {
      const std::int64_t inter = job.gate.size(0);
      const T* x = job.x.template data<T>();
      const float* xf = xf_[item.job].data();
      product(x, xf, m, job.gate, item.begin, item.cols, acc);
      for (std::int64_t r = 0; r < m; ++r) {
        store_row_from_float(acc + r * item.cols,
                             job.gate_out.template data<T>() + r * inter + item.begin, item.cols);
      }
      product(x, xf, m, job.up, item.begin, item.cols, acc);
      for (std::int64_t r = 0; r < m; ++r) {
        store_row_from_float(acc + r * item.cols,
                             job.up_out.template data<T>() + r * inter + item.begin, item.cols);
      }
      if (remaining_[item.job].fetch_sub(1, std::memory_order_acq_rel) == 1) {
        activate_(item.job);
        STRATA_ASSERT(job.hidden.defined() && job.hidden.is_contiguous() &&
                          job.hidden.dtype() == job.x.dtype() && job.hidden.numel() == m * inter,
                      "cpu experts: activation of expert {} gave {}", item.job,
                      job.hidden.describe());
        if (native_ == nullptr) {
          hf_[item.job].resize(static_cast<std::size_t>(m * inter));
          convert_row_to_float(job.hidden.template data<T>(), hf_[item.job].data(), m * inter);
        }
        ready_[item.job].store(true, std::memory_order_release);
      }
      return;
    }
    while (!ready_[item.job].load(std::memory_order_acquire)) {
      if (failed_.load(std::memory_order_relaxed)) return;
      cpu_relax();
    }
    const std::int64_t hidden = job.down.size(0);
    product(job.hidden.template data<T>(), hf_[item.job].data(), m, job.down, item.begin, item.cols,
            acc);
    T* out = job.out.template data<T>();
    if (job.weights.empty()) {
      for (std::int64_t r = 0; r < m; ++r) {
        store_row_from_float(acc + r * item.cols, out + r * hidden + item.begin, item.cols);
      }
      return;
    }
    // The product rounded to T, times the row's float32 weight, rounded once more (the
    // combination's cast(cast(out, float32) * weight, T)).
    T* rounded = scratch_of<T>(static_cast<std::size_t>(item.cols));
    for (std::int64_t r = 0; r < m; ++r) {
      float* row = acc + r * item.cols;
      store_row_from_float(row, rounded, item.cols);
      convert_row_to_float(rounded, row, item.cols);
      const float w = job.weights[static_cast<std::size_t>(r)];
      for (std::int64_t j = 0; j < item.cols; ++j) row[j] *= w;
      store_row_from_float(row, out + r * hidden + item.begin, item.cols);
    }
  }

  std::vector<CpuExpertJob>& jobs_;
  const std::function<void(std::size_t)>& activate_;
  simd::MatvecFn<T> matvec_ = nullptr;
  simd::MatvecBf16NativeFn native_ = nullptr;
  std::vector<Item> items_;
  std::vector<std::atomic<std::int64_t>> remaining_;  // gate/up blocks left per job
  std::vector<std::atomic<bool>> ready_;              // hidden set (and widened)
  std::vector<std::vector<float>> xf_, hf_;           // x and hidden as float (no native kernel)
  std::atomic<std::size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

void check_job(const CpuExpertJob& job, std::size_t i, DType dtype) {
  const std::int64_t m = job.x.dim() == 2 ? job.x.size(0) : 0;
  const bool shapes =
      job.x.dim() == 2 && m >= 1 && m <= kMaxRows && job.gate.dim() == 2 &&
      job.up.shape() == job.gate.shape() && job.down.dim() == 2 &&
      job.gate.size(1) == job.x.size(1) && job.down.size(0) == job.x.size(1) &&
      job.down.size(1) == job.gate.size(0) && job.gate_out.shape() == Shape{m, job.gate.size(0)} &&
      job.up_out.shape() == job.gate_out.shape() && job.out.shape() == job.x.shape() &&
      (job.weights.empty() || static_cast<std::int64_t>(job.weights.size()) == m);
  STRATA_CHECK_ARG(shapes,
                   "cpu_experts_gemv: expert {}: x {}, gate {}, up {}, down {}, gate_out {}, "
                   "up_out {}, out {}, {} weights: expected x [m <= {}, hidden], gate and up "
                   "[intermediate, hidden], down [hidden, intermediate], outputs shaped to match",
                   i, job.x.describe(), job.gate.describe(), job.up.describe(), job.down.describe(),
                   job.gate_out.describe(), job.up_out.describe(), job.out.describe(),
                   job.weights.size(), kMaxRows);
  for (const Tensor* t :
       {&job.x, &job.gate, &job.up, &job.down, &job.gate_out, &job.up_out, &job.out}) {
    STRATA_CHECK_ARG(t->is_cpu() && t->is_contiguous() && t->dtype() == dtype,
                     "cpu_experts_gemv: expert {}: {} must be a contiguous cpu tensor of {}", i,
                     t->describe(), dtype_name(dtype));
  }
}

std::int64_t block_from(const char*& p, std::int64_t fallback) {
  char* end = nullptr;
  const long v = std::strtol(p, &end, 10);
  if (end == p || v < kAlign || v % kAlign != 0) return fallback;
  p = *end == ',' ? end + 1 : end;
  return v;
}

}  // namespace

ExpertBlocks expert_blocks() {
  static const ExpertBlocks blocks = [] {
    ExpertBlocks b;
    if (const char* env = std::getenv("STRATA_MOE_BLOCKS")) {
      const char* p = env;
      b.gate_up = block_from(p, b.gate_up);
      b.down = block_from(p, b.down);
    }
    return b;
  }();
  return blocks;
}

void cpu_experts_gemv(std::vector<CpuExpertJob>& jobs,
                      const std::function<void(std::size_t)>& activate, std::int64_t threads,
                      ExpertBlocks blocks, const std::function<void()>& on_caller) {
  if (jobs.empty()) return;
  STRATA_CHECK_ARG(blocks.gate_up >= kAlign && blocks.gate_up % kAlign == 0 &&
                       blocks.down >= kAlign && blocks.down % kAlign == 0,
                   "cpu_experts_gemv: blocks of {} and {} features: each must be a multiple of {}",
                   blocks.gate_up, blocks.down, kAlign);
  const DType dtype = jobs.front().x.dtype();
  for (std::size_t i = 0; i < jobs.size(); ++i) check_job(jobs[i], i, dtype);
  const auto go = [&](auto runner) {
    if (threads <= 0) threads = num_threads();
    const std::int64_t workers =
        std::min<std::int64_t>(threads, static_cast<std::int64_t>(runner->items()));
    // `on_caller` runs on this thread as its first chunk starts: the pool's workers have taken
    // theirs and read weights meanwhile.
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<bool> ran{!on_caller};
    parallel_for(workers, 1, [&](std::int64_t begin, std::int64_t end) {
      if (std::this_thread::get_id() == caller && !ran.exchange(true)) on_caller();
      for (std::int64_t w = begin; w < end; ++w) runner->work();
    });
    // (This thread found no chunk left: the workers took them all.)
    if (!ran.exchange(true)) on_caller();
    runner->rethrow();
  };
  switch (dtype) {
    case DType::Float32:
      return go(std::make_unique<Runner<float>>(jobs, activate, blocks));
    case DType::BFloat16:
      return go(std::make_unique<Runner<BFloat16>>(jobs, activate, blocks));
    case DType::Float16:
      return go(std::make_unique<Runner<Half>>(jobs, activate, blocks));
    default:
      STRATA_THROW(NotSupported, "cpu_experts_gemv: experts of {}: float32, bfloat16 or float16",
                   dtype_name(dtype));
  }
}

}  // namespace strata::cpu

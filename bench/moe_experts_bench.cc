// The cpu experts of a decode step (models/moe_experts.h: cpu_experts_forward) against one
// product of the same bytes, on this host's threads: Qwen3-30B-A3B's experts (gate and up
// [768, 2048], down [2048, 768], bfloat16: 9.4 MB), `count` of them per step (8: no cache; 5: a
// third from the GPU cache), one row each. Every step takes the next experts of a pool of 128
// (1.2 GB, past any last-level cache: the H100 host's L3 is 300 MiB), so they come from DRAM as
// in decoding. Variants: one queue of blocks over every thread (the default path, weighted like
// the combination; also a sweep of block sizes through cpu::cpu_experts_gemv), one expert per
// task (each from pageable memory and from pinned memory, where offloaded experts live), and one
// ops::linear over a [count x 2304, 2048] weight from a pool of the same size (the calibrated
// matrix-vector rate's shape); the queue again with the caller busy between steps as a decoding
// model's block is (the pool's workers may fall asleep there). First the host's read rate in the
// same run (every pool thread memchr's its share of 2 GiB, as cpu_gemv_bench): every rate is also
// printed as its share. Prints microseconds per step, weight GB/s and % of the read rate.
//
//   moe_experts_bench [seconds per variant (1)]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/expert_gemv.h"
#include "models/expert_routing.h"
#include "models/moe_experts.h"
#include "strata/core/parallel.h"
#include "strata/models/layers.h"
#include "strata/ops.h"

namespace {

using strata::DType;
using strata::Tensor;
using strata::models::detail::ExpertSource;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kHidden = 2048, kIntermediate = 768, kPool = 128;

Tensor filled(std::int64_t rows, std::int64_t cols,
              strata::MemoryKind memory = strata::MemoryKind::Pageable) {
  Tensor t = Tensor::empty({rows, cols}, DType::BFloat16, strata::Device::cpu(), memory);
  std::memset(t.data_ptr(), 0x3c, t.nbytes());  // 0x3c3c: about 0.0115 everywhere
  return t;
}

ExpertSource expert(strata::MemoryKind memory) {
  ExpertSource s;
  s.offloaded = true;
  s.stored = {filled(kIntermediate, kHidden, memory), filled(kIntermediate, kHidden, memory),
              filled(kHidden, kIntermediate, memory)};
  for (std::size_t i = 0; i < 3; ++i) {
    s.projections[i].names = {"weight"};
    s.projections[i].first = i;
  }
  for (const Tensor& t : s.stored) s.bytes += static_cast<std::int64_t>(t.nbytes());
  return s;
}

// Median microseconds of `step(i)` over `seconds` (after 3 warm-up steps). `apart_us`: the
// caller first spins that long, untimed, as a decoding model's block does its other work between
// two blocks' cpu experts (the pool's workers sleep after STRATA_SPIN_US idle, 300 by default).
template <typename Step>
double median_us(double seconds, Step step, double apart_us = 0.0) {
  for (int i = 0; i < 3; ++i) step(i);
  std::vector<double> times;
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  for (int i = 3; Clock::now() < until || times.size() < 5; ++i) {
    const auto resume = Clock::now() + std::chrono::duration<double, std::micro>(apart_us);
    while (Clock::now() < resume) {
    }
    const auto t0 = Clock::now();
    step(i);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2),
                   times.end());
  return times[times.size() / 2];
}

// GB/s of every pool thread reading its share of a 2 GiB buffer (memchr for an absent byte).
double host_read_gbps(double seconds) {
  const std::size_t bytes = std::size_t{2} << 30;
  std::vector<unsigned char> buffer(bytes, 1);
  const auto threads = static_cast<std::int64_t>(strata::num_threads());
  const double us = median_us(seconds, [&](int) {
    strata::parallel_for(threads, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t t = b; t < e; ++t) {
        const std::size_t part = bytes / static_cast<std::size_t>(threads);
        if (std::memchr(buffer.data() + static_cast<std::size_t>(t) * part, 0, part) != nullptr) {
          std::abort();
        }
      }
    });
  });
  return static_cast<double>(bytes) / us / 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  const int threads = strata::num_threads();
  // Pageable memory, and pinned memory as offloaded experts are held (with a GPU backend).
  std::vector<ExpertSource> pool, pinned;
  for (std::int64_t e = 0; e < kPool; ++e) {
    pool.push_back(expert(strata::MemoryKind::Pageable));
    pinned.push_back(expert(strata::MemoryKind::Pinned));
  }
  const double expert_bytes = static_cast<double>(pool.front().bytes);
  const Tensor x = filled(1, kHidden);
  const double read = host_read_gbps(seconds);
  std::printf("cpu experts of a decode step, %d threads, experts of %.1f MB from a pool of %lld\n",
              threads, expert_bytes / 1e6, static_cast<long long>(kPool));
  std::printf("  host read (memchr, every thread)   %6.1f GB/s\n", read);
  const auto report = [&](std::int64_t count, const char* name, double us, double bytes) {
    std::printf("  %lld experts, %-24s %8.1f us/step  %6.1f GB/s  %5.1f%% of read\n",
                static_cast<long long>(count), name, us, bytes / us / 1e3,
                100.0 * bytes / us / 1e3 / read);
  };
  const Tensor weight = Tensor::full({1, 1}, 0.125, DType::Float32, strata::Device::cpu());
  const Tensor out = filled(8, kHidden);
  for (const std::int64_t count : {8, 5}) {
    const auto run = [&](std::int64_t forced_threads, const std::vector<ExpertSource>& from) {
      return [&, forced_threads](int i) {
        std::vector<const ExpertSource*> sources;
        std::vector<const std::vector<Tensor>*> tensors;
        std::vector<Tensor> rows, weights, into;
        for (std::int64_t j = 0; j < count; ++j) {
          const ExpertSource& s = from[static_cast<std::size_t>((i * count + j) % kPool)];
          sources.push_back(&s);
          tensors.push_back(&s.stored);
          rows.push_back(x);
          weights.push_back(weight);
          into.push_back(out.narrow(0, j, 1));
        }
        strata::models::detail::cpu_experts_forward(sources, tensors,
                                                    strata::models::Activation::SiLU, rows, weights,
                                                    into, forced_threads);
      };
    };
    const double bytes = expert_bytes * static_cast<double>(count);
    // threads = 1: fewer than two threads per expert, so one expert per task (on the pool).
    struct Variant {
      const char* name;
      std::int64_t threads;
      const std::vector<ExpertSource>* from;
    };
    for (const Variant& v :
         {Variant{"queue", 0, &pool}, Variant{"one expert per task", 1, &pool},
          Variant{"queue, pinned", 0, &pinned}, Variant{"one per task, pinned", 1, &pinned}}) {
      report(count, v.name, median_us(seconds, run(v.threads, *v.from)), bytes);
    }
    // The queue with the gap of a decoding model's block between steps (session 10: 234-277 us
    // a block beside the cpu products), under and past the workers' spin time.
    for (const double apart : {150.0, 400.0}) {
      char name[64];
      std::snprintf(name, sizeof(name), "queue, pinned, %.0f us apart", apart);
      report(count, name, median_us(seconds, run(0, pinned), apart), bytes);
    }
    // Block sizes of the queue (gate+up features, down features), on every thread, then the
    // default blocks on fewer threads (fewer streams on the memory controllers).
    struct Sweep {
      strata::cpu::ExpertBlocks blocks;
      std::int64_t threads;
    };
    const std::int64_t all = threads;
    for (const Sweep sweep : {Sweep{{64, 64}, 0}, Sweep{{64, 128}, 0}, Sweep{{64, 256}, 0},
                              Sweep{{128, 128}, 0}, Sweep{{128, 256}, 0}, Sweep{{192, 512}, 0},
                              Sweep{{64, 128}, all * 3 / 4}, Sweep{{64, 128}, all / 2}}) {
      const strata::cpu::ExpertBlocks blocks = sweep.blocks;
      std::vector<strata::cpu::CpuExpertJob> jobs(static_cast<std::size_t>(count));
      for (std::int64_t j = 0; j < count; ++j) {
        auto& job = jobs[static_cast<std::size_t>(j)];
        job.x = x;
        job.gate_out = filled(1, kIntermediate);
        job.up_out = filled(1, kIntermediate);
        job.out = filled(1, kHidden);
        job.weights = {0.125f};
      }
      const double us = median_us(seconds, [&](int i) {
        for (std::int64_t j = 0; j < count; ++j) {
          const ExpertSource& s = pool[static_cast<std::size_t>((i * count + j) % kPool)];
          auto& job = jobs[static_cast<std::size_t>(j)];
          job.gate = s.stored[0];
          job.up = s.stored[1];
          job.down = s.stored[2];
        }
        strata::cpu::cpu_experts_gemv(
            jobs,
            [&](std::size_t j) {
              jobs[j].hidden =
                  strata::ops::mul(strata::models::apply_activation(
                                       strata::models::Activation::SiLU, jobs[j].gate_out),
                                   jobs[j].up_out);
            },
            sweep.threads, blocks);
      });
      char name[64];
      std::snprintf(name, sizeof(name), "queue, blocks %lld/%lld, %lld thr",
                    static_cast<long long>(blocks.gate_up), static_cast<long long>(blocks.down),
                    static_cast<long long>(sweep.threads > 0 ? sweep.threads : all));
      report(count, name, us, bytes);
    }
    // The same bytes in one product (the rows of `count` experts' three matrices).
    const std::int64_t rows = count * (3 * kIntermediate);
    const std::int64_t matrices = std::max<std::int64_t>(
        2, static_cast<std::int64_t>(expert_bytes * kPool / (2.0 * rows * kHidden)));
    std::vector<Tensor> weights;
    for (std::int64_t m = 0; m < matrices; ++m) weights.push_back(filled(rows, kHidden));
    const double us = median_us(seconds, [&](int i) {
      strata::ops::linear(x, weights[static_cast<std::size_t>(i % matrices)]);
    });
    report(count, "one linear", us, bytes);
  }
  return 0;
}

#pragma once
// The cpu experts of a mixture-of-experts decode step in one parallel region
// (docs/moe-execution.md). A step has a few experts (5-8 on the cpu for Qwen3-30B-A3B) of one to
// four rows each: every core reads weights if the three products of every expert are cut into
// blocks of output features, claimed one at a time from one queue: the gate and up rows of a
// block in one pass, then, once an expert's gate and up are whole, its down blocks with the
// routing weight applied as each block is stored. A thread that finds an expert's down block
// before that expert's gate and up are complete waits for them (they were all claimed before).
//
// Each output feature is the same dot product, with the same kernel and the same rounding, as
// ops::linear computes it (cpu/linear.cc's matvec path: its output partition does not change a
// feature's sum), so the results are those of the experts' own modules, bit for bit.

#include <cstdint>
#include <functional>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::cpu {

// One expert's work. Every tensor is on the cpu, contiguous, in one float dtype.
struct CpuExpertJob {
  Tensor x;               // [m, hidden], 1 <= m <= 4
  Tensor gate, up, down;  // [intermediate, hidden], [intermediate, hidden], [hidden, intermediate]
  Tensor gate_out, up_out;  // [m, intermediate]: written by the gate / up products
  // [m, intermediate]: set by `activate(i)` (act(gate_out) * up_out) before down reads it.
  Tensor hidden;
  Tensor out;  // [m, hidden]: row r = T(float(T(down row r)) * weights[r]) (no weights: T(down))
  std::vector<float> weights;  // the routing weight of each row, or empty
};

// Output features per block of the queue (multiples of 64: the linear's partition unit, whole
// cache lines of every output dtype). 64 for both: gate and up two 256 KB reads for Qwen3's 2048
// inputs, down 96 KB for 768 (device call 1 of session 7 on the H100 host, moe_experts_bench:
// 8 experts 139 GB/s and 5 experts 134 with 64/64, 136 and 116 with 64/128, 128-131 and 109
// with larger blocks). STRATA_MOE_BLOCKS="gate_up,down" overrides them.
struct ExpertBlocks {
  std::int64_t gate_up = 64, down = 64;
};
ExpertBlocks expert_blocks();

// Runs every job's gate and up, `activate(i)` once job i's are complete (on the thread that
// completed them: it must set jobs[i].hidden), then its down, with at most `threads` threads
// (0: the pool's). Rethrows the first exception of an activation; the remaining jobs are skipped.
// `on_caller`, when given, runs once on the calling thread after the pool's workers have started
// on the queue, before the caller joins them (a MoE block launches its device experts there: the
// launches then overlap the cpu's reads without a thread more than the cores); its exception is
// rethrown after the queue is done.
void cpu_experts_gemv(std::vector<CpuExpertJob>& jobs,
                      const std::function<void(std::size_t)>& activate, std::int64_t threads = 0,
                      ExpertBlocks blocks = expert_blocks(),
                      const std::function<void()>& on_caller = {});

}  // namespace strata::cpu

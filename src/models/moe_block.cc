// The mechanism every mixture-of-experts block runs its routed experts through
// (docs/moe-execution.md): resident experts are called, offloaded ones compute on the cpu where
// they are stored, stream alone to the execution device, or come from the expert cache.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "models/expert_routing.h"
#include "models/moe_beside.h"
#include "models/moe_experts.h"
#include "strata/core/error.h"
#include "strata/models/moe.h"
#include "strata/placement/prefetch.h"

namespace strata::models {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nanoseconds_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

// Steps of up to this many tokens (decode, small batches) keep their transfers in the block's
// pinned buffers; larger ones (prefill) allocate per step as before.
constexpr std::int64_t kStagedTokens = placement::kDecodeSizedExpertTokens;

// gate, up and down: under --offload-policy auto an expert's policy is its gate projection's,
// planned with the block's one activation round trip per step shared by the top_k experts'
// projections (UnitProfile::block_projections), not charged to each projection: charged whole,
// it made auto stream 3 MB projections that the cpu reads faster (session 7, device call 2).
constexpr std::int64_t kProjectionsPerExpert = 3;

// Whether a switch is on: unless its variable is "0". The switches below read it at every step
// (a test or a benchmark compares both in one process), but the overlap, read once.
bool switch_on(const char* variable) {
  const char* v = std::getenv(variable);
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Whether the device experts' launches run inside the cpu experts' queue (cpu/expert_gemv.h):
// on unless STRATA_MOE_OVERLAP=0. Session 11's 48-layer run (H100 host reading 102 GB/s)
// measured 30.8 tokens/s with it against 27.1 with the launches before the queue (session 7,
// with six launches an expert and 8 layers, had measured it slower: 50.7 against 54.5).
bool launches_in_queue() {
  static const bool enabled = switch_on("STRATA_MOE_OVERLAP");
  return enabled;
}

// Whether a cpu execution device computes the resident experts of a decode-sized step in the cpu
// experts' queue (detail::resident_source): on unless STRATA_MOE_RESIDENT_QUEUE=0.
bool resident_in_queue() { return switch_on("STRATA_MOE_RESIDENT_QUEUE"); }

// Whether the streamed experts the cache does not keep copy on the scheduler's copy stream
// (PrefetchScheduler::stream_to_device) instead of the compute stream: on unless
// STRATA_MOE_COPY_STREAM=0. Session 12's pp512 (48 layers, H100 host): 405 tokens/s against 299
// on the compute stream with the cache, 449 against 340 without (docs/moe-execution.md).
bool copy_stream_enabled() { return switch_on("STRATA_MOE_COPY_STREAM"); }

// Whether a GPU computes the device experts of a step of several tokens in grouped products
// (detail::grouped_experts_forward: three launches for the step's experts, not three an expert):
// on unless STRATA_MOE_GROUPED=0.
bool grouped_enabled() { return switch_on("STRATA_MOE_GROUPED"); }

// `buffer`, reallocated in pinned host memory unless it already has this shape and dtype.
Tensor& pinned_buffer(Tensor& buffer, const Shape& shape, DType dtype) {
  if (!buffer.defined() || buffer.shape() != shape || buffer.dtype() != dtype) {
    buffer = Tensor::empty(shape, dtype, Device::cpu(), MemoryKind::Pinned);
  }
  return buffer;
}

}  // namespace

MoeBlock::MoeBlock(std::string class_name, std::int64_t num_experts, std::int64_t top_k,
                   Activation activation, bool mixtral_naming)
    : nn::Module(std::move(class_name)),
      num_experts_(num_experts),
      top_k_(top_k),
      activation_(activation),
      mixtral_naming_(mixtral_naming) {
  stats_.blocks = 1;
}

void MoeBlock::reset_execution_stats() {
  stats_ = {};
  stats_.blocks = 1;
  used_.clear();
}

Tensor MoeBlock::run_experts(const Tensor& flat, const detail::ExpertRouting& routing,
                             DType weight_dtype) {
  const auto start = Clock::now();
  const Device device = flat.device();
  const std::int64_t activation_bytes =
      flat.size(1) * static_cast<std::int64_t>(flat.element_size());
  const bool cache_here = cache_ && cache_->device() == device;
  if (!sources_) sources_ = std::make_shared<detail::ExpertSources>();

  // Where each expert with tokens computes. The cache first (GPU speed, nothing read again),
  // then the offload policy of the expert's unit for its tokens: the cpu reads only this
  // expert's stored weights; streaming copies only this expert (kept by the cache if it fits).
  enum class Where : std::uint8_t { Resident, Cpu, Device };
  struct Job {
    Where where = Where::Resident;
    std::shared_ptr<const detail::ExpertSource> source;
    std::vector<Tensor> weights;  // Cpu: as stored; Device: on `device`
    // Device, copied on the copy stream: the compute stream waits for it before the expert.
    std::unique_ptr<placement::PrefetchScheduler::StreamedTensors> streamed;
  };
  std::vector<Job> jobs(static_cast<std::size_t>(num_experts_));
  bool any_cpu = false;
  // Decode-sized steps only: the queue's blocks need few rows an expert; a prefill's experts
  // each take every core in their own products, as called.
  const bool queue_resident =
      device.is_cpu() && routing.tokens <= placement::kCpuExpertQueueRows && resident_in_queue();
  // A step past decode size (a prefill) selects most of every block's experts, block after
  // block: its streamed misses go into the cache's free room only, never evicting (expert_cache.h).
  const bool scan = routing.tokens > placement::kDecodeSizedExpertTokens;
  const bool copy_stream = copy_stream_enabled();
  // A GPU's step of several tokens (a prefill, a batch): the device experts in grouped products,
  // if every one is groupable (plain weights; a resident one also with its parameters on the
  // device and hooks that pass through). One token keeps the decode GEMV an expert (swiglu).
  bool grouped = device.is_cuda() && routing.tokens > 1 && grouped_enabled();
  used_.resize(static_cast<std::size_t>(num_experts_), false);
  for (std::int64_t e = 0; e < num_experts_; ++e) {
    const auto n =
        static_cast<std::int64_t>(routing.expert_tokens[static_cast<std::size_t>(e)].size());
    if (n == 0) continue;
    if (!used_[static_cast<std::size_t>(e)]) {
      used_[static_cast<std::size_t>(e)] = true;
      ++stats_.distinct_experts;
    }
    Job& job = jobs[static_cast<std::size_t>(e)];
    job.source = sources_->get(e, (*experts_)[static_cast<std::size_t>(e)], mixtral_naming_);
    const detail::ExpertSource& source = *job.source;
    const placement::ExpertKey key = placement::expert_key(block_index_, e);
    has_offloaded_ = has_offloaded_ || source.offloaded;
    if (!source.offloaded) {
      ++stats_.resident;
      // On a GPU a resident expert computes from its parameters (detail::expert_forward, the
      // numbers of calling it) without its pass-through hooks' host time. Session 12's decode
      // with them called (--experts auto, 48 layers): 137 us a block beside the cpu products,
      // against 67 for --experts cpu, whose device experts are the cache's.
      if (queue_resident || device.is_cuda()) {
        // Not cached (ExpertSources keys on hooks, and a resident expert's parameters may be
        // replaced between steps): three parameter lookups a step.
        auto resident = std::make_shared<const detail::ExpertSource>(detail::resident_source(
            (*experts_)[static_cast<std::size_t>(e)], mixtral_naming_, device));
        if (!resident->stored.empty()) {
          job.where = queue_resident ? Where::Cpu : Where::Device;
          job.weights = resident->stored;
          job.source = std::move(resident);
        }
      }
    } else if (const std::vector<Tensor>* hit = cache_here ? cache_->find(key) : nullptr) {
      job.where = Where::Device;
      job.weights = *hit;
      ++stats_.cached;
    } else if (source.hook->scheduler()->policy_for(*source.hook, n, activation_bytes,
                                                    top_k_ * kProjectionsPerExpert) ==
               placement::ExecutionPolicy::Cpu) {
      job.where = Where::Cpu;
      // Free room in the cache: copy the expert in (asynchronously) for the next steps.
      if (cache_here && cache_->has_room(key, source.bytes)) cache_->load(key, source.stored);
      job.weights = source.stored;
      any_cpu = true;
      ++stats_.cpu;
      stats_.cpu_bytes += source.bytes;
    } else {
      job.where = Where::Device;
      // A copy the cache will not keep (a scan's miss without room, or no cache) goes on the
      // copy stream: the experts queued before it compute while it copies (a prefill streams
      // most of every block). Else, or with no copy stream, on the compute stream.
      if (copy_stream && (!cache_here || (scan && !cache_->has_room(key, source.bytes)))) {
        job.streamed = source.hook->scheduler()->stream_to_device(source.stored);
      }
      if (job.streamed) {
        job.weights = job.streamed->tensors();
        if (cache_here) cache_->note_bypass();
        ++stats_.copy_streamed;
      } else if (cache_here) {
        job.weights = cache_->load(key, source.stored, /*evict=*/!scan);
      } else {
        for (const Tensor& w : source.stored)
          job.weights.push_back(placement::owned_copy(w, device));
      }
      ++stats_.streamed;
      stats_.streamed_bytes += source.bytes;
    }
    // (A resident expert left to its hooks has no tensors: not groupable.)
    if (job.where != Where::Cpu && !detail::groupable(*job.source)) grouped = false;
  }
  if (any_cpu) ++stats_.cpu_batches;
  ++stats_.block_steps;
  stats_.decide_ns += nanoseconds_since(start);
  std::optional<Clock::time_point> cpu_end;
  // Host buffers for the transfers of a decode-sized step behind a GPU (combine_experts).
  detail::HostStaging staging;
  const std::int64_t step_rows = routing.tokens * routing.top_k;
  if (staging_ && device.is_cuda() && routing.tokens <= kStagedTokens) {
    if (staged_x_) staging.x = staging_->x;
    if (!staging_->rows.defined() || staging_->rows.size(0) < step_rows ||
        staging_->rows.dtype() != flat.dtype() || staging_->rows.size(1) != flat.size(1)) {
      staging_->rows = Tensor::empty({kStagedTokens * routing.top_k, flat.size(1)}, flat.dtype(),
                                     Device::cpu(), MemoryKind::Pinned);
      staging_->weights = Tensor::empty({kStagedTokens * routing.top_k, 1}, DType::Float32,
                                        Device::cpu(), MemoryKind::Pinned);
    }
    staging.rows = staging_->rows;
    staging.weights = staging_->weights;
    staging.beside = detail::beside_enabled();
    staging.in_queue = !staging.beside && launches_in_queue();
  }
  staged_x_ = false;
  Tensor out = detail::combine_experts(
      flat, routing, weight_dtype,
      [&](std::int64_t e, const Tensor& rows) {
        const Job& job = jobs[static_cast<std::size_t>(e)];
        const auto device_start = Clock::now();
        if (job.streamed) job.streamed->ready();
        Tensor y = job.where == Where::Resident
                       ? call((*experts_)[static_cast<std::size_t>(e)], rows)
                       : detail::expert_forward(*job.source, job.weights, activation_, rows);
        if (job.where != Where::Cpu) stats_.device_ns += nanoseconds_since(device_start);
        return y;
      },
      [&](std::int64_t e) { return jobs[static_cast<std::size_t>(e)].where == Where::Cpu; },
      [&](const std::vector<std::int64_t>& ids, const std::vector<Tensor>& rows,
          const std::vector<Tensor>& weights, const std::vector<Tensor>& into,
          const std::function<void()>& on_caller) {
        std::vector<const detail::ExpertSource*> sources;
        std::vector<const std::vector<Tensor>*> tensors;
        for (const std::int64_t e : ids) {
          const Job& job = jobs[static_cast<std::size_t>(e)];
          sources.push_back(job.source.get());
          tensors.push_back(&job.weights);
        }
        const auto cpu_start = Clock::now();
        detail::cpu_experts_forward(sources, tensors, activation_, rows, weights, into, 0,
                                    on_caller);
        cpu_end = Clock::now();
        stats_.cpu_ns +=
            std::chrono::duration_cast<std::chrono::nanoseconds>(*cpu_end - cpu_start).count();
      },
      staging.x.defined() || staging.rows.defined() || staging.beside ? &staging : nullptr,
      grouped ? detail::GroupedExpertsFn([&](const std::vector<std::int64_t>& ids,
                                             const std::vector<std::int64_t>& counts,
                                             const Tensor& rows) {
        const auto device_start = Clock::now();
        std::vector<const detail::ExpertSource*> sources;
        std::vector<const std::vector<Tensor>*> tensors;
        for (const std::int64_t e : ids) {
          Job& job = jobs[static_cast<std::size_t>(e)];
          if (job.streamed) job.streamed->ready();
          sources.push_back(job.source.get());
          tensors.push_back(&job.weights);
        }
        Tensor y = detail::grouped_experts_forward(sources, tensors, activation_, rows, counts);
        stats_.grouped += static_cast<std::int64_t>(ids.size());
        stats_.device_ns += nanoseconds_since(device_start);
        return y;
      })
              : detail::GroupedExpertsFn());
  stats_.experts_ns += nanoseconds_since(start);
  if (cpu_end) stats_.tail_ns += nanoseconds_since(*cpu_end);
  return out;
}

std::vector<Tensor> MoeBlock::read_to_host(const std::vector<Tensor>& tensors, const Tensor& flat) {
  staged_x_ = false;
  if (!flat.is_cuda()) return tensors;
  if (!staging_) staging_ = std::make_shared<detail::HostStaging>();
  if (has_offloaded_ && flat.size(0) <= kStagedTokens) {
    const Tensor src = flat.contiguous();
    pinned_buffer(staging_->x, src.shape(), src.dtype()).copy_(src, /*non_blocking=*/true);
    staged_x_ = true;
    ++stats_.staged_batches;
  }
  host_reads_.resize(tensors.size());
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor src = tensors[i].contiguous();
    Tensor& buffer = pinned_buffer(host_reads_[i], src.shape(), src.dtype());
    // The last copy waits for the stream: every copy queued before it is then complete.
    buffer.copy_(src, /*non_blocking=*/i + 1 < tensors.size());
    out.push_back(buffer);
  }
  return out;
}

void MoeBlock::routed_since(std::chrono::steady_clock::time_point start) {
  stats_.route_ns += nanoseconds_since(start);
}

void MoeBlock::set_expert_cache(std::shared_ptr<placement::ExpertCache> cache,
                                std::int64_t block_index) {
  cache_ = std::move(cache);
  block_index_ = block_index;
}

ExpertExecutionStats& ExpertExecutionStats::operator+=(const ExpertExecutionStats& o) {
  resident += o.resident;
  cpu += o.cpu;
  streamed += o.streamed;
  cached += o.cached;
  copy_streamed += o.copy_streamed;
  grouped += o.grouped;
  cpu_bytes += o.cpu_bytes;
  streamed_bytes += o.streamed_bytes;
  cpu_batches += o.cpu_batches;
  route_ns += o.route_ns;
  cpu_ns += o.cpu_ns;
  experts_ns += o.experts_ns;
  device_ns += o.device_ns;
  decide_ns += o.decide_ns;
  tail_ns += o.tail_ns;
  block_steps += o.block_steps;
  staged_batches += o.staged_batches;
  distinct_experts += o.distinct_experts;
  blocks += o.blocks;
  return *this;
}

std::vector<MoeBlock*> moe_blocks(nn::Module& model) {
  std::vector<MoeBlock*> out;
  for (const auto& [name, module] : model.named_modules()) {
    if (auto* block = dynamic_cast<MoeBlock*>(module)) out.push_back(block);
  }
  return out;
}

ExpertExecutionStats expert_execution_stats(nn::Module& model) {
  ExpertExecutionStats total;
  total.blocks = 0;
  for (const MoeBlock* block : moe_blocks(model)) total += block->execution_stats();
  return total;
}

void reset_expert_execution_stats(nn::Module& model) {
  for (MoeBlock* block : moe_blocks(model)) block->reset_execution_stats();
}

std::shared_ptr<placement::ExpertCache> attach_expert_cache(nn::Module& model,
                                                            std::int64_t capacity_bytes,
                                                            placement::ExpertCachePolicy policy) {
  STRATA_CHECK_ARG(capacity_bytes >= 0, "expert cache of {} bytes: must not be negative",
                   capacity_bytes);
  const auto scheduler = placement::find_scheduler(model);
  // The blocks with offloaded experts come first (indices 0..P-1): each is a partition of the
  // cache, unless the budget holds fewer than one expert a block, where blocks share partitions
  // (index modulo the count). Blocks with every expert resident never look the cache up.
  std::vector<MoeBlock*> blocks = moe_blocks(model);
  const auto offloaded_end = std::stable_partition(
      blocks.begin(), blocks.end(), [](const MoeBlock* b) { return b->offloads_experts(); });
  std::int64_t largest = 0;
  for (auto it = blocks.begin(); it != offloaded_end; ++it) {
    largest = std::max(largest, (*it)->largest_expert_bytes());
  }
  std::int64_t partitions = std::max<std::int64_t>(offloaded_end - blocks.begin(), 1);
  if (largest > 0) partitions = std::clamp<std::int64_t>(capacity_bytes / largest, 1, partitions);
  std::shared_ptr<placement::ExpertCache> cache;
  if (scheduler && capacity_bytes > 0) {
    cache = std::make_shared<placement::ExpertCache>(scheduler->execution_device(), capacity_bytes,
                                                     policy, partitions);
  }
  std::int64_t index = 0;
  for (MoeBlock* block : blocks) block->set_expert_cache(cache, index++);
  return cache;
}

bool MoeBlock::offloads_experts() const {
  for (const auto& [name, module] : experts_->named_modules()) {
    if (dynamic_cast<const placement::PrefetchHook*>(module->hook()) != nullptr) return true;
  }
  return false;
}

std::int64_t MoeBlock::largest_expert_bytes() const {
  std::int64_t largest = 0;
  for (const auto& [index, expert] : experts_->direct_children()) {
    std::int64_t bytes = 0;
    for (const auto& [name, t] : expert->named_parameters()) {
      bytes += static_cast<std::int64_t>(t.nbytes());
    }
    largest = std::max(largest, bytes);
  }
  return largest;
}

}  // namespace strata::models

#pragma once
// The per-model prefetch scheduler behind cpu_offload, disk_offload and dispatch_model.
//
// Every module with offloaded weights gets a PrefetchHook (an AlignDevicesHook whose onload and
// release go through the scheduler). The scheduler records the order in which the hooks onload
// during the first forward; from then on, when unit i onloads, the weights of the next units
// (up to `staging_slots` units in flight, the current one included) are already being copied on
// a copy stream while unit i computes. The compute stream waits on an event per unit, never on
// the host. Sources:
//   - pinned CPU tensors are copied straight to the GPU (cudaMemcpyAsync on the copy stream);
//   - any other CPU tensor (a memory-mapped offload file, pageable memory) is split into chunks
//     that worker threads read in parallel into a fixed pool of pinned staging chunks; each chunk
//     is copied on the copy stream as soon as it is read, and reused once that copy is done.
// With a CPU execution device nothing is copied: the stored tensors are bound as they are (a
// pinned tensor or a read-only view of the mapped file).
//
// One scheduler serves one model and runs one forward at a time (as hooks do).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "strata/nn/align_devices_hook.h"
#include "strata/nn/attach.h"
#include "strata/placement/execution_policy.h"

namespace strata::placement {

struct PrefetchOptions {
  // Units (hooked modules) whose weights may be on the execution device at once, the one
  // computing included: 1 disables prefetch (copy, then compute), 2 is double buffering. This
  // is what the planner's InferOptions::reserve.staging_slots budgets for (minus the one slot
  // the reference already keeps).
  int staging_slots = 2;
  // Threads reading non-pinned sources (disk) into the pinned staging chunks; 0: half the cores,
  // at most 8. Threads beyond the number of chunks would only wait, so there are never more.
  int io_threads = 0;
  // The disk tier's host staging: `staging_chunks` chunks of `staging_chunk_bytes` (a positive
  // multiple of 64) of pinned memory, allocated once, on the first disk read, and reused for every
  // tensor; this is all the pinned memory the disk tier holds. 0 chunks: two per io thread
  // (128 MiB with 8 threads and the 8 MiB default).
  std::size_t staging_chunk_bytes = std::size_t{8} << 20;
  int staging_chunks = 0;
};

// Counters for tests and benchmarks (not timing).
struct PrefetchStats {
  std::int64_t onloads = 0;          // units made available for a forward
  std::int64_t prefetched = 0;       // ... whose copies were already issued ahead of time
  std::int64_t issued = 0;           // units whose copies were issued
  std::int64_t bytes_copied = 0;     // host-to-device bytes queued
  std::int64_t bytes_read = 0;       // bytes read by the workers into pinned staging
  std::int64_t staged_chunks = 0;    // ... in that many chunk copies
  std::int64_t casts = 0;            // stored tensors whose dtype differed from the model's
  std::int64_t cpu_computes = 0;     // unit forwards computed on the cpu (ExecutionPolicy::Cpu)
  std::int64_t evicted_for_cpu = 0;  // prefetched units dropped because they computed on the cpu
  std::int64_t split_computes = 0;   // unit forwards split between cpu and execution device
  std::int64_t split_linears = 0;    // linear forwards whose rows were split
  std::int64_t split_inputs_copied = 0;  // ... inputs copied to the cpu for them (shared ones once)
  std::int64_t cpu_inputs_reused = 0;    // keyword inputs of a cpu step already on the cpu from an
                                         // earlier unit of the step (rotary cos/sin, masks)
  int max_in_flight = 0;                 // most units holding execution-device copies at once
};

class PrefetchHook;
namespace detail {
class CopyEngine;  // copy stream, events and disk workers (src/placement/prefetch_engine.h)
}  // namespace detail

class PrefetchScheduler {
 public:
  PrefetchScheduler(Device execution_device, PrefetchOptions options = {});
  ~PrefetchScheduler();
  PrefetchScheduler(const PrefetchScheduler&) = delete;
  PrefetchScheduler& operator=(const PrefetchScheduler&) = delete;

  Device execution_device() const { return execution_device_; }
  const PrefetchOptions& options() const { return options_; }
  const PrefetchStats& stats() const { return stats_; }
  // The recorded execution order (hooked module class names with their position), complete
  // once the first unit onloads a second time.
  std::vector<const PrefetchHook*> order() const;
  bool order_complete() const { return order_complete_; }
  // One line per scheduling event, for tests: "issue <unit>", "wait <unit>", "release <unit>",
  // where <unit> is the unit's position in the recorded order. Kept only when enabled.
  void set_trace(bool enabled) { trace_enabled_ = enabled; }
  const std::vector<std::string>& trace() const { return trace_; }
  // Units currently holding execution-device copies (issued or in use).
  int in_flight() const;

  // Blocks until every queued copy has finished (the benchmark's end of forward).
  void synchronize();

  // Whether offloaded units stream or compute on the cpu, per step (execution_policy.h).
  // Default Stream. Auto needs `threshold` (InvalidArgument otherwise); it is asked once per
  // unit, at the unit's first forward after this call. A unit computes on the cpu only if it can:
  // no hooked module inside it, and no weight tied to one resident on a GPU.
  void set_offload_policy(OffloadPolicy policy, CpuTokenThreshold threshold = {});
  // The same with the full per-unit decision (cpu and split thresholds, split fraction), asked
  // once per unit. Auto needs `planner`; under Split it gives each unit's fraction (0.5 without
  // one); Stream and Cpu ignore it.
  void set_offload_planner(OffloadPolicy policy, UnitPlanner planner);
  OffloadPolicy offload_policy() const { return policy_; }
  // The threshold each unit got (in registration order), -1 for units not yet asked.
  std::vector<std::int64_t> cpu_thresholds() const;
  // The plan each unit got (registration order); units not asked yet have the default plan.
  std::vector<UnitPlan> unit_plans() const;

  // For a module that runs offloaded units itself instead of calling them (a mixture-of-experts
  // block computing the experts it selected with their stored weights, moe-execution.md): the
  // policy `hook`'s unit gets for a step of `tokens` tokens under the offload policy, as its
  // own forward would get it (counted in cpu_computes when Cpu). The caller moves nothing through
  // the hook: it reads PrefetchHook::stored and computes where it chose.
  // `block_projections`: the projections sharing the block's one activation round trip per step
  // (UnitProfile::block_projections; 0: the unit pays its own).
  ExecutionPolicy policy_for(PrefetchHook& hook, std::int64_t tokens,
                             std::int64_t activation_bytes_per_token,
                             std::int64_t block_projections = 0);

  // Tensors copied to the execution device on the scheduler's copy stream (stream_to_device).
  // Use them on the compute stream only after ready(). Destroying the object hands the copies'
  // memory back once the compute stream has passed what was queued until then. It must not
  // outlive its scheduler.
  class StreamedTensors {
   public:
    ~StreamedTensors();
    StreamedTensors(const StreamedTensors&) = delete;
    StreamedTensors& operator=(const StreamedTensors&) = delete;
    const std::vector<Tensor>& tensors() const;
    // The compute stream waits (on the device) for the copies; rethrows a staging read's error.
    void ready();

   private:
    friend class PrefetchScheduler;
    struct Impl;  // the engine and its ticket (prefetch_engine.h)
    explicit StreamedTensors(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
  };
  // For a module that computes offloaded weights itself (a mixture-of-experts block streaming the
  // experts its prefill selected, moe-execution.md): new execution-device copies of `stored` (cpu
  // tensors: pinned ones copied directly, others through the staging workers as a disk unit's)
  // queued on the copy stream after everything queued on the compute stream so far, so the
  // copies overlap the compute queued after this call. Null on a cpu execution device (there is
  // no copy stream: copy on the compute stream instead).
  std::unique_ptr<StreamedTensors> stream_to_device(const std::vector<Tensor>& stored);

 private:
  friend class PrefetchHook;
  struct Unit;

  // Called by the hooks.
  void add(PrefetchHook* hook);
  void remove(PrefetchHook* hook);
  void acquire(PrefetchHook& hook);
  void release(PrefetchHook& hook);
  // The policy of `hook`'s unit for a step of `tokens` tokens; `activation_bytes_per_token` and
  // `cpu_capable` come from the hook (its inputs and its module tree).
  ExecutionPolicy begin_step(PrefetchHook& hook, std::int64_t tokens,
                             std::int64_t activation_bytes_per_token, bool cpu_capable);
  // Binds the stored weights where they are, for a forward on the cpu.
  void acquire_on_cpu(PrefetchHook& hook);
  // Moves a cpu step's inputs to the cpu. Keyword tensors (rotary cos/sin, masks: the same for
  // every unit of a step) are copied once and reused by the next units.
  void inputs_to_cpu(nn::Args& args, std::span<const std::string> skip_keys);
  // The cpu rows [0, r) of offloaded tensor `index` of a unit in a split step (undefined for a
  // tensor that is not split).
  const Tensor& split_cpu_part(const PrefetchHook& hook, std::size_t index);

  Unit& unit_of(const PrefetchHook* hook);
  void issue(Unit& unit, ExecutionPolicy as);
  void evict(Unit& unit);
  void prefetch_after(const Unit& unit);
  void log(const char* what, const Unit& unit);
  void record_order(Unit& unit);
  ExecutionPolicy decide(Unit& unit, std::int64_t tokens);
  const UnitPlan& plan_of(Unit& unit);
  // Per offloaded tensor of a split unit: its cpu rows (0: not split), from the unit's fraction.
  const std::vector<std::int64_t>& split_rows(Unit& unit);
  void bind_split_cpu_parts(Unit& unit);
  UnitProfile profile(const Unit& unit);
  // The stored value of one offloaded tensor, checked against the module and cast to its dtype.
  Tensor checked_source(PrefetchHook& hook, const nn::AlignDevicesHook::OffloadedTensor& t);

  Device execution_device_;
  PrefetchOptions options_;
  PrefetchStats stats_;
  std::vector<std::unique_ptr<Unit>> units_;  // registration order
  // units_ by hook: unit_of runs for every onload and every routed expert of every step (a
  // 48-layer Qwen3-30B-A3B has 18,432 expert units; a scan cost tens of microseconds each).
  std::unordered_map<const PrefetchHook*, Unit*> unit_by_hook_;
  std::vector<Unit*> order_;  // execution order of the first forward
  bool order_complete_ = false;
  bool trace_enabled_ = false;
  std::vector<std::string> trace_;
  std::unique_ptr<detail::CopyEngine> engine_;  // null for a cpu execution device
  OffloadPolicy policy_ = OffloadPolicy::Stream;
  UnitPlanner planner_;
  // The last keyword inputs copied to the cpu, with their sources (kept referenced, so a source's
  // memory cannot be reused by another tensor while its entry is here).
  std::vector<std::pair<Tensor, Tensor>> cpu_inputs_;
  // Tokens of the forward in progress: those of the step of the first unit in the recorded order;
  // every hooked unit's step is decided by them, and so is the prefetch of the next units.
  std::int64_t forward_tokens_ = 1;
};

// An AlignDevicesHook (with offload) whose weights come through a PrefetchScheduler.
class PrefetchHook final : public nn::AlignDevicesHook {
 public:
  PrefetchHook(nn::AlignDevicesOptions options, std::shared_ptr<PrefetchScheduler> scheduler);

  const std::shared_ptr<PrefetchScheduler>& scheduler() const { return scheduler_; }
  // The stored value of an offloaded tensor (the weights-map lookup).
  Tensor stored(const OffloadedTensor& tensor) { return fetch(tensor); }
  const std::string& module_class() const { return class_name_; }
  // Modules in the hooked module's tree, itself included (0 before init_hook).
  std::int64_t module_count() const;
  std::string describe() const override;

  void init_hook(nn::Module& module) override;
  // The linear layers of this unit that a split step divides (nn::Linear modules, the unit itself
  // included, without a hook of their own, whose weight (and bias) are offloaded here and not
  // tied); found at the first call, when the children get a SplitLinearHook.
  struct SplitLinear {
    nn::Module* module = nullptr;
    int weight = -1;  // index into offloaded_tensors()
    int bias = -1;    // ... or -1 without a bias
    std::int64_t rows = 0;
  };
  const std::vector<SplitLinear>& split_linears();
  // Called around a split linear's forward (by its SplitLinearHook, or this hook for the unit
  // itself): the input goes to the cpu before, the cpu rows are computed after the execution
  // device's rows and joined in front of them.
  void split_begin(std::size_t linear, const nn::Args& args);
  void split_end(std::size_t linear, nn::Value& output);
  bool split_step() const { return split_step_; }
  void detach_hook(nn::Module& module) override;
  // Ask the scheduler for this step's policy; with ExecutionPolicy::Cpu the inputs go to the
  // cpu, the stored weights are bound where they are, and the output goes back to the execution
  // device. Otherwise AlignDevicesHook's behaviour.
  void pre_forward(nn::Module& module, nn::Args& args) override;
  void post_forward(nn::Module& module, nn::Value& output) override;

 protected:
  void onload(nn::Module& module) override;
  void release(nn::Module& module) override;

 private:
  bool can_compute_on_cpu(nn::Module& module);
  void detach_split_hooks();
  void clear_split_step();
  void swap_resident_to_cpu(nn::Module& module);
  void restore_resident();

  std::shared_ptr<PrefetchScheduler> scheduler_;
  std::string class_name_;
  std::optional<bool> cpu_capable_;  // decided at the first forward
  bool cpu_step_ = false;            // the forward in progress runs on the cpu
  bool split_step_ = false;          // ... splits its linear layers
  nn::Module* module_ = nullptr;     // the hooked module (init_hook)
  std::optional<std::vector<SplitLinear>> split_linears_;
  // Per split step: the cpu copy of each split linear's input, and the inputs already copied
  // (kept referenced so their memory cannot be reused for another tensor within the step).
  std::vector<Tensor> split_pending_;
  std::vector<std::pair<Tensor, Tensor>> split_copied_;
  std::optional<Device> return_device_;
  // Tensors of the unit that stay on the execution device (non-persistent buffers, tensors not
  // offloaded), with a cpu copy bound during cpu steps (made once: they never change).
  struct ResidentCopy {
    nn::SlotPtr slot;
    Tensor original;
    Tensor on_cpu;
  };
  std::vector<ResidentCopy> resident_;
  bool resident_scanned_ = false;
};

// The AttachOptions::make_hook of the placement layer: a PrefetchHook on `scheduler` for every
// offload hook, a plain AlignDevicesHook for the rest (resident blocks, io hooks).
nn::AlignHookFactory prefetch_hook_factory(std::shared_ptr<PrefetchScheduler> scheduler);

// The scheduler of the first PrefetchHook in `model`'s tree, or nullptr.
std::shared_ptr<PrefetchScheduler> find_scheduler(nn::Module& model);

}  // namespace strata::placement

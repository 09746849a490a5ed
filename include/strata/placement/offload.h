#pragma once
// Whole-model offload: cpu_offload, disk_offload and cpu_offload_with_hook (the reference's
// big_modeling.py), plus the weights maps they and dispatch_model read from.
//
// Beyond the reference: weights offloaded to the cpu are kept in pinned memory (W2), copied
// asynchronously and prefetched one block ahead by a PrefetchScheduler (W1, W3), never cast per
// forward (W7) and never followed by an empty_cache (W5). The disk tier is read by worker
// threads (W6). With a cpu execution device the stored tensors are used in place (no copy).

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/io/offload.h"
#include "strata/nn/attach.h"
#include "strata/nn/cpu_offload_hook.h"
#include "strata/nn/weights_map.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

// An offload folder as a weights map (views of its memory-mapped files; nothing is copied on
// lookup).
class FolderWeightsMap final : public nn::WeightsMap {
 public:
  explicit FolderWeightsMap(std::shared_ptr<const io::OffloadFolderReader> folder);

  std::optional<Tensor> find(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;
  const io::OffloadFolderReader& folder() const { return *folder_; }

 private:
  std::shared_ptr<const io::OffloadFolderReader> folder_;
};

// The reference's OffloadedWeightsLoader: `first` (the state dict) wins, then `second` (the
// offload folder or the checkpoint's disk weights).
class LayeredWeightsMap final : public nn::WeightsMap {
 public:
  LayeredWeightsMap(std::shared_ptr<const nn::WeightsMap> first,
                    std::shared_ptr<const nn::WeightsMap> second);

  std::optional<Tensor> find(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;

 private:
  std::shared_ptr<const nn::WeightsMap> first_;
  std::shared_ptr<const nn::WeightsMap> second_;
};

// `tensors` as a weights map for offload to `execution_device`. For a GPU they are copied once
// into pinned host memory; for the cpu they are used as they are. Tied names share one copy.
// Meta tensors are InvalidArgument naming them.
std::shared_ptr<nn::InMemoryWeightsMap> offload_weights_map(const nn::NamedTensors& tensors,
                                                            Device execution_device);

struct CpuOffloadOptions {
  // Unset: the device of the model's first parameter (the reference). "cuda" is the current GPU.
  std::optional<Device> execution_device;
  bool offload_buffers = false;
  // The weights to offload from, by full name. Unset: the model's state dict.
  std::optional<nn::NamedTensors> state_dict;
  std::vector<std::string> preload_module_classes;
  PrefetchOptions prefetch;
};

// Every module's weights live on the cpu (pinned) and are streamed to the execution device for
// its forward; outputs come back to the device of the input. Returns `model`.
nn::Module& cpu_offload(nn::Module& model, CpuOffloadOptions options = {});

struct DiskOffloadOptions {
  // Written with the model's state dict unless it already holds an index.json; an existing
  // index must cover every tensor with the model's shapes (CheckpointError otherwise).
  std::filesystem::path offload_dir;
  std::optional<Device> execution_device;
  bool offload_buffers = false;
  std::vector<std::string> preload_module_classes;
  PrefetchOptions prefetch;
};

// Like cpu_offload, with the weights in an offload folder in the reference's format.
nn::Module& disk_offload(nn::Module& model, DiskOffloadOptions options);

// The model moves to the execution device at its first forward and stays there until the
// returned hook's offload() (or the next model of a chain, given this hook as
// `prev_module_hook`, runs). An unset device is GPU 0 (else the cpu); "cuda" is the current GPU,
// resolved once so the model is never moved needlessly.
std::shared_ptr<nn::UserCpuOffloadHook> cpu_offload_with_hook(
    std::shared_ptr<nn::Module> model, std::optional<Device> execution_device = std::nullopt,
    std::shared_ptr<nn::UserCpuOffloadHook> prev_module_hook = nullptr);

// Appends a PrefetchHook (offload to `scheduler`'s device) to every module with direct tensors
// under `module` (named options.module_name in the model); an instance of a preload class gets
// one hook for its whole subtree. What cpu_offload, disk_offload and dispatch_model attach.
void attach_prefetch_hooks(nn::Module& module, const nn::AttachOptions& options,
                           const std::shared_ptr<PrefetchScheduler>& scheduler);

// The names and shapes `folder` must hold for `tensors`: CheckpointError naming the folder, the
// first missing or mismatched tensor, and the fix (delete the folder to have it rewritten).
void check_offload_folder(const io::OffloadFolderReader& folder, const nn::NamedTensors& tensors);

}  // namespace strata::placement

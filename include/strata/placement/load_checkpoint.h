#pragma once
// load_checkpoint_in_model: fills a module tree (usually empty-initialised) from a safetensors
// checkpoint, each tensor going from the mapped file straight to the device its device map
// names, cast once. The reference is Accelerate's utils/modeling.py (accelerate-semantics.md
// §1.7); deviations are listed in docs/checkpoint-io.md ("Loading into a model").

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/io/load_summary.h"
#include "strata/io/offload.h"
#include "strata/io/tensor_shard.h"
#include "strata/nn/module.h"
#include "strata/nn/weights_map.h"
#include "strata/placement/map_device.h"

namespace strata::placement {

struct LoadCheckpointOptions {
  // Module or tensor prefix -> device (0, "cuda:1", "cpu", "disk"); the longest dotted prefix
  // covers a tensor. Empty: everything on the cpu.
  DeviceMap device_map;
  // Where "disk" weights that cannot stay views of the checkpoint are written (offload folder,
  // reference format). Required only when such a weight exists; when given, index.json also
  // records the zero-copy ones (as safetensors entries).
  std::optional<std::filesystem::path> offload_folder;
  // Floating-point tensors are cast to it (buffers included); integer and bool tensors never
  // are. Unset: each tensor takes the dtype of the module's tensor (load_state_dict semantics).
  std::optional<DType> dtype;
  // Accepted for the reference's signature; nothing to do: tensors are copied one at a time
  // from the mapped file, so a shard is never held in memory next to the model.
  bool offload_state_dict = false;
  // Buffers of "disk" modules go to disk too; otherwise they are loaded on the cpu (B5).
  bool offload_buffers = false;
  // Modules kept in float32 when `dtype` is narrower than float32 (fp16, bf16, fp8). A key
  // matches whole dotted components anywhere in a name: "linear2" matches "block.linear2.weight"
  // but not "linear21.weight"; "block.linear2" matches "model.block.linear2.bias".
  std::vector<std::string> keep_in_fp32_modules;
  // Refuse unexpected keys (checkpoint tensors the model lacks) and missing keys (model tensors
  // the checkpoint lacks; a tied name counts as loaded when any of its names is), before any
  // tensor is loaded. Not strict: both are warned about and returned.
  bool strict = false;
  // Page-locked memory for cpu-placed weights (fast, async host-to-device copies for offload
  // hooks). Unset: on when a CUDA backend is registered.
  std::optional<bool> pin_cpu_weights;
  // Tensor parallelism: the tensors of which this rank loads a range of rows or columns (and
  // nothing else of them), read from the mapped file. The module's tensor has the shard's shape.
  // A shard with a `source` is cut from that stored tensor when the checkpoint lacks its own.
  io::TensorShards shards;
  io::ProgressCallback progress;
};

struct LoadCheckpointResult {
  // Bytes per destination ("cpu", "cuda:0", "disk" for bytes written to the offload folder,
  // "disk (checkpoint view)" for disk weights left in the checkpoint file), time, GB/s.
  io::LoadSummary summary;
  std::vector<std::string> unexpected_keys;
  std::vector<std::string> missing_keys;
  // Every "disk" tensor: a raw .dat entry, or a safetensors entry viewing the checkpoint.
  io::OffloadIndex offload_index;
  // Reads the "disk" tensors (offload folder, or the checkpoint itself when every disk weight
  // is a view and no folder was given); null when nothing went to disk. Dispatch passes it to
  // the offload hooks. A tied weight is loaded once, on the most resident device among its
  // names' map entries (GPU, then cpu, then disk); its disk-mapped names find that resident
  // tensor here (one copy, never a second on disk).
  std::shared_ptr<const nn::WeightsMap> disk_weights;
};

// Loads `checkpoint` (a safetensors file, a folder, or an index; see io::discover_checkpoint)
// into `model`. Every check runs before the first tensor is placed: unknown devices, tensors the
// device map does not cover (InvalidArgument), shapes or dtype kinds differing from the
// module's (CheckpointError naming the file, the tensor and both sides), strict violations
// (CheckpointError listing up to 20 keys and how many more), a disk weight needing a copy
// without `offload_folder` (InvalidArgument). Tied parameters share one slot, so they are
// loaded once and stay tied. index.json is written last, atomically, merged with an existing
// one.
LoadCheckpointResult load_checkpoint_in_model(nn::Module& model,
                                              const std::filesystem::path& checkpoint,
                                              const LoadCheckpointOptions& options = {});

// True when dotted `name` contains `key`'s components as a contiguous run of whole components.
bool matches_module_components(std::string_view name, std::string_view key);

}  // namespace strata::placement

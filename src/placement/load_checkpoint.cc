// load_checkpoint_in_model: plan every tensor first (device, dtype, checks), then place them in
// file order, each read once from the mapped shard into its final memory (GPU tensors through
// pinned staging chunks filled by reading threads, staged_load.h).

#include "strata/placement/load_checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "io/json_util.h"
#include "staged_load.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/io/checkpoint.h"
#include "strata/placement/device_map_checks.h"
#include "strata/placement/weights_map_adapter.h"

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using io::detail::printable;

enum class Tier { Device, DiskView, DiskCopy };

// One checkpoint tensor and where it goes.
struct PlannedTensor {
  std::string name;
  const io::SafetensorsFile* file = nullptr;
  const io::SafetensorsEntry* entry = nullptr;
  nn::SlotPtr slot;
  DType target = DType::Float32;
  Tier tier = Tier::Device;
  Device device = Device::cpu();         // Tier::Device only
  std::string destination;               // "cpu", "cuda:0", "disk", "disk (checkpoint view)"
  Shape shape;                           // as loaded: the entry's, or its shard's
  std::optional<io::TensorShard> shard;  // tensor parallelism: the rows/columns this rank loads
  std::uint64_t nbytes() const {
    return static_cast<std::uint64_t>(shape_numel(shape)) * dtype_size(target);
  }
  // The stored tensor (or its shard) as a view of the mapping: nothing is read yet.
  Tensor stored() const {
    const Tensor whole = file->tensor(*entry);
    return shard ? whole.narrow(shard->dim, shard->start, shard->length) : whole;
  }
};

struct LoadPlan {
  std::vector<PlannedTensor> tensors;  // checkpoint file order
  std::vector<std::string> unexpected;
  std::vector<std::string> missing;
  // Every model name bound to each slot, in model order (tied names share a slot).
  std::unordered_map<const nn::TensorSlot*, std::vector<std::string>> slot_names;
  bool needs_offload_copy = false;
  bool has_disk = false;
};

constexpr std::size_t kShownKeys = 20;
constexpr std::string_view kDiskView = "disk (checkpoint view)";

// "'a', 'b', ... and 5 more"
std::string list_keys(const std::vector<std::string>& keys) {
  std::vector<std::string> shown;
  for (std::size_t i = 0; i < keys.size() && i < kShownKeys; ++i) {
    shown.push_back(fmt::format("'{}'", printable(keys[i])));
  }
  std::string out = fmt::format("{}", fmt::join(shown, ", "));
  if (keys.size() > kShownKeys) out += fmt::format(" and {} more", keys.size() - kShownKeys);
  return out;
}

bool is_narrow_float(DType dtype) { return is_floating_point(dtype) && dtype_size(dtype) < 4; }

// The dtype a checkpoint tensor is stored in once loaded.
DType target_dtype(const nn::TensorRef& ref, DType stored, DType module_dtype,
                   const LoadCheckpointOptions& options) {
  const std::string& name = ref.name;
  if (!is_floating_point(stored)) return options.dtype ? stored : module_dtype;
  // A dtype that belongs to a storage format (fp8 weights, quantization scales) is not cast.
  if (!options.dtype || (ref.owner != nullptr && ref.owner->keeps_tensor_dtype(ref.local_name()))) {
    return module_dtype;
  }
  if (is_narrow_float(*options.dtype)) {
    for (const std::string& key : options.keep_in_fp32_modules) {
      if (matches_module_components(name, key)) return DType::Float32;
    }
  }
  return *options.dtype;
}

// The execution device of a map entry; checks once per device that it exists here.
Device device_of(const MapDevice& where, const std::string& tensor,
                 std::unordered_set<int>& checked_gpus) {
  STRATA_CHECK(!where.is_mps(), NotSupported,
               "load_checkpoint_in_model: the device map sends '{}' to 'mps'; Strata has no MPS "
               "backend: use a GPU index, 'cpu' or 'disk'",
               tensor);
  if (where.is_cpu() || where.is_disk()) return Device::cpu();
  const Device device = Device::cuda(where.index());
  if (checked_gpus.insert(where.index()).second) {
    const DeviceBackend& backend = backend_for(device);  // DeviceError when no CUDA
    STRATA_CHECK(where.index() < backend.device_count(), DeviceError,
                 "load_checkpoint_in_model: the device map sends '{}' to GPU {}, but this machine "
                 "has {} GPU(s); fix the device map (or plan it with plan_device_map)",
                 tensor, where.index(), backend.device_count());
  }
  return device;
}

// Tiers from the most to the least resident: a GPU, the cpu, the disk.
int residency_rank(const MapDevice& where) {
  if (where.is_disk()) return 2;
  return where.is_cpu() ? 1 : 0;
}

// A tied slot is loaded once, on the most resident device any of its names is mapped to: a tied
// embedding on the cpu and its head on disk keep one resident copy, which the disk-mapped name
// then reads (LoadCheckpointResult::disk_weights), instead of a resident name finding nothing.
MapDevice most_resident(MapDevice where, const std::vector<std::string>& tied_names,
                        const DeviceMap& device_map) {
  for (const std::string& other : tied_names) {
    const auto mapped = device_for(device_map, other);
    if (mapped && residency_rank(*mapped) < residency_rank(where)) where = *mapped;
  }
  return where;
}

// The shape `name` loads as: the stored shape, or the shard's after checking it lies inside it.
Shape loaded_shape(const std::string& name, const std::string& stored_name, const Shape& stored,
                   const io::TensorShard* shard, const std::string& file) {
  if (shard == nullptr) return stored;
  const auto rank = static_cast<std::int64_t>(stored.size());
  STRATA_CHECK(shard->dim >= 0 && shard->dim < rank && shard->start >= 0 && shard->length >= 0 &&
                   shard->start + shard->length <= stored[static_cast<std::size_t>(shard->dim)],
               CheckpointError,
               "checkpoint file '{}': tensor {} has shape {}, which has no shard [{}, {}) along "
               "dimension {} for {}; the tensor-parallel split was made for another "
               "configuration: build the model from the checkpoint's config.json",
               file, printable(stored_name), shape_str(stored), shard->start,
               shard->start + shard->length, shard->dim, printable(name));
  Shape shape = stored;
  shape[static_cast<std::size_t>(shard->dim)] = shard->length;
  return shape;
}

LoadPlan plan_load(nn::Module& model, const io::CheckpointReader& reader,
                   const LoadCheckpointOptions& options) {
  std::unordered_map<std::string, nn::TensorRef> model_tensors;
  std::vector<std::string> model_order;
  for (nn::TensorRef& ref : model.tensor_refs(true, true, true, /*remove_duplicate=*/false)) {
    if (ref.is_buffer && !ref.persistent) continue;  // never in checkpoints
    model_order.push_back(ref.name);
    model_tensors.emplace(ref.name, std::move(ref));
  }
  LoadPlan plan;
  for (const std::string& name : model_order) {
    plan.slot_names[model_tensors.at(name).slot.get()].push_back(name);
  }
  std::unordered_set<const nn::TensorSlot*> loaded;
  std::unordered_set<int> checked_gpus;
  // Checkpoint names in file order, then the shards cut from another stored tensor (a tied
  // head's) for model tensors the checkpoint lacks.
  std::vector<std::pair<std::string, std::string>> sources;  // model name, stored name
  std::unordered_set<std::string> stored_names;
  for (const std::string& name : reader.keys()) {
    sources.emplace_back(name, name);
    stored_names.insert(name);
  }
  for (const auto& [name, shard] : options.shards) {
    if (!shard.source.empty() && !stored_names.contains(name) &&
        stored_names.contains(shard.source) && model_tensors.contains(name)) {
      sources.emplace_back(name, shard.source);
    }
  }
  for (const auto& [name, stored_name] : sources) {
    const auto it = model_tensors.find(name);
    if (it == model_tensors.end()) {
      plan.unexpected.push_back(name);
      continue;
    }
    const nn::TensorRef& ref = it->second;
    // A tied slot is loaded under its first name in the file; its other names follow it.
    if (!loaded.insert(ref.slot.get()).second) continue;
    const auto location = reader.locate(stored_name);
    const io::SafetensorsEntry& entry = *location.entry;
    const Tensor& current = ref.tensor();
    const char* kind = ref.is_buffer ? "buffer" : "parameter";
    const auto shard_it = options.shards.find(name);
    const io::TensorShard* shard = shard_it == options.shards.end() ? nullptr : &shard_it->second;
    const Shape shape =
        loaded_shape(name, stored_name, entry.shape, shard, location.file->path().string());
    STRATA_CHECK(shard == nullptr || shape == current.shape(), CheckpointError,
                 "checkpoint file '{}': this rank's shard of tensor {} has shape {}, but the "
                 "model's {} {} has shape {}; the model and the shards were made for different "
                 "tensor-parallel splits: build both from the same TensorParallel",
                 location.file->path().string(), printable(stored_name), shape_str(shape), kind,
                 printable(name), shape_str(current.shape()));
    STRATA_CHECK(shape == current.shape(), CheckpointError,
                 "checkpoint file '{}': tensor '{}' has shape {}, but the model's {} has shape "
                 "{}; the checkpoint was saved from another model or configuration: build the "
                 "model from the checkpoint's config.json",
                 location.file->path().string(), printable(name), shape_str(shape), kind,
                 shape_str(current.shape()));
    STRATA_CHECK(
        is_floating_point(entry.dtype) == is_floating_point(current.dtype()), CheckpointError,
        "checkpoint file '{}': tensor '{}' is {}, but the model's {} is {}; integer and "
        "bool tensors are never converted to floating point or back: the checkpoint "
        "does not belong to this model",
        location.file->path().string(), printable(name), entry.dtype, kind, current.dtype());

    PlannedTensor t;
    t.name = name;
    t.file = location.file;
    t.entry = &entry;
    t.slot = ref.slot;
    t.shape = shape;
    if (shard != nullptr) t.shard = *shard;
    t.target = target_dtype(ref, entry.dtype, current.dtype(), options);
    MapDevice where_to = MapDevice::cpu();
    if (!options.device_map.empty()) {
      const auto mapped = device_for(options.device_map, name);
      STRATA_CHECK_ARG(mapped.has_value(),
                       "{} doesn't have any device set: add it (or a module holding it) to the "
                       "device map",
                       name);
      where_to = most_resident(*mapped, plan.slot_names.at(ref.slot.get()), options.device_map);
    }
    // B5: buffers of disk modules are loaded (on the cpu) unless buffers are offloaded too.
    if (where_to.is_disk() && ref.is_buffer && !options.offload_buffers) {
      where_to = MapDevice::cpu();
    }
    t.device = device_of(where_to, name, checked_gpus);
    if (where_to.is_disk()) {
      plan.has_disk = true;
      // A shard (or a tensor cut from another one) is never the stored entry itself, nor is a
      // fused tensor's expert slice (no name in the file): those are copied to the folder.
      const bool view = t.target == entry.dtype && t.file->is_zero_copy(entry) && !t.shard &&
                        stored_name == name && !reader.is_split_expert(stored_name);
      t.tier = view ? Tier::DiskView : Tier::DiskCopy;
      t.destination = view ? std::string(kDiskView) : "disk";
      plan.needs_offload_copy = plan.needs_offload_copy || !view;
    } else {
      t.destination = fmt::format("{}", t.device);
    }
    plan.tensors.push_back(std::move(t));
  }
  for (const std::string& name : model_order) {
    if (!loaded.contains(model_tensors.at(name).slot.get())) plan.missing.push_back(name);
  }
  return plan;
}

// A new tensor on `device` holding the checkpoint tensor cast to `target`: one read of the
// mapped bytes, straight into the final memory (for a GPU in the stored dtype: through `staged`'s
// pinned chunks, complete once staged.finish() returns). A shard is copied from its view of the
// mapping: only its rows (or columns) are read.
Tensor materialise(const PlannedTensor& t, bool pin, detail::StagedGpuLoad& staged) {
  const io::SafetensorsEntry& e = *t.entry;
  if (t.device.is_cpu()) {
    Tensor out =
        Tensor::empty(t.shape, t.target, t.device, pin ? MemoryKind::Pinned : MemoryKind::Pageable);
    if (out.nbytes() == 0) return out;
    if (t.target == e.dtype && !t.shard) {
      t.file->read_into(e, out.data_ptr());  // pread: no page faults on the mapping
    } else {
      out.copy_(t.stored());  // converting copy from the mapping, over the cores
    }
    return out;
  }
  // A whole tensor, or a shard of rows (contiguous in the file), streams through pinned staging.
  if (t.device.is_cuda() && t.target == e.dtype) {
    if (const Tensor src = t.stored(); src.is_contiguous()) {
      if (std::optional<Tensor> out = staged.load(src, t.device)) return *out;
    }
  }
  return t.stored().to(t.device, t.target);
}

io::OffloadEntry view_entry(const PlannedTensor& t) {
  io::OffloadEntry entry;
  entry.dtype = t.entry->dtype;
  entry.shape = t.entry->shape;
  std::error_code ec;
  const fs::path absolute = fs::absolute(t.file->path(), ec);
  entry.safetensors_file = (ec ? t.file->path() : absolute).lexically_normal().string();
  entry.weight_name = t.name;
  return entry;
}

}  // namespace

bool matches_module_components(std::string_view name, std::string_view key) {
  if (key.empty()) return false;
  const std::string haystack = fmt::format(".{}.", name);
  const std::string needle = fmt::format(".{}.", key);
  return haystack.find(needle) != std::string::npos;
}

LoadCheckpointResult load_checkpoint_in_model(nn::Module& model, const fs::path& checkpoint,
                                              const LoadCheckpointOptions& options) {
  STRATA_CHECK_ARG(!options.dtype || is_floating_point(*options.dtype),
                   "load_checkpoint_in_model: dtype {} is not a floating-point dtype; integer and "
                   "bool tensors are never cast, so pass float16, bfloat16, float32, float64 or "
                   "a float8 dtype",
                   *options.dtype);
  if (!options.device_map.empty()) {
    check_device_map(model, options.device_map);
    check_tied_parameters_on_same_device(model, options.device_map);  // warns
  }
  auto reader = std::make_shared<const io::CheckpointReader>(checkpoint);
  LoadPlan plan = plan_load(model, *reader, options);

  if (options.strict && (!plan.unexpected.empty() || !plan.missing.empty())) {
    std::string problems;
    if (!plan.unexpected.empty()) {
      problems += fmt::format("\n  {} unexpected key(s), in the checkpoint but not the model: {}",
                              plan.unexpected.size(), list_keys(plan.unexpected));
    }
    if (!plan.missing.empty()) {
      problems += fmt::format("\n  {} missing key(s), in the model but not the checkpoint: {}",
                              plan.missing.size(), list_keys(plan.missing));
    }
    STRATA_THROW(CheckpointError,
                 "load_checkpoint_in_model(strict=true): {} does not match the model ({}); "
                 "nothing was loaded:{}\nCheck that the model was built from this checkpoint's "
                 "config.json, or load with strict=false to skip unexpected keys and leave "
                 "missing ones unloaded",
                 reader->describe(), model.class_name(), problems);
  }
  STRATA_CHECK_ARG(!plan.needs_offload_copy || options.offload_folder.has_value(),
                   "load_checkpoint_in_model: the device map sends weights of {} to \"disk\" and "
                   "some must be converted (dtype) or copied (misaligned in the file), so they "
                   "need an offload folder: pass offload_folder",
                   reader->describe());

  const bool pin = options.pin_cpu_weights.value_or(find_backend(DeviceType::CUDA) != nullptr);
  std::uint64_t bytes_total = 0;
  for (const PlannedTensor& t : plan.tensors) bytes_total += t.nbytes();
  io::LoadTracker tracker(plan.tensors.size(), bytes_total, options.progress);

  LoadCheckpointResult result;
  std::optional<io::OffloadFolderWriter> writer;
  if (plan.has_disk && options.offload_folder) writer.emplace(*options.offload_folder);
  detail::StagedGpuLoad staged;
  for (const PlannedTensor& t : plan.tensors) {
    switch (t.tier) {
      case Tier::Device:
        t.slot->set(materialise(t, pin, staged));
        break;
      case Tier::DiskView: {
        io::OffloadEntry view = view_entry(t);
        if (writer) writer->add_reference(t.name, view);
        result.offload_index.insert_or_assign(t.name, std::move(view));
        t.slot->set(Tensor::empty(t.shape, t.target, Device::meta()));
        break;
      }
      case Tier::DiskCopy:
        writer->write(t.name, t.stored(), t.target);
        result.offload_index.insert_or_assign(t.name, writer->pending().at(t.name));
        t.slot->set(Tensor::empty(t.shape, t.target, Device::meta()));
        break;
    }
    tracker.tensor_done(t.name, t.destination, t.nbytes());
  }
  staged.finish();  // every GPU copy done (a read error surfaces here, naming the tensor)
  if (writer) {
    writer->commit();  // the data synced, then the merged index.json written last
    result.disk_weights = offload_folder_weights_map(writer->folder());
  } else if (!result.offload_index.empty()) {
    result.disk_weights = as_weights_map(reader);
  }
  // A tied weight is stored once. On disk, under the name it has in the checkpoint: its other
  // names (a tied lm_head, say) resolve to that entry. Resident (it had a resident name), its
  // disk-mapped names resolve to the resident tensor itself.
  std::map<std::string, std::string, std::less<>> aliases;
  TiedSlots resident;
  for (const PlannedTensor& t : plan.tensors) {
    for (const std::string& other : plan.slot_names.at(t.slot.get())) {
      if (other == t.name) continue;
      if (t.tier != Tier::Device) {
        aliases.emplace(other, t.name);
      } else if (const auto mapped = device_for(options.device_map, other);
                 mapped && mapped->is_disk()) {
        resident.emplace_back(other, t.slot);
      }
    }
  }
  if (result.disk_weights && !aliases.empty()) {
    result.disk_weights = with_aliases(std::move(result.disk_weights), std::move(aliases));
  }
  result.disk_weights = with_resident(std::move(result.disk_weights), std::move(resident));

  if (!plan.unexpected.empty()) {
    log_warning(fmt::format("Some weights of {} were not used when initializing {}: {}",
                            reader->describe(), model.class_name(), list_keys(plan.unexpected)));
  }
  if (!plan.missing.empty()) {
    log_warning(fmt::format("Some weights of {} were not in {} and were not loaded: {}",
                            model.class_name(), reader->describe(), list_keys(plan.missing)));
  }
  result.unexpected_keys = std::move(plan.unexpected);
  result.missing_keys = std::move(plan.missing);
  result.summary = tracker.finish();
  return result;
}

}  // namespace strata::placement

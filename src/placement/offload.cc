#include "strata/placement/offload.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/nn/hooks.h"

namespace strata::placement {
namespace {

Device resolve_execution_device(nn::Module& model, const std::optional<Device>& requested) {
  if (requested) return resolve_device(*requested);
  const std::optional<Device> first = nn::first_parameter_device(model);
  STRATA_CHECK_ARG(first && !first->is_meta(),
                   "{}: no execution_device was given and the model's first parameter is {}; "
                   "pass an execution_device",
                   model.class_name(), first ? first->str() : "missing");
  return *first;
}

// The root hook: outputs go back to the input's device. Unlike the reference (whose root hook
// had no execution device), inputs go to the execution device too, so a module that combines
// its input with a child's output (a residual) sees both on one device.
void add_io_hook(nn::Module& model, Device exec) {
  nn::AlignDevicesOptions root;
  root.execution_device = exec;
  root.io_same_device = true;
  nn::add_hook_to_module(model, std::make_shared<nn::AlignDevicesHook>(std::move(root)),
                         /*append=*/true);
}

nn::Module& offload_with(nn::Module& model, Device exec,
                         std::shared_ptr<const nn::WeightsMap> weights, bool offload_buffers,
                         std::vector<std::string> preload, const PrefetchOptions& prefetch) {
  auto scheduler = std::make_shared<PrefetchScheduler>(exec, prefetch);
  add_io_hook(model, exec);
  nn::AttachOptions options;
  options.weights_map = std::move(weights);
  options.offload_buffers = offload_buffers;
  options.preload_module_classes = std::move(preload);
  attach_prefetch_hooks(model, options, scheduler);
  return model;
}

}  // namespace

// ---- weights maps ----------------------------------------------------------------------------

FolderWeightsMap::FolderWeightsMap(std::shared_ptr<const io::OffloadFolderReader> folder)
    : folder_(std::move(folder)) {
  STRATA_CHECK_ARG(folder_ != nullptr, "FolderWeightsMap: the folder reader is null");
}

std::optional<Tensor> FolderWeightsMap::find(std::string_view name) const {
  if (!folder_->contains(name)) return std::nullopt;
  return folder_->get(name);
}

bool FolderWeightsMap::contains(std::string_view name) const { return folder_->contains(name); }

std::vector<std::string> FolderWeightsMap::keys() const { return folder_->keys(); }

std::string FolderWeightsMap::describe() const { return folder_->describe(); }

LayeredWeightsMap::LayeredWeightsMap(std::shared_ptr<const nn::WeightsMap> first,
                                     std::shared_ptr<const nn::WeightsMap> second)
    : first_(std::move(first)), second_(std::move(second)) {
  STRATA_CHECK_ARG(first_ && second_, "LayeredWeightsMap needs two weights maps");
}

std::optional<Tensor> LayeredWeightsMap::find(std::string_view name) const {
  if (auto t = first_->find(name)) return t;
  return second_->find(name);
}

bool LayeredWeightsMap::contains(std::string_view name) const {
  return first_->contains(name) || second_->contains(name);
}

std::vector<std::string> LayeredWeightsMap::keys() const {
  std::vector<std::string> out = first_->keys();
  for (std::string& key : second_->keys()) {
    if (!first_->contains(key)) out.push_back(std::move(key));
  }
  return out;
}

std::string LayeredWeightsMap::describe() const {
  return fmt::format("{}, then {}", first_->describe(), second_->describe());
}

std::shared_ptr<nn::InMemoryWeightsMap> offload_weights_map(const nn::NamedTensors& tensors,
                                                            Device execution_device) {
  const bool pin = !execution_device.is_cpu() && find_backend(DeviceType::CUDA) != nullptr;
  auto map = std::make_shared<nn::InMemoryWeightsMap>();
  std::unordered_map<const void*, Tensor> copies;  // tied names share one pinned copy
  for (const auto& [name, tensor] : tensors) {
    STRATA_CHECK_ARG(!tensor.is_meta(),
                     "'{}' is on the meta device: load the weights before offloading them (or "
                     "give a state_dict / offload folder that holds it)",
                     name);
    Tensor stored = tensor.to(Device::cpu());
    if (pin && !stored.is_pinned()) {
      auto [it, fresh] = copies.try_emplace(tensor.data_ptr());
      if (fresh) {
        it->second = Tensor::empty(stored.shape(), stored.dtype(), Device::cpu(),
                                   MemoryKind::Pinned);
        it->second.copy_(stored);
      }
      stored = it->second;
    }
    map->insert(name, std::move(stored));
  }
  return map;
}

void check_offload_folder(const io::OffloadFolderReader& folder, const nn::NamedTensors& tensors) {
  for (const auto& [name, tensor] : tensors) {
    STRATA_CHECK(folder.contains(name), CheckpointError,
                 "offload folder {}: no entry for '{}' (expected {} {}); the folder belongs to "
                 "another model or an older run: delete it so it is rewritten",
                 folder.folder().string(), name, tensor.dtype(), shape_str(tensor.shape()));
    const Shape stored = folder.meta(name).shape;
    STRATA_CHECK(stored == tensor.shape(), CheckpointError,
                 "offload folder {}: '{}' has shape {} but the model expects {}; the folder "
                 "belongs to another model: delete it so it is rewritten",
                 folder.folder().string(), name, shape_str(stored), shape_str(tensor.shape()));
  }
}

// ---- entry points ----------------------------------------------------------------------------

void attach_prefetch_hooks(nn::Module& module, const nn::AttachOptions& options,
                           const std::shared_ptr<PrefetchScheduler>& scheduler) {
  STRATA_CHECK_ARG(scheduler != nullptr, "attach_prefetch_hooks: the scheduler is null");
  nn::AttachOptions attach = options;
  attach.make_hook = prefetch_hook_factory(scheduler);
  nn::attach_align_device_hook(module, scheduler->execution_device(), /*offload=*/true, attach);
}

nn::Module& cpu_offload(nn::Module& model, CpuOffloadOptions options) {
  const Device exec = resolve_execution_device(model, options.execution_device);
  const nn::NamedTensors tensors =
      options.state_dict ? std::move(*options.state_dict) : model.state_dict();
  return offload_with(model, exec, offload_weights_map(tensors, exec), options.offload_buffers,
                      std::move(options.preload_module_classes), options.prefetch);
}

nn::Module& disk_offload(nn::Module& model, DiskOffloadOptions options) {
  STRATA_CHECK_ARG(!options.offload_dir.empty(),
                   "disk_offload({}): offload_dir is empty; pass the folder to keep the weights in",
                   model.class_name());
  const Device exec = resolve_execution_device(model, options.execution_device);
  const nn::NamedTensors tensors = model.state_dict();
  // index.json is written last and atomically: without it the folder is incomplete, rewrite it.
  if (!std::filesystem::exists(options.offload_dir / io::kOffloadIndexName)) {
    io::offload_state_dict(options.offload_dir, tensors);
  }
  auto folder = std::make_shared<io::OffloadFolderReader>(options.offload_dir);
  check_offload_folder(*folder, tensors);
  auto weights = std::make_shared<FolderWeightsMap>(std::move(folder));
  return offload_with(model, exec, std::move(weights), options.offload_buffers,
                      std::move(options.preload_module_classes), options.prefetch);
}

std::shared_ptr<nn::UserCpuOffloadHook> cpu_offload_with_hook(
    std::shared_ptr<nn::Module> model, std::optional<Device> execution_device,
    std::shared_ptr<nn::UserCpuOffloadHook> prev_module_hook) {
  STRATA_CHECK_ARG(model != nullptr, "cpu_offload_with_hook: the model is null");
  // Resolved once: a bare "cuda" becomes cuda:<current>, so it compares equal on every forward.
  const Device exec = resolve_device(execution_device.value_or(nn::default_execution_device()));
  auto hook = std::make_shared<nn::CpuOffload>(exec, std::move(prev_module_hook));
  nn::add_hook_to_module(*model, hook, /*append=*/true);
  return std::make_shared<nn::UserCpuOffloadHook>(std::move(model), std::move(hook));
}

}  // namespace strata::placement

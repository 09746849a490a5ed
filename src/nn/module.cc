#include "strata/nn/module.h"

#include <unordered_set>

#include "strata/nn/hooks.h"
#include "strata/nn/init.h"

namespace strata::nn {
namespace {

std::string join_name(std::string_view prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  std::string out;
  out.reserve(prefix.size() + 1 + name.size());
  out.append(prefix).append(".").append(name);
  return out;
}

std::string entry_names(const std::vector<TensorEntry>& entries) {
  std::string out;
  for (const TensorEntry& e : entries) out += (out.empty() ? "" : ", ") + e.name;
  return out.empty() ? "none" : out;
}

const TensorEntry* find_entry(const std::vector<TensorEntry>& entries, std::string_view name) {
  for (const TensorEntry& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

// Moves and/or casts every tensor of the tree once (tied slots once).
void convert_module(Module& module, std::optional<Device> device, std::optional<DType> dtype,
                    bool non_blocking) {
  for (const TensorRef& ref : module.tensor_refs(true, true, /*recurse=*/true)) {
    const Tensor& t = ref.tensor();
    const DType target_dtype = dtype && is_floating_point(t.dtype()) ? *dtype : t.dtype();
    const Device target_device = device.value_or(t.device());
    STRATA_CHECK_ARG(!t.is_meta() || target_device.is_meta(),
                     "{}.to({}): '{}' is on the meta device and has no data to move; load its "
                     "weights first (a checkpoint, or set_module_tensor_to_device with a value)",
                     module.class_name(), target_device, ref.name);
    ref.slot->set(t.to(target_device, target_dtype, non_blocking));
  }
}

// Every hook of the tree may refuse a move, before the first tensor moves: a refused to() leaves
// the tree unchanged (offloaded weights are meta placeholders the hooks own).
void check_hooks_allow_move(Module& model, Device device) {
  for (const auto& [name, module] : model.named_modules()) {
    if (ModelHook* hook = module->hook()) hook->check_move(*module, device, {model, name});
  }
}

}  // namespace

std::string_view TensorRef::local_name() const {
  const std::size_t dot = name.rfind('.');
  return dot == std::string::npos ? std::string_view(name) : std::string_view(name).substr(dot + 1);
}

Module::Module(std::string class_name) : class_name_(std::move(class_name)) {}

Module::~Module() {
  for (TensorEntry& e : parameters_) --e.slot->bindings_;
  for (TensorEntry& e : buffers_) --e.slot->bindings_;
}

// ---- registration --------------------------------------------------------------------------

void Module::check_new_name(const std::string& name, std::string_view what) const {
  STRATA_CHECK_ARG(!name.empty(), "{}: cannot register a {} with an empty name", class_name_, what);
  STRATA_CHECK_ARG(name.find('.') == std::string::npos,
                   "{}: cannot register {} '{}': names may not contain '.' (a dotted name is a "
                   "path through the tree; register it on the submodule instead)",
                   class_name_, what, name);
  const char* taken = has_parameter(name) ? "parameter"
                      : has_buffer(name)  ? "buffer"
                      : has_child(name)   ? "submodule"
                                          : nullptr;
  STRATA_CHECK_ARG(taken == nullptr,
                   "{}: cannot register {} '{}': the name is already taken by a {}", class_name_,
                   what, name, taken ? taken : "");
}

TensorEntry& Module::add_entry(std::vector<TensorEntry>& entries, std::string name, SlotPtr slot,
                               bool persistent) {
  ++slot->bindings_;
  entries.push_back(TensorEntry{std::move(name), std::move(slot), persistent});
  return entries.back();
}

const Tensor& Module::register_parameter(std::string name, Tensor value) {
  check_new_name(name, "parameter");
  STRATA_CHECK_ARG(value.defined(), "{}: cannot register parameter '{}': the tensor is undefined",
                   class_name_, name);
  if (auto placement = current_init_placement()) value = value.to(placement->device);
  return add_entry(parameters_, std::move(name), std::make_shared<TensorSlot>(std::move(value)),
                   true)
      .slot->tensor();
}

void Module::register_parameter(std::string name, SlotPtr slot) {
  check_new_name(name, "parameter");
  STRATA_CHECK_ARG(slot != nullptr && slot->tensor().defined(),
                   "{}: cannot register parameter '{}': the slot is null or holds no tensor",
                   class_name_, name);
  add_entry(parameters_, std::move(name), std::move(slot), true);
}

namespace {
// A new tensor on the guard's device (nothing allocated on meta), else on the cpu.
Tensor new_filled(const Shape& shape, DType dtype, double fill, bool follow_guard) {
  const auto placement = current_init_placement();
  const Device device = follow_guard && placement ? placement->device : Device::cpu();
  Tensor t = Tensor::empty(shape, dtype, device);
  t.fill_(fill);  // a no-op on meta
  return t;
}
}  // namespace

const Tensor& Module::create_parameter(std::string name, const Shape& shape, DType dtype,
                                       double fill) {
  check_new_name(name, "parameter");
  return add_entry(parameters_, std::move(name),
                   std::make_shared<TensorSlot>(new_filled(shape, dtype, fill, true)), true)
      .slot->tensor();
}

const Tensor& Module::register_buffer(std::string name, Tensor value, bool persistent) {
  check_new_name(name, "buffer");
  STRATA_CHECK_ARG(value.defined(), "{}: cannot register buffer '{}': the tensor is undefined",
                   class_name_, name);
  if (auto placement = current_init_placement(); placement && placement->include_buffers) {
    value = value.to(placement->device);
  }
  return add_entry(buffers_, std::move(name), std::make_shared<TensorSlot>(std::move(value)),
                   persistent)
      .slot->tensor();
}

const Tensor& Module::create_buffer(std::string name, const Shape& shape, DType dtype, double fill,
                                    bool persistent) {
  check_new_name(name, "buffer");
  const auto placement = current_init_placement();
  const bool follow = placement && placement->include_buffers;
  return add_entry(buffers_, std::move(name),
                   std::make_shared<TensorSlot>(new_filled(shape, dtype, fill, follow)), persistent)
      .slot->tensor();
}

void Module::add_child(std::string name, std::shared_ptr<Module> module) {
  check_new_name(name, "submodule");
  STRATA_CHECK_ARG(module != nullptr, "{}: cannot register submodule '{}': it is null", class_name_,
                   name);
  STRATA_CHECK_ARG(module.get() != this, "{}: cannot register a module as its own child '{}'",
                   class_name_, name);
  children_.emplace_back(std::move(name), std::move(module));
}

// ---- direct members ------------------------------------------------------------------------

bool Module::has_parameter(std::string_view name) const {
  return find_entry(parameters_, name) != nullptr;
}
bool Module::has_buffer(std::string_view name) const {
  return find_entry(buffers_, name) != nullptr;
}
bool Module::has_child(std::string_view name) const {
  for (const auto& [child_name, module] : children_) {
    if (child_name == name) return true;
  }
  return false;
}

void Module::missing(std::string_view what, std::string_view name) const {
  std::string children;
  for (const auto& entry : children_) children += (children.empty() ? "" : ", ") + entry.first;
  STRATA_THROW(InvalidArgument,
               "{} has no {} named '{}' (parameters: {}; buffers: {}; children: {})", class_name_,
               what, name, entry_names(parameters_), entry_names(buffers_),
               children.empty() ? "none" : children);
}

const SlotPtr& Module::parameter_slot(std::string_view name) const {
  const TensorEntry* e = find_entry(parameters_, name);
  if (e == nullptr) missing("parameter", name);
  return e->slot;
}

const SlotPtr& Module::buffer_slot(std::string_view name) const {
  const TensorEntry* e = find_entry(buffers_, name);
  if (e == nullptr) missing("buffer", name);
  return e->slot;
}

const Tensor& Module::parameter(std::string_view name) const {
  return parameter_slot(name)->tensor();
}
const Tensor& Module::buffer(std::string_view name) const { return buffer_slot(name)->tensor(); }

const std::shared_ptr<Module>& Module::child_ptr(std::string_view name) const {
  for (const auto& entry : children_) {
    if (entry.first == name) return entry.second;
  }
  missing("submodule", name);
}

Module& Module::child(std::string_view name) const { return *child_ptr(name); }

const TensorEntry* Module::find_tensor(std::string_view name, bool* is_buffer) const {
  if (const TensorEntry* e = find_entry(parameters_, name)) {
    if (is_buffer) *is_buffer = false;
    return e;
  }
  if (const TensorEntry* e = find_entry(buffers_, name)) {
    if (is_buffer) *is_buffer = true;
    return e;
  }
  return nullptr;
}

void Module::bind_tensor(std::string_view name, SlotPtr slot) {
  STRATA_CHECK_ARG(slot != nullptr && slot->tensor().defined(),
                   "{}: cannot bind '{}' to a null or empty slot", class_name_, name);
  auto* entry = const_cast<TensorEntry*>(find_tensor(name));
  if (entry == nullptr) missing("parameter or buffer", name);
  if (entry->slot == slot) return;
  ++slot->bindings_;
  --entry->slot->bindings_;
  entry->slot = std::move(slot);
}

// ---- walks ---------------------------------------------------------------------------------

template <class Fn>
void Module::walk(std::string& prefix, std::unordered_set<const Module*>* seen, Fn&& fn) {
  fn(static_cast<const std::string&>(prefix), *this);
  for (auto& [name, child] : children_) {
    if (seen != nullptr && !seen->insert(child.get()).second) continue;
    const std::size_t size = prefix.size();
    if (!prefix.empty()) prefix += '.';
    prefix += name;
    child->walk(prefix, seen, fn);
    prefix.resize(size);
  }
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(bool remove_duplicate) {
  std::vector<std::pair<std::string, Module*>> out;
  std::string prefix;
  std::unordered_set<const Module*> seen{this};
  walk(prefix, remove_duplicate ? &seen : nullptr,
       [&](const std::string& name, Module& module) { out.emplace_back(name, &module); });
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [name, child] : children_) out.emplace_back(name, child.get());
  return out;
}

std::vector<TensorRef> Module::tensor_refs(bool parameters, bool buffers, bool recurse,
                                           bool remove_duplicate) {
  std::vector<std::pair<std::string, Module*>> modules;
  if (recurse) {
    modules = named_modules(remove_duplicate);
  } else {
    modules.emplace_back("", this);
  }
  std::vector<TensorRef> out;
  std::unordered_set<const TensorSlot*> seen;
  auto collect = [&](bool is_buffer) {
    for (auto& [prefix, module] : modules) {
      for (const TensorEntry& e : is_buffer ? module->buffers_ : module->parameters_) {
        if (remove_duplicate && !seen.insert(e.slot.get()).second) continue;
        out.push_back(
            TensorRef{join_name(prefix, e.name), module, e.slot, is_buffer, e.persistent});
      }
    }
  };
  if (parameters) collect(false);
  if (buffers) collect(true);
  return out;
}

namespace {
// The walks do not modify the tree; they share the non-const implementation.
NamedTensors named_tensors(const Module& module, bool parameters, bool recurse,
                           bool remove_duplicate) {
  NamedTensors out;
  for (TensorRef& ref : const_cast<Module&>(module).tensor_refs(parameters, !parameters, recurse,
                                                                remove_duplicate)) {
    out.emplace_back(std::move(ref.name), ref.tensor());
  }
  return out;
}
}  // namespace

NamedTensors Module::named_parameters(bool recurse, bool remove_duplicate) const {
  return named_tensors(*this, true, recurse, remove_duplicate);
}

NamedTensors Module::named_buffers(bool recurse, bool remove_duplicate) const {
  return named_tensors(*this, false, recurse, remove_duplicate);
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  std::string prefix;
  const_cast<Module*>(this)->walk(prefix, nullptr, [&](const std::string& name, Module& module) {
    for (const TensorEntry& e : module.parameters_) {
      out.emplace_back(join_name(name, e.name), e.slot->tensor());
    }
    for (const TensorEntry& e : module.buffers_) {
      if (!e.persistent) continue;
      out.emplace_back(join_name(name, e.name), e.slot->tensor());
    }
  });
  return out;
}

Module& Module::get_submodule(std::string_view target) {
  Module* current = this;
  std::size_t start = 0;
  while (start < target.size()) {
    std::size_t dot = target.find('.', start);
    if (dot == std::string_view::npos) dot = target.size();
    const std::string_view step = target.substr(start, dot - start);
    const std::string_view path = target.substr(0, start == 0 ? 0 : start - 1);
    if (!current->has_child(step)) {
      std::string children;
      for (const auto& entry : current->children_) {
        children += (children.empty() ? "" : ", ") + entry.first;
      }
      STRATA_THROW(InvalidArgument,
                   "get_submodule('{}'): {} '{}' has no submodule named '{}' (its children: {})",
                   target, current->class_name_, path.empty() ? "<root>" : path, step,
                   children.empty() ? "none" : children);
    }
    current = &current->child(step);
    start = dot + 1;
  }
  return *current;
}

// ---- conversion ----------------------------------------------------------------------------

Module& Module::to(Device device, bool non_blocking) {
  check_hooks_allow_move(*this, device);
  convert_module(*this, device, std::nullopt, non_blocking);
  return *this;
}

Module& Module::to(DType dtype) {
  convert_module(*this, std::nullopt, dtype, false);
  return *this;
}

Module& Module::to(Device device, DType dtype, bool non_blocking) {
  check_hooks_allow_move(*this, device);
  convert_module(*this, device, dtype, non_blocking);
  return *this;
}

// ---- forward -------------------------------------------------------------------------------

Value Module::operator()(Args args) {
  if (!hook_) return forward(args);
  const std::shared_ptr<ModelHook> hook = hook_;  // stays alive if replaced during forward
  hook->pre_forward(*this, args);
  Value output = forward(args);
  hook->post_forward(*this, output);
  return output;
}

Value Module::operator()(Value input) {
  Args args;
  args.positional.push_back(std::move(input));
  return (*this)(std::move(args));
}

Value Module::forward(Args&) {
  STRATA_THROW(NotSupported, "{} has no forward(): it is a container; call its submodules",
               class_name_);
}

void Module::reset_non_persistent_buffers(Device) {
  std::string names;
  for (const TensorEntry& e : buffers_) {
    if (!e.persistent && e.slot->tensor().is_meta()) names += (names.empty() ? "" : ", ") + e.name;
  }
  STRATA_THROW(NotSupported,
               "{} cannot rebuild its non-persistent buffers ({}): override "
               "reset_non_persistent_buffers, or set them with set_module_tensor_to_device and "
               "a value",
               class_name_, names.empty() ? "none on meta" : names);
}

// ---- free functions ------------------------------------------------------------------------

std::vector<TensorRef> named_module_tensors(Module& module, bool include_buffers, bool recurse,
                                            bool remove_non_persistent) {
  std::vector<TensorRef> refs = module.tensor_refs(true, include_buffers, recurse);
  if (remove_non_persistent) {
    std::erase_if(refs, [](const TensorRef& ref) { return ref.is_buffer && !ref.persistent; });
  }
  return refs;
}

bool has_state(const Module& module) {
  if (!module.direct_parameters().empty()) return true;
  for (const TensorEntry& e : module.direct_buffers()) {
    if (e.persistent) return true;
  }
  for (const auto& entry : module.direct_children()) {
    if (has_state(*entry.second)) return true;
  }
  return false;
}

std::optional<Device> first_parameter_device(const Module& module) {
  if (!module.direct_parameters().empty()) {
    return module.direct_parameters().front().slot->tensor().device();
  }
  for (const auto& entry : module.direct_children()) {
    if (auto device = first_parameter_device(*entry.second)) return device;
  }
  return std::nullopt;
}

}  // namespace strata::nn

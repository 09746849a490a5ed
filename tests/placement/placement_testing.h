#pragma once
// Shared by the placement tests: meta-tensor trees from short descriptions, the reference's small
// test models (accelerate-semantics.md §3.1), log capture, and a plan check computed here from the
// tensors themselves (not through the library's size code).

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "strata/core/logging.h"
#include "strata/core/tensor.h"
#include "strata/nn/module.h"
#include "strata/placement/placement.h"

namespace strata::placement::testing {

struct TensorSpec {
  std::string name;  // dotted; its module must be listed
  Shape shape;
  DType dtype = DType::Float32;
  bool buffer = false;
  bool persistent = true;
};
using Specs = std::vector<TensorSpec>;
using ModuleSpecs = std::vector<std::pair<std::string, std::string>>;  // {dotted name, class}

inline std::pair<std::string, std::string> split_last(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

// A tree of meta tensors. Modules come parents first (the root "" is implied); each tie group's
// names are bound to the tensor of its first name.
inline std::shared_ptr<nn::Module> make_tree(
    const std::string& root_class, const ModuleSpecs& modules, const Specs& tensors,
    const std::vector<std::vector<std::string>>& tied = {}) {
  std::map<std::string, std::shared_ptr<nn::Module>> by_name;
  by_name[""] = std::make_shared<nn::Module>(root_class);
  for (const auto& [name, cls] : modules) {
    auto module = std::make_shared<nn::Module>(cls);
    const auto [parent, local] = split_last(name);
    by_name.at(parent)->register_module(local, module);
    by_name[name] = module;
  }
  for (const TensorSpec& t : tensors) {
    const auto [owner, local] = split_last(t.name);
    const Tensor meta = Tensor::empty(t.shape, t.dtype, Device::meta());
    if (t.buffer) {
      by_name.at(owner)->register_buffer(local, meta, t.persistent);
    } else {
      by_name.at(owner)->register_parameter(local, meta);
    }
  }
  for (const auto& group : tied) {
    const auto [owner0, local0] = split_last(group.front());
    const nn::SlotPtr slot = by_name.at(owner0)->parameter_slot(local0);
    for (std::size_t i = 1; i < group.size(); ++i) {
      const auto [owner, local] = split_last(group[i]);
      by_name.at(owner)->bind_tensor(local, slot);
    }
  }
  return by_name[""];
}

inline std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// nn.Linear(in, out): weight [out, in], bias [out].
inline Specs linear(const std::string& name, std::int64_t in, std::int64_t out) {
  return {{join(name, "weight"), {out, in}}, {join(name, "bias"), {out}}};
}

// nn.BatchNorm1d(n): weight, bias, then buffers running_mean, running_var, num_batches_tracked.
inline Specs batchnorm(const std::string& name, std::int64_t n) {
  return {{join(name, "weight"), {n}},
          {join(name, "bias"), {n}},
          {join(name, "running_mean"), {n}, DType::Float32, true},
          {join(name, "running_var"), {n}, DType::Float32, true},
          {join(name, "num_batches_tracked"), {}, DType::Int64, true}};
}

inline void append(Specs& to, const Specs& more) { to.insert(to.end(), more.begin(), more.end()); }

// ModelForTest under `prefix`: linear1 = Linear(3, 4) 64 B, batchnorm = BatchNorm1d(4) 72 B,
// linear2 = Linear(4, 5) 100 B; 236 B in all.
inline void add_model_for_test(const std::string& prefix, ModuleSpecs& modules, Specs& tensors) {
  if (!prefix.empty()) modules.push_back({prefix, "ModelForTest"});
  modules.push_back({join(prefix, "linear1"), "Linear"});
  modules.push_back({join(prefix, "batchnorm"), "BatchNorm1d"});
  modules.push_back({join(prefix, "linear2"), "Linear"});
  append(tensors, linear(join(prefix, "linear1"), 3, 4));
  append(tensors, batchnorm(join(prefix, "batchnorm"), 4));
  append(tensors, linear(join(prefix, "linear2"), 4, 5));
}

inline std::shared_ptr<nn::Module> model_for_test(DType dtype = DType::Float32) {
  ModuleSpecs modules;
  Specs tensors;
  add_model_for_test("", modules, tensors);
  for (TensorSpec& t : tensors) {
    if (t.dtype == DType::Float32) t.dtype = dtype;
  }
  return make_tree("ModelForTest", modules, tensors);
}

// Sequential of three ModelForTest named `names` (seq3: "0", "1", "2"), with optional ties.
inline std::shared_ptr<nn::Module> three_blocks(const std::vector<std::string>& names,
                                                const std::vector<std::vector<std::string>>& tied) {
  ModuleSpecs modules;
  Specs tensors;
  for (const std::string& name : names) add_model_for_test(name, modules, tensors);
  return make_tree("Sequential", modules, tensors, tied);
}

inline std::shared_ptr<nn::Module> seq3() { return three_blocks({"0", "1", "2"}, {}); }

// tied3 (T6-T8): layer1..3 = ModelForTest with layer3.linear2.weight = layer1.linear2.weight,
// level 2 adds layer2.linear2.weight, level 3 also layer2.linear1.weight = layer1.linear1.weight.
inline std::shared_ptr<nn::Module> tied3(int level) {
  std::vector<std::vector<std::string>> tied = {{"layer1.linear2.weight", "layer3.linear2.weight"}};
  if (level >= 2) tied[0].push_back("layer2.linear2.weight");
  if (level >= 3) tied.push_back({"layer1.linear1.weight", "layer2.linear1.weight"});
  return three_blocks({"layer1", "layer2", "layer3"}, tied);
}

// Collects what the library logs while alive.
class LogCapture {
 public:
  LogCapture() {
    previous_ = set_log_sink([this](LogLevel level, const std::string& message) {
      (level == LogLevel::Warning ? warnings : infos).push_back(message);
    });
  }
  ~LogCapture() { set_log_sink(std::move(previous_)); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  bool warned(const std::string& text) const {
    return std::any_of(warnings.begin(), warnings.end(),
                       [&](const std::string& w) { return w.find(text) != std::string::npos; });
  }
  std::vector<std::string> warnings, infos;

 private:
  LogSink previous_;
};

// Planning warns about GPU indices the test machine lacks on nearly every call: silence the log for
// the whole binary (LogCapture still sees everything while alive).
class QuietLogs : public ::testing::Environment {
 public:
  void SetUp() override { set_log_sink({}); }
};
inline ::testing::Environment* const kQuietLogs =
    ::testing::AddGlobalTestEnvironment(new QuietLogs);

// Bytes per tensor name, computed from the tensors: each tensor once (the first name of a
// parameter in module order), floating tensors at min(own, dtype) bytes, others at their own.
inline std::map<std::string, std::int64_t> tensor_bytes(nn::Module& model,
                                                        std::optional<DType> dtype = {}) {
  std::map<std::string, std::int64_t> bytes;
  std::unordered_set<const nn::TensorSlot*> seen_params, seen_buffers;
  for (const nn::TensorRef& ref : model.tensor_refs(true, true, true, false)) {
    auto& seen = ref.is_buffer ? seen_buffers : seen_params;
    std::int64_t size = 0;
    if (seen.insert(ref.slot.get()).second) {
      const Tensor& t = ref.tensor();
      std::size_t element = t.element_size();
      if (dtype && is_floating_point(t.dtype())) element = std::min(element, dtype_size(*dtype));
      size = t.numel() * static_cast<std::int64_t>(element);
    }
    bytes[ref.name] = size;
  }
  return bytes;
}

// What is wrong with `map` as a plan for `model` (empty when nothing): a key twice or inside
// another key, a tensor no key covers, a device over `budgets`, a tie group on two devices.
inline std::string plan_problems(nn::Module& model, const DeviceMap& map, const MaxMemory& budgets,
                                 std::optional<DType> dtype = {}) {
  std::unordered_map<std::string, MapDevice> keys;
  for (const auto& [key, device] : map) {
    if (!keys.emplace(key, device).second) return "key twice: " + key;
  }
  const auto cover = [&](std::string name) -> std::optional<MapDevice> {
    for (;;) {
      if (auto it = keys.find(name); it != keys.end()) return it->second;
      if (name.empty()) return std::nullopt;
      name = split_last(name).first;
    }
  };
  for (const auto& [key, device] : map) {
    if (!key.empty() && cover(split_last(key).first)) return "nested key: " + key;
  }
  std::map<MapDevice, std::int64_t> used;
  for (const auto& [name, bytes] : tensor_bytes(model, dtype)) {
    const std::optional<MapDevice> device = cover(name);
    if (!device) return "not covered: " + name;
    used[*device] += bytes;
  }
  for (const auto& [device, bytes] : used) {
    if (device.is_disk()) continue;
    if (bytes > budgets.find(device).value_or(-1)) {
      return fmt::format("{} holds {} B over its budget {}", device, bytes, budgets.str());
    }
  }
  // Names bound to one parameter tensor must share a device.
  std::unordered_map<const nn::TensorSlot*, std::string> first_name;
  for (const nn::TensorRef& ref : model.tensor_refs(true, false, true, false)) {
    const auto [it, first] = first_name.emplace(ref.slot.get(), ref.name);
    if (!first && cover(ref.name) != cover(it->second)) {
      return "tie split: " + it->second + " and " + ref.name;
    }
  }
  return "";
}

}  // namespace strata::placement::testing

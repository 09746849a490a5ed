#include "fixture_model.h"

#include <map>
#include <unordered_map>

#include "strata/core/error.h"
#include "strata/core/tensor.h"

namespace strata::device_map_cases {
namespace {

using placement::MapDevice;

// "a.b.c" -> ("a.b", "c"); "c" -> ("", "c").
std::pair<std::string, std::string> split_last(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

MapDevice device_from_json(const json& key) {
  if (key.is_number_integer()) return MapDevice(key.get<int>());
  STRATA_CHECK_ARG(key.is_string(), "a device must be an integer or a string, not {}", key.dump());
  return MapDevice(key.get<std::string>());
}

// The covering key of `name` in `keys`: itself, a dotted prefix or "".
const MapDevice* covering(const std::unordered_map<std::string, MapDevice>& keys,
                          std::string name) {
  for (;;) {
    if (auto it = keys.find(name); it != keys.end()) return &it->second;
    if (name.empty()) return nullptr;
    const std::size_t dot = name.rfind('.');
    name = dot == std::string::npos ? std::string() : name.substr(0, dot);
  }
}

}  // namespace

std::shared_ptr<nn::Module> build_model(const json& model) {
  std::map<std::string, std::shared_ptr<nn::Module>> modules;
  std::shared_ptr<nn::Module> root;
  for (const json& entry : model.at("modules")) {
    const auto name = entry.at("name").get<std::string>();
    auto module = std::make_shared<nn::Module>(entry.at("class").get<std::string>());
    if (name.empty()) {
      root = module;
    } else {
      const auto [parent, local] = split_last(name);
      STRATA_CHECK_ARG(modules.contains(parent), "module '{}' comes before its parent", name);
      modules.at(parent)->register_module(local, module);
    }
    modules[name] = module;
  }
  STRATA_CHECK_ARG(root != nullptr, "the model has no root module (name \"\")");
  for (const json& entry : model.at("tensors")) {
    const auto name = entry.at("name").get<std::string>();
    const auto [owner, local] = split_last(name);
    STRATA_CHECK_ARG(modules.contains(owner), "tensor '{}' has no module '{}'", name, owner);
    const Tensor tensor =
        Tensor::empty(entry.at("shape").get<Shape>(),
                      parse_dtype(entry.at("dtype").get<std::string>()), Device::meta());
    if (entry.at("kind") == "parameter") {
      modules.at(owner)->register_parameter(local, tensor);
    } else {
      modules.at(owner)->register_buffer(local, tensor, entry.value("persistent", true));
    }
  }
  // Every name of a tie group is bound to the tensor of its first name.
  for (const json& group : model.value("tied", json::array())) {
    nn::SlotPtr slot;
    for (const json& member : group) {
      const auto [owner, local] = split_last(member.get<std::string>());
      STRATA_CHECK_ARG(modules.contains(owner), "tied name '{}' has no module", member.dump());
      nn::Module& module = *modules.at(owner);
      if (!slot) {
        slot = module.parameter_slot(local);
      } else {
        module.bind_tensor(local, slot);
      }
    }
  }
  return root;
}

placement::MaxMemory max_memory_from_json(const json& pairs) {
  std::vector<placement::MaxMemory::Entry> entries;
  for (const json& pair : pairs) {
    const MapDevice device = device_from_json(pair.at(0));
    const json& value = pair.at(1);
    const placement::MemoryBudget budget = value.is_string()
                                               ? placement::MemoryBudget(value.get<std::string>())
                                               : placement::MemoryBudget(value.get<std::int64_t>());
    entries.emplace_back(device, budget.resolve(device));
  }
  return placement::MaxMemory(std::move(entries));
}

json max_memory_to_json(const placement::MaxMemory& memory) {
  json out = json::array();
  for (const auto& [device, bytes] : memory) {
    out.push_back(device.is_gpu() ? json{device.index(), bytes} : json{device.str(), bytes});
  }
  return out;
}

placement::DeviceMap device_map_from_json(const json& pairs) {
  placement::DeviceMap map;
  for (const json& pair : pairs) {
    map.emplace_back(pair.at(0).get<std::string>(), device_from_json(pair.at(1)));
  }
  return map;
}

std::string to_text(const json& value) { return value.dump(); }

std::optional<std::string> invalid_plan(nn::Module& model, const placement::DeviceMap& map,
                                        const placement::MaxMemory& budgets,
                                        const placement::SizeOptions& sizes) {
  std::unordered_map<std::string, MapDevice> keys;
  for (const auto& [key, device] : map) {
    if (!keys.emplace(key, device).second) return "entry '" + key + "' appears twice";
  }
  for (const auto& [key, device] : map) {
    if (key.empty()) continue;
    const auto [parent, local] = split_last(key);
    if (covering(keys, parent)) return "entry '" + key + "' lies inside another entry";
  }
  const placement::ModuleSizes counted = placement::compute_module_sizes(model, sizes);
  std::unordered_map<MapDevice, std::int64_t> used;
  for (const nn::TensorRef& ref : model.tensor_refs(true, true, true, false)) {
    const MapDevice* device = covering(keys, ref.name);
    if (!device) return "no entry covers tensor '" + ref.name + "'";
    used[*device] += counted[ref.name];  // 0 for the second name of a tied tensor
  }
  for (const auto& [device, bytes] : used) {
    if (device.is_disk()) continue;
    const std::optional<std::int64_t> budget = budgets.find(device);
    if (!budget) return fmt::format("{} bytes on {}, which has no budget", bytes, device);
    if (bytes > *budget) {
      return fmt::format("{} bytes on {}, over its budget of {}", bytes, device, *budget);
    }
  }
  for (const auto& group : placement::find_tied_parameters(model)) {
    const MapDevice first = *covering(keys, group.front());
    for (const std::string& name : group) {
      if (*covering(keys, name) != first) {
        return fmt::format("tied parameters '{}' ({}) and '{}' ({}) are on different devices",
                           group.front(), first, name, *covering(keys, name));
      }
    }
  }
  return std::nullopt;
}

}  // namespace strata::device_map_cases

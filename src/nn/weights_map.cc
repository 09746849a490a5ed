#include "strata/nn/weights_map.h"

#include <fmt/format.h>

#include "strata/core/error.h"

namespace strata::nn {

Tensor WeightsMap::at(std::string_view name) const {
  std::optional<Tensor> tensor = find(name);
  STRATA_CHECK(tensor.has_value(), CheckpointError,
               "{} has no tensor '{}': the offloaded weights do not match the module (was the "
               "weights map built from another model, or with another prefix?)",
               describe(), name);
  return std::move(*tensor);
}

// ---- InMemoryWeightsMap --------------------------------------------------------------------

InMemoryWeightsMap::InMemoryWeightsMap(NamedTensors tensors) {
  for (auto& [name, tensor] : tensors) insert(std::move(name), std::move(tensor));
}

void InMemoryWeightsMap::insert(std::string name, Tensor tensor) {
  STRATA_CHECK_ARG(tensor.defined(), "InMemoryWeightsMap::insert: the tensor for '{}' is undefined",
                   name);
  auto it = tensors_.find(name);
  if (it != tensors_.end()) {
    it->second = std::move(tensor);
    return;
  }
  names_.push_back(name);
  tensors_.emplace(std::move(name), std::move(tensor));
}

std::optional<Tensor> InMemoryWeightsMap::find(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return std::nullopt;
  return it->second;
}

bool InMemoryWeightsMap::contains(std::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

std::vector<std::string> InMemoryWeightsMap::keys() const { return names_; }

std::string InMemoryWeightsMap::describe() const {
  return fmt::format("in-memory weights map ({} tensors)", names_.size());
}

// ---- PrefixedWeightsMap --------------------------------------------------------------------

PrefixedWeightsMap::PrefixedWeightsMap(std::shared_ptr<const WeightsMap> inner, std::string prefix)
    : inner_(std::move(inner)), prefix_(std::move(prefix)) {
  STRATA_CHECK_ARG(inner_ != nullptr, "PrefixedWeightsMap('{}'): the inner map is null", prefix_);
}

std::string PrefixedWeightsMap::full_name(std::string_view name) const {
  std::string out;
  out.reserve(prefix_.size() + name.size());
  out.append(prefix_).append(name);
  return out;
}

std::optional<Tensor> PrefixedWeightsMap::find(std::string_view name) const {
  return inner_->find(full_name(name));
}

bool PrefixedWeightsMap::contains(std::string_view name) const {
  return inner_->contains(full_name(name));
}

std::vector<std::string> PrefixedWeightsMap::keys() const {
  std::vector<std::string> out;
  for (std::string& key : inner_->keys()) {
    if (key.starts_with(prefix_)) out.push_back(key.substr(prefix_.size()));
  }
  return out;
}

std::string PrefixedWeightsMap::describe() const {
  return fmt::format("'{}' view of the {}", prefix_, inner_->describe());
}

std::shared_ptr<const WeightsMap> with_prefix(std::shared_ptr<const WeightsMap> map,
                                              std::string_view prefix) {
  if (map == nullptr || prefix.empty()) return map;
  if (auto* view = dynamic_cast<const PrefixedWeightsMap*>(map.get())) {
    return std::make_shared<PrefixedWeightsMap>(view->inner(),
                                                view->prefix() + std::string(prefix));
  }
  return std::make_shared<PrefixedWeightsMap>(std::move(map), std::string(prefix));
}

}  // namespace strata::nn

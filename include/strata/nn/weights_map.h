#pragma once
// WeightsMap: where offload hooks read weights from, `name -> tensor`. This file has the
// interface, an in-memory implementation and prefixed views (a module's view of the model's
// map). Pinned-CPU and disk implementations come with the dispatch and checkpoint code.
//
// A lookup may load (a disk map reads the file), so callers fetch each tensor once per use.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/nn/module.h"

namespace strata::nn {

class WeightsMap {
 public:
  WeightsMap() = default;
  virtual ~WeightsMap() = default;
  WeightsMap(const WeightsMap&) = delete;
  WeightsMap& operator=(const WeightsMap&) = delete;

  // The tensor stored under `name`, or nullopt.
  virtual std::optional<Tensor> find(std::string_view name) const = 0;
  virtual bool contains(std::string_view name) const = 0;
  // Every name, in the map's order.
  virtual std::vector<std::string> keys() const = 0;
  virtual std::size_t size() const { return keys().size(); }
  // "in-memory weights map (9 tensors)", "'linear1.' view of ..."
  virtual std::string describe() const = 0;

  // find() or CheckpointError naming the key and the map.
  Tensor at(std::string_view name) const;
};

// Tensors held in memory, in insertion order.
class InMemoryWeightsMap final : public WeightsMap {
 public:
  InMemoryWeightsMap() = default;
  explicit InMemoryWeightsMap(NamedTensors tensors);

  // Inserts or replaces.
  void insert(std::string name, Tensor tensor);

  std::optional<Tensor> find(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::size_t size() const override { return names_.size(); }
  std::string describe() const override;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> names_;
  std::unordered_map<std::string, Tensor, Hash, std::equal_to<>> tensors_;
};

// The entries of `inner` whose names start with `prefix`, seen without it (the reference's
// PrefixedDataset). size() and keys() count only those entries (the reference returned the
// inner map's length).
class PrefixedWeightsMap final : public WeightsMap {
 public:
  PrefixedWeightsMap(std::shared_ptr<const WeightsMap> inner, std::string prefix);

  std::optional<Tensor> find(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::size_t size() const override { return keys().size(); }
  std::string describe() const override;

  const std::shared_ptr<const WeightsMap>& inner() const { return inner_; }
  const std::string& prefix() const { return prefix_; }

 private:
  std::string full_name(std::string_view name) const;

  std::shared_ptr<const WeightsMap> inner_;
  std::string prefix_;
};

// A view of `map` under `prefix` ("linear1."). An empty prefix returns `map` itself, and a view
// of a view is flattened into one view of the innermost map. A null map stays null.
std::shared_ptr<const WeightsMap> with_prefix(std::shared_ptr<const WeightsMap> map,
                                              std::string_view prefix);

}  // namespace strata::nn

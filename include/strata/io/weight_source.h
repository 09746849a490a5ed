#pragma once
// WeightSource: a read-only "name -> tensor" lookup over weights that live somewhere (a
// safetensors checkpoint, an offload folder, tensors in memory). This is the io-side shape of
// the reference's `weights_map` (a dict, OffloadedWeightsLoader, PrefixedDataset); the module
// layer adapts it to its own WeightsMap.
//
// Every implementation opens its files once (at construction or on first use) and is safe to
// read from several threads at once.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::io {

// Shape and dtype of a stored tensor, known without reading its bytes.
struct TensorMeta {
  DType dtype = DType::Float32;
  Shape shape;
  std::uint64_t nbytes() const;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;

  virtual bool contains(std::string_view name) const = 0;
  // The tensor, as a CPU tensor; file-backed sources return read-only views of a mapping (no
  // copy). Throws CheckpointError naming the source and the key when `name` is absent.
  virtual Tensor get(std::string_view name) const = 0;
  virtual TensorMeta meta(std::string_view name) const = 0;
  // Every name, in the order that reads the underlying files front to back where that applies.
  virtual std::vector<std::string> keys() const = 0;
  // One line naming the source for messages: "checkpoint '/m/model.safetensors'".
  virtual std::string describe() const = 0;

 protected:
  // The error every get()/meta() throws for an absent name.
  [[noreturn]] void throw_missing(std::string_view name) const;
};

// The weights of `base` whose names start with `prefix`, addressed without it: get("weight")
// reads base.get(prefix + "weight"). Unlike the reference's PrefixedDataset, keys() lists the
// stripped names and only those under the prefix (see docs/checkpoint-io.md).
class PrefixedWeights final : public WeightSource {
 public:
  PrefixedWeights(std::shared_ptr<const WeightSource> base, std::string prefix);

  bool contains(std::string_view name) const override;
  Tensor get(std::string_view name) const override;
  TensorMeta meta(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;
  const std::string& prefix() const { return prefix_; }

 private:
  std::string full_name(std::string_view name) const;

  std::shared_ptr<const WeightSource> base_;
  std::string prefix_;
};

// Tensors held in memory (a state dict).
class InMemoryWeights final : public WeightSource {
 public:
  explicit InMemoryWeights(std::map<std::string, Tensor, std::less<>> tensors,
                           std::string label = "in-memory weights");

  bool contains(std::string_view name) const override;
  Tensor get(std::string_view name) const override;
  TensorMeta meta(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override { return label_; }

 private:
  std::map<std::string, Tensor, std::less<>> tensors_;
  std::string label_;
};

// Several sources searched in order; the first that has a name wins (the reference's
// OffloadedWeightsLoader: the in-memory state dict first, then the offload folder). keys()
// lists each name once.
class ChainedWeights final : public WeightSource {
 public:
  explicit ChainedWeights(std::vector<std::shared_ptr<const WeightSource>> sources);

  bool contains(std::string_view name) const override;
  Tensor get(std::string_view name) const override;
  TensorMeta meta(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;

 private:
  const WeightSource* find(std::string_view name) const;

  std::vector<std::shared_ptr<const WeightSource>> sources_;
};

}  // namespace strata::io

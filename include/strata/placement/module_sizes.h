#pragma once
// What a module tree weighs, computed from shapes and dtypes alone (meta tensors suffice):
// Accelerate's compute_module_sizes, compute_module_total_buffer_size, find_tied_parameters and
// get_max_layer_size.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/nn/module.h"

namespace strata::placement {

// How tensors are counted.
//   - special_dtypes[name] sets the dtype of that tensor (full dotted name);
//   - otherwise `dtype`, when set, applies to floating-point tensors but never up-casts (a
//     float64 dtype leaves float32 weights at 4 bytes); integer and bool tensors keep theirs.
// A tied parameter counts once, under its first name in module order.
struct SizeOptions {
  std::optional<DType> dtype;
  std::unordered_map<std::string, DType> special_dtypes;
};

// Bytes per module and tensor name. Every tensor adds to its own name and to each prefix ("" is
// the whole model). A name with no entry (an empty module, or a parameter that duplicates a tied
// one) weighs 0, as in the reference's defaultdict.
class ModuleSizes {
 public:
  std::int64_t operator[](std::string_view name) const;
  bool contains(std::string_view name) const;
  std::int64_t total() const { return (*this)[""]; }
  // In the reference's order: tensor by tensor (parameters, then buffers), each prefix first
  // time it is seen.
  const std::vector<std::pair<std::string, std::int64_t>>& entries() const { return entries_; }

 private:
  friend ModuleSizes compute_module_sizes(nn::Module&, const SizeOptions&);
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::pair<std::string, std::int64_t>> entries_;
  std::unordered_map<std::string, std::size_t, Hash, std::equal_to<>> index_;
};

// The reference's compute_module_sizes: the bytes of every module and tensor of `model` (and ""
// for the whole model), counted as SizeOptions says.
ModuleSizes compute_module_sizes(nn::Module& model, const SizeOptions& options = {});

// Bytes of every buffer under `model` (persistent or not).
std::int64_t compute_module_total_buffer_size(nn::Module& model, const SizeOptions& options = {});

// Groups of parameter names bound to one tensor. Each group is sorted; groups are ordered by the
// position of their first member in module order (the reference's order varies between runs).
std::vector<std::vector<std::string>> find_tied_parameters(nn::Module& model);

// The largest "layer" among the model's direct parameters, buffers and children: a module with no
// children or whose class is in `no_split_module_classes`, found by descending into the others
// (whose own direct tensors are not counted, as in the reference). `names` lists every layer of
// that size, in module order.
struct MaxLayerSize {
  std::int64_t bytes = 0;
  std::vector<std::string> names;
};
MaxLayerSize get_max_layer_size(nn::Module& model,
                                const std::vector<std::string>& no_split_module_classes = {},
                                const SizeOptions& options = {});

}  // namespace strata::placement

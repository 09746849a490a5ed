#pragma once
// Layerwise casting: weights stored in a low-precision dtype (float8_e4m3fn) and computed in a
// higher one (bfloat16), one layer at a time.

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/nn/hooks.h"

namespace strata::nn {

// Casts a module's floating-point tensors to storage_dtype when attached, to compute_dtype for
// each forward, and back after it. The storage-dtype tensors are kept during the forward and put
// back afterwards, so the way back costs no conversion (the reference cast both ways, twice per
// forward). Integer and bool tensors are never cast. Detaching leaves the storage dtype: the
// precision lost by the first cast cannot be recovered.
class LayerwiseCastingHook : public ModelHook {
 public:
  LayerwiseCastingHook(DType storage_dtype, DType compute_dtype, bool non_blocking = false);

  DType storage_dtype() const { return storage_dtype_; }
  DType compute_dtype() const { return compute_dtype_; }

  void init_hook(Module& module) override;
  void pre_forward(Module& module, Args& args) override;
  void post_forward(Module& module, Value& output) override;
  std::string describe() const override;

 private:
  struct Saved {
    SlotPtr slot;
    Tensor stored;
    Tensor computed;
  };
  DType storage_dtype_;
  DType compute_dtype_;
  bool non_blocking_;
  std::vector<Saved> saved_;
};

// Regular expressions searched (not fully matched) in dotted module names. A single string is
// one pattern (the reference iterated a str character by character, bug B6).
class ModulePatterns {
 public:
  ModulePatterns(const char* pattern) : patterns_{pattern} {}
  ModulePatterns(std::string pattern) : patterns_{std::move(pattern)} {}
  ModulePatterns(std::initializer_list<std::string> patterns) : patterns_(patterns) {}
  ModulePatterns(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  std::vector<std::string> patterns_;
};

// Used when no skip pattern is given: norms, embeddings and position encodings, and the
// input/output projections of diffusion models, stay in their dtype.
const std::vector<std::string>& default_layerwise_casting_skip_patterns();

// Which layers attach_layerwise_casting_hooks skips, and whether its casts are asynchronous.
struct LayerwiseCastingOptions {
  // Subtrees whose dotted name matches one of these are skipped. Unset: the defaults above; an
  // empty list skips nothing.
  std::optional<ModulePatterns> skip_modules_pattern;
  // Subtrees whose class_name() is one of these are skipped.
  std::vector<std::string> skip_modules_classes;
  bool non_blocking = false;
};

// Walks the tree and appends a LayerwiseCastingHook to every layer that supports it
// (Module::supports_layerwise_casting: Linear), without visiting that layer's children. An
// invalid pattern is InvalidArgument naming it.
void attach_layerwise_casting_hooks(Module& module, DType storage_dtype, DType compute_dtype,
                                    const LayerwiseCastingOptions& options = {});

}  // namespace strata::nn

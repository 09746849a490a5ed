#pragma once
// The split execution policy's linear side (private to the placement layer; docs/
// hybrid-execution.md). A SplitLinearHook sits on each nn::Linear inside an offloaded unit that a
// split step divides; outside split steps it does nothing.

#include "strata/nn/hooks.h"

namespace strata::placement {

class PrefetchHook;

class SplitLinearHook final : public nn::ModelHook {
 public:
  SplitLinearHook(PrefetchHook* owner, std::size_t index) : owner_(owner), index_(index) {}
  PrefetchHook* owner() const { return owner_; }
  void pre_forward(nn::Module& module, nn::Args& args) override;
  void post_forward(nn::Module& module, nn::Value& output) override;
  std::string describe() const override { return "SplitLinearHook"; }

 private:
  PrefetchHook* owner_;  // the unit's hook; it removes this hook before it goes away
  std::size_t index_;    // into owner_->split_linears()
};

// Whether `module`'s hook is a SplitLinearHook (placed by the unit's own PrefetchHook).
bool is_split_linear_hook(const nn::Module& module);

}  // namespace strata::placement

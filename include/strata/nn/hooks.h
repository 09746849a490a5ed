#pragma once
// Forward hooks (the reference's hooks.py). A module holds at most one hook; Module::operator()
// runs hook.pre_forward(module, args), module.forward(args), hook.post_forward(module, output).
// "Removing" a hook simply drops it: forward() is never rewritten, so the plain forward is back.
//
// Hooks are inference-only: the reference's no_grad flag has no meaning here. Hooks keep
// per-call state (the input device), so one hooked tree runs one forward at a time.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "strata/nn/module.h"
#include "strata/nn/value.h"

namespace strata::nn {

// Where a Module::to call meets a hooked module (for ModelHook::check_move's message).
struct MoveContext {
  const Module& model;    // the module whose to() was called
  std::string_view name;  // the hooked module's dotted name under `model` ("" for itself)
};

// The base of every hook: each event does nothing unless overridden. Attach one with
// add_hook_to_module; Module::operator() calls pre_forward and post_forward around forward.
class ModelHook {
 public:
  ModelHook() = default;
  virtual ~ModelHook() = default;
  ModelHook(const ModelHook&) = delete;  // hooks carry state bound to one module
  ModelHook& operator=(const ModelHook&) = delete;

  // When the hook is attached (add_hook_to_module).
  virtual void init_hook(Module& module) {}
  // Before forward; may rewrite the arguments in place.
  virtual void pre_forward(Module& module, Args& args) {}
  // After forward; may rewrite the output in place.
  virtual void post_forward(Module& module, Value& output) {}
  // When the hook is removed (remove_hook_from_module).
  virtual void detach_hook(Module& module) {}
  // Before Module::to(device) moves anything, once per hooked module of the tree. A hook that
  // owns its module's placement (offloaded weights) throws InvalidArgument here, so a refused
  // move leaves the whole tree as it was.
  virtual void check_move(Module& module, Device device, const MoveContext& context) {}
  virtual std::string describe() const { return "ModelHook"; }
};

// Runs several hooks in list order for every event (post_forward is not reversed, as in the
// reference); each hook sees what the previous one produced.
class SequentialHook final : public ModelHook {
 public:
  explicit SequentialHook(std::vector<std::shared_ptr<ModelHook>> hooks);
  const std::vector<std::shared_ptr<ModelHook>>& hooks() const { return hooks_; }

  void init_hook(Module& module) override;
  void pre_forward(Module& module, Args& args) override;
  void post_forward(Module& module, Value& output) override;
  void detach_hook(Module& module) override;
  void check_move(Module& module, Device device, const MoveContext& context) override;
  std::string describe() const override;

 private:
  std::vector<std::shared_ptr<ModelHook>> hooks_;
};

// Attaches `hook` (runs its init_hook). Without `append` it replaces the current hook, whose
// detach_hook does NOT run (the reference's semantics). With `append` the result is one
// SequentialHook: the current hook(s) followed by `hook`, flattened. Unlike the reference, the
// current hook is not detached and re-initialised around the append (for an offload hook that
// is a full round trip of the weights for the same final state): only `hook` is initialised.
Module& add_hook_to_module(Module& module, std::shared_ptr<ModelHook> hook, bool append = false);

// Runs the hook's detach_hook and drops it; with `recurse`, also in every submodule.
Module& remove_hook_from_module(Module& module, bool recurse = false);
// Same, always recursive.
void remove_hook_from_submodules(Module& module);

// The module's hook if it is an H, or the first H inside its SequentialHook; else nullptr.
template <class H>
H* find_hook(const Module& module) {
  ModelHook* hook = module.hook();
  if (auto* typed = dynamic_cast<H*>(hook)) return typed;
  if (auto* sequence = dynamic_cast<SequentialHook*>(hook)) {
    for (const auto& inner : sequence->hooks()) {
      if (auto* typed = dynamic_cast<H*>(inner.get())) return typed;
    }
  }
  return nullptr;
}

}  // namespace strata::nn

#include "strata/nn/hooks.h"

#include "strata/core/error.h"

namespace strata::nn {

namespace detail {
struct HookAccess {
  static std::shared_ptr<ModelHook>& hook(Module& module) { return module.hook_; }
};
}  // namespace detail

SequentialHook::SequentialHook(std::vector<std::shared_ptr<ModelHook>> hooks)
    : hooks_(std::move(hooks)) {
  for (const auto& hook : hooks_) {
    STRATA_CHECK_ARG(hook != nullptr, "SequentialHook: hook list contains a null hook");
  }
}

void SequentialHook::init_hook(Module& module) {
  for (const auto& hook : hooks_) hook->init_hook(module);
}

void SequentialHook::pre_forward(Module& module, Args& args) {
  for (const auto& hook : hooks_) hook->pre_forward(module, args);
}

void SequentialHook::post_forward(Module& module, Value& output) {
  for (const auto& hook : hooks_) hook->post_forward(module, output);
}

void SequentialHook::detach_hook(Module& module) {
  for (const auto& hook : hooks_) hook->detach_hook(module);
}

void SequentialHook::check_move(Module& module, Device device, const MoveContext& context) {
  for (const auto& hook : hooks_) hook->check_move(module, device, context);
}

std::string SequentialHook::describe() const {
  std::string out = "SequentialHook(";
  for (std::size_t i = 0; i < hooks_.size(); ++i) {
    out += (i ? ", " : "") + hooks_[i]->describe();
  }
  return out + ")";
}

Module& add_hook_to_module(Module& module, std::shared_ptr<ModelHook> hook, bool append) {
  STRATA_CHECK_ARG(hook != nullptr, "add_hook_to_module({}): the hook is null",
                   module.class_name());
  std::shared_ptr<ModelHook>& slot = detail::HookAccess::hook(module);
  hook->init_hook(module);  // first: if it throws, the module keeps its current hook
  if (append && slot) {
    std::vector<std::shared_ptr<ModelHook>> chain;
    if (auto* sequence = dynamic_cast<SequentialHook*>(slot.get())) {
      chain = sequence->hooks();
    } else {
      chain.push_back(slot);
    }
    chain.push_back(std::move(hook));
    slot = std::make_shared<SequentialHook>(std::move(chain));
  } else {
    slot = std::move(hook);
  }
  return module;
}

Module& remove_hook_from_module(Module& module, bool recurse) {
  std::shared_ptr<ModelHook>& slot = detail::HookAccess::hook(module);
  if (slot) {
    const std::shared_ptr<ModelHook> hook = std::move(slot);
    slot.reset();
    hook->detach_hook(module);
  }
  if (recurse) {
    for (const auto& entry : module.direct_children()) {
      remove_hook_from_module(*entry.second, true);
    }
  }
  return module;
}

void remove_hook_from_submodules(Module& module) { remove_hook_from_module(module, true); }

}  // namespace strata::nn

#include "strata/nn/layerwise_casting.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

#include "strata/core/error.h"

namespace strata::nn {
namespace {

// The module's slots, each once, without building names (this runs on every forward).
void collect_slots(const Module& module, std::vector<SlotPtr>& out) {
  auto add = [&](const std::vector<TensorEntry>& entries) {
    for (const TensorEntry& e : entries) {
      if (std::find(out.begin(), out.end(), e.slot) == out.end()) out.push_back(e.slot);
    }
  };
  add(module.direct_parameters());
  add(module.direct_buffers());
  for (const auto& entry : module.direct_children()) collect_slots(*entry.second, out);
}

struct CastingWalk {
  DType storage_dtype;
  DType compute_dtype;
  const std::vector<std::regex>& patterns;
  const std::vector<std::string>& classes;
  bool non_blocking;

  void visit(Module& module, const std::string& name) const {
    if (std::find(classes.begin(), classes.end(), module.class_name()) != classes.end()) return;
    for (const std::regex& pattern : patterns) {
      if (std::regex_search(name, pattern)) return;
    }
    if (module.supports_layerwise_casting()) {
      add_hook_to_module(
          module,
          std::make_shared<LayerwiseCastingHook>(storage_dtype, compute_dtype, non_blocking),
          /*append=*/true);
      return;
    }
    for (const auto& [child_name, child] : module.direct_children()) {
      visit(*child, name.empty() ? child_name : name + "." + child_name);
    }
  }
};

}  // namespace

LayerwiseCastingHook::LayerwiseCastingHook(DType storage_dtype, DType compute_dtype,
                                           bool non_blocking)
    : storage_dtype_(storage_dtype), compute_dtype_(compute_dtype), non_blocking_(non_blocking) {
  STRATA_CHECK_ARG(is_floating_point(storage_dtype) && is_floating_point(compute_dtype),
                   "LayerwiseCastingHook: storage ({}) and compute ({}) dtypes must be "
                   "floating-point",
                   storage_dtype, compute_dtype);
}

void LayerwiseCastingHook::init_hook(Module& module) { module.to(storage_dtype_); }

void LayerwiseCastingHook::pre_forward(Module& module, Args&) {
  std::vector<SlotPtr> slots;
  collect_slots(module, slots);
  saved_.clear();
  for (SlotPtr& slot : slots) {
    const Tensor stored = slot->tensor();
    if (!is_floating_point(stored.dtype()) || stored.dtype() == compute_dtype_) continue;
    Tensor computed = stored.to(stored.device(), compute_dtype_, non_blocking_);
    slot->set(computed);
    saved_.push_back(Saved{std::move(slot), stored, std::move(computed)});
  }
}

void LayerwiseCastingHook::post_forward(Module&, Value&) {
  for (Saved& s : saved_) {
    const Tensor& now = s.slot->tensor();
    const bool untouched = now.dtype() == s.computed.dtype() && now.shape() == s.computed.shape() &&
                           now.device() == s.computed.device() &&
                           now.storage().is_same(s.computed.storage());
    // Put the stored tensor back as it was; if something replaced the weight meanwhile (an
    // offload hook), cast what is there now.
    s.slot->set(untouched ? s.stored : now.to(now.device(), storage_dtype_, non_blocking_));
  }
  saved_.clear();
}

std::string LayerwiseCastingHook::describe() const {
  return fmt::format("LayerwiseCastingHook(storage_dtype={}, compute_dtype={}, non_blocking={})",
                     storage_dtype_, compute_dtype_, non_blocking_);
}

const std::vector<std::string>& default_layerwise_casting_skip_patterns() {
  static const std::vector<std::string> patterns = {"norm",     "emb",       "pos_enc",
                                                    "position", "^proj_in$", "^proj_out$"};
  return patterns;
}

void attach_layerwise_casting_hooks(Module& module, DType storage_dtype, DType compute_dtype,
                                    const LayerwiseCastingOptions& options) {
  const std::vector<std::string>& sources = options.skip_modules_pattern
                                                ? options.skip_modules_pattern->patterns()
                                                : default_layerwise_casting_skip_patterns();
  std::vector<std::regex> patterns;
  for (const std::string& source : sources) {
    try {
      patterns.emplace_back(source);
    } catch (const std::regex_error& e) {
      STRATA_THROW(InvalidArgument,
                   "attach_layerwise_casting_hooks: skip pattern '{}' is not a valid regular "
                   "expression ({})",
                   source, e.what());
    }
  }
  CastingWalk{storage_dtype, compute_dtype, patterns, options.skip_modules_classes,
              options.non_blocking}
      .visit(module, "");
}

}  // namespace strata::nn

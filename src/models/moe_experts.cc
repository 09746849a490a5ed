#include "moe_experts.h"

#include "strata/models/layers.h"
#include "strata/ops.h"
#include "strata/placement/prefetch.h"

namespace strata::models::detail {
namespace {

// The stored weight of a bias-free projection whose only offloaded tensor is its weight, or an
// undefined tensor (resident, not hooked by a PrefetchHook, or shaped otherwise).
Tensor stored_weight(nn::Module& projection, placement::PrefetchHook*& hook, bool& cast) {
  hook = dynamic_cast<placement::PrefetchHook*>(projection.hook());
  if (hook == nullptr) return {};
  const auto& offloaded = hook->offloaded_tensors();
  if (offloaded.size() != 1 || offloaded.front().name != "weight" || offloaded.front().shared) {
    return {};
  }
  const Tensor placeholder = offloaded.front().slot->tensor();
  Tensor stored = hook->stored(offloaded.front());
  if (!stored.defined()) return {};
  if (stored.dtype() != placeholder.dtype()) {
    stored = ops::cast(stored, placeholder.dtype());
    cast = true;
  }
  return stored;
}

const char* const* projection_names(bool mixtral_naming) {
  static const char* const kLlama[] = {"gate_proj", "up_proj", "down_proj"};
  static const char* const kMixtral[] = {"w1", "w3", "w2"};
  return mixtral_naming ? kMixtral : kLlama;
}

}  // namespace

ExpertSource expert_source(nn::Module& expert, bool mixtral_naming) {
  const char* const* names = projection_names(mixtral_naming);
  ExpertSource out;
  for (int i = 0; i < 3; ++i) {
    placement::PrefetchHook* hook = nullptr;
    Tensor w = stored_weight(expert.get_submodule(names[i]), hook, out.cast);
    if (!w.defined()) return {};  // any projection not offloaded this way: call the expert
    if (i == 0) out.hook = hook;
    out.bytes += static_cast<std::int64_t>(w.nbytes());
    out.stored.push_back(std::move(w));
  }
  out.offloaded = true;
  return out;
}

const ExpertSource& ExpertSources::get(std::int64_t index, nn::Module& expert,
                                       bool mixtral_naming) {
  const auto at = static_cast<std::size_t>(index);
  if (entries_.size() <= at) entries_.resize(at + 1);
  Entry& entry = entries_[at];
  const char* const* names = projection_names(mixtral_naming);
  std::array<const nn::ModelHook*, 3> hooks{};
  for (std::size_t i = 0; i < 3; ++i) hooks[i] = expert.get_submodule(names[i]).hook();
  if (entry.kept && entry.hooks == hooks) return entry.source;
  ExpertSource source = expert_source(expert, mixtral_naming);
  entry.kept = !source.cast;
  entry.hooks = hooks;
  if (entry.kept) {
    entry.source = std::move(source);
    return entry.source;
  }
  entry.source = {};
  last_ = std::move(source);
  return last_;
}

Tensor expert_forward(const std::vector<Tensor>& weights, Activation activation, const Tensor& x) {
  const Tensor gate = apply_activation(activation, ops::linear(x, weights[0]));
  return ops::linear(ops::mul(gate, ops::linear(x, weights[1])), weights[2]);
}

}  // namespace strata::models::detail

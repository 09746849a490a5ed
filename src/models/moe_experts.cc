#include "moe_experts.h"

#include "strata/models/layers.h"
#include "strata/models/quant_linear.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"
#include "strata/placement/prefetch.h"

namespace strata::models::detail {
namespace {

// The quantized formats whose packed tensors the op takes without a check of their values
// (GPTQ's g_idx and compressed-tensors' weight_shape are checked by QuantizedLinear once per
// layer: such experts are called through their hooks instead).
bool computes_from_stored(const QuantizedLinear& q) {
  return q.config().format == ops::QuantFormat::FP8 || q.config().format == ops::QuantFormat::AWQ;
}

// Appends the stored tensors of `projection` to `out` when every one of its parameters is
// offloaded by a PrefetchHook (and nothing else is): false otherwise (resident, hooked otherwise,
// a tied tensor, a buffer, a kind of module the expert path does not compute).
bool stored_tensors(nn::Module& projection, ExpertSource& out, ProjectionSource& where) {
  auto* hook = dynamic_cast<placement::PrefetchHook*>(projection.hook());
  if (hook == nullptr) return false;
  where.quantized = dynamic_cast<const QuantizedLinear*>(&projection);
  if (where.quantized != nullptr ? !computes_from_stored(*where.quantized)
                                 : dynamic_cast<const nn::Linear*>(&projection) == nullptr) {
    return false;
  }
  const auto& offloaded = hook->offloaded_tensors();
  if (offloaded.size() != projection.named_parameters(false, false).size() ||
      !projection.named_buffers(false, false).empty()) {
    return false;
  }
  where.first = out.stored.size();
  for (const auto& tensor : offloaded) {
    if (tensor.shared || !projection.has_parameter(tensor.name)) return false;
    const Tensor placeholder = tensor.slot->tensor();
    Tensor stored = hook->stored(tensor);
    if (!stored.defined()) return false;
    if (stored.dtype() != placeholder.dtype()) {
      stored = ops::cast(stored, placeholder.dtype());
      out.cast = true;
    }
    out.bytes += static_cast<std::int64_t>(stored.nbytes());
    where.names.push_back(tensor.name);
    out.stored.push_back(std::move(stored));
  }
  if (out.stored.size() == where.first) return false;
  if (out.hook == nullptr) out.hook = hook;
  return true;
}

const char* const* projection_names(bool mixtral_naming) {
  static const char* const kLlama[] = {"gate_proj", "up_proj", "down_proj"};
  static const char* const kMixtral[] = {"w1", "w3", "w2"};
  return mixtral_naming ? kMixtral : kLlama;
}

// One projection of x with its tensors from `tensors`.
Tensor project(const ProjectionSource& p, const std::vector<Tensor>& tensors, const Tensor& x) {
  const auto find = [&](const std::string& name) -> const Tensor* {
    for (std::size_t i = 0; i < p.names.size(); ++i) {
      if (p.names[i] == name) return &tensors[p.first + i];
    }
    return nullptr;
  };
  const Tensor* bias = find("bias");
  if (p.quantized != nullptr) {
    const ops::QuantizedWeight w = p.quantized->quantized_weight([&](const std::string& name) {
      const Tensor* t = find(name);
      return t != nullptr ? *t : Tensor();
    });
    return bias != nullptr ? ops::quantized_linear(x, w, *bias) : ops::quantized_linear(x, w);
  }
  const Tensor& weight = *find("weight");
  return bias != nullptr ? ops::linear(x, weight, *bias) : ops::linear(x, weight);
}

}  // namespace

ExpertSource expert_source(nn::Module& expert, bool mixtral_naming) {
  const char* const* names = projection_names(mixtral_naming);
  ExpertSource out;
  for (std::size_t i = 0; i < 3; ++i) {
    // Any projection not offloaded this way: call the expert (through its hooks).
    if (!stored_tensors(expert.get_submodule(names[i]), out, out.projections[i])) return {};
  }
  out.offloaded = true;
  return out;
}

std::shared_ptr<const ExpertSource> ExpertSources::get(std::int64_t index, nn::Module& expert,
                                                       bool mixtral_naming) {
  const auto at = static_cast<std::size_t>(index);
  if (entries_.size() <= at) entries_.resize(at + 1);
  Entry& entry = entries_[at];
  const char* const* names = projection_names(mixtral_naming);
  std::array<const nn::ModelHook*, 3> hooks{};
  for (std::size_t i = 0; i < 3; ++i) hooks[i] = expert.get_submodule(names[i]).hook();
  if (entry.source && entry.hooks == hooks) return entry.source;
  auto source = std::make_shared<const ExpertSource>(expert_source(expert, mixtral_naming));
  entry.hooks = hooks;
  entry.source = source->cast ? nullptr : source;
  return source;
}

Tensor expert_forward(const ExpertSource& source, const std::vector<Tensor>& tensors,
                      Activation activation, const Tensor& x) {
  const auto& [gate_proj, up_proj, down_proj] = source.projections;
  const Tensor gate = apply_activation(activation, project(gate_proj, tensors, x));
  return project(down_proj, tensors, ops::mul(gate, project(up_proj, tensors, x)));
}

}  // namespace strata::models::detail

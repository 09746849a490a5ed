#include "moe_experts.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "strata/core/error.h"
#include "strata/core/parallel.h"
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

// Output features per slice unit: linear_matvec's partition unit (whole cache lines of y).
constexpr std::int64_t kSliceAlign = 64;
// Rows up to which the cpu linear takes the matvec kernels (below AMX's 5 rows, whose blocking
// is its own): one dot product per output, whatever the slice.
constexpr std::int64_t kSplitMaxRows = 4;

bool split_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("STRATA_MOE_SPLIT");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

// An expert whose projections are plain weights (no bias, not quantized) on few rows.
bool splittable(const ExpertSource& source, const Tensor& rows) {
  if (rows.size(0) > kSplitMaxRows) return false;
  return std::all_of(
      source.projections.begin(), source.projections.end(), [](const ProjectionSource& p) {
        return p.quantized == nullptr && p.names.size() == 1 && p.names.front() == "weight";
      });
}

// A slice [begin, begin + size) of the output features of expert `expert`'s projection.
struct Slice {
  std::size_t expert;
  std::int64_t begin, size;
};

// Each expert's `features(i)` output features in `parts` slices of whole kSliceAlign blocks.
template <typename Features>
std::vector<Slice> slices(std::size_t count, std::int64_t parts, Features features) {
  std::vector<Slice> out;
  for (std::size_t i = 0; i < count; ++i) {
    const std::int64_t n = features(i);
    const std::int64_t blocks = (n + kSliceAlign - 1) / kSliceAlign;
    const std::int64_t per = std::max<std::int64_t>(1, (blocks + parts - 1) / parts) * kSliceAlign;
    for (std::int64_t b = 0; b < n; b += per) out.push_back({i, b, std::min(per, n - b)});
  }
  return out;
}

}  // namespace

bool cpu_experts_split(const std::vector<const ExpertSource*>& sources,
                       const std::vector<Tensor>& rows, std::int64_t threads) {
  if (sources.empty() || !split_enabled()) return false;
  if (threads / static_cast<std::int64_t>(sources.size()) < 2) return false;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    if (!splittable(*sources[i], rows[i])) return false;
  }
  return true;
}

std::vector<Tensor> cpu_experts_forward(const std::vector<const ExpertSource*>& sources,
                                        const std::vector<const std::vector<Tensor>*>& tensors,
                                        Activation activation, const std::vector<Tensor>& rows,
                                        std::int64_t threads) {
  const std::size_t count = sources.size();
  std::vector<Tensor> out(count);
  if (count == 0) return out;
  if (threads <= 0) threads = num_threads();
  const std::int64_t parts = threads / static_cast<std::int64_t>(count);
  if (!cpu_experts_split(sources, rows, threads)) {
    parallel_for(static_cast<std::int64_t>(count), 1, [&](std::int64_t begin, std::int64_t end) {
      for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i) {
        out[i] = expert_forward(*sources[i], *tensors[i], activation, rows[i]);
      }
    });
    return out;
  }
  const auto weight = [&](std::size_t i, int projection) -> const Tensor& {
    return (*tensors[i])[sources[i]->projections[static_cast<std::size_t>(projection)].first];
  };
  // gate and up by slices of the intermediate features, then down by slices of the hidden ones.
  std::vector<Tensor> gate(count), up(count);
  for (std::size_t i = 0; i < count; ++i) {
    const Shape shape{rows[i].size(0), weight(i, 0).size(0)};
    gate[i] = Tensor::empty(shape, rows[i].dtype(), Device::cpu());
    up[i] = Tensor::empty(shape, rows[i].dtype(), Device::cpu());
    out[i] = Tensor::empty({rows[i].size(0), weight(i, 2).size(0)}, rows[i].dtype(), Device::cpu());
  }
  const std::vector<Slice> first =
      slices(count, parts, [&](std::size_t i) { return weight(i, 0).size(0); });
  parallel_for(static_cast<std::int64_t>(first.size()), 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t) {
      const Slice& s = first[static_cast<std::size_t>(t)];
      const Tensor& x = rows[s.expert];
      gate[s.expert]
          .narrow(1, s.begin, s.size)
          .copy_(ops::linear(x, weight(s.expert, 0).narrow(0, s.begin, s.size)));
      up[s.expert]
          .narrow(1, s.begin, s.size)
          .copy_(ops::linear(x, weight(s.expert, 1).narrow(0, s.begin, s.size)));
    }
  });
  std::vector<Tensor> hidden(count);
  parallel_for(static_cast<std::int64_t>(count), 1, [&](std::int64_t b, std::int64_t e) {
    for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
      hidden[i] = ops::mul(apply_activation(activation, gate[i]), up[i]);
    }
  });
  const std::vector<Slice> second =
      slices(count, parts, [&](std::size_t i) { return weight(i, 2).size(0); });
  parallel_for(static_cast<std::int64_t>(second.size()), 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t) {
      const Slice& s = second[static_cast<std::size_t>(t)];
      out[s.expert]
          .narrow(1, s.begin, s.size)
          .copy_(ops::linear(hidden[s.expert], weight(s.expert, 2).narrow(0, s.begin, s.size)));
    }
  });
  return out;
}

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

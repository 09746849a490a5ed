#include "moe_experts.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <typeinfo>

#include "cpu/expert_gemv.h"
#include "models/expert_routing.h"
#include "strata/core/error.h"
#include "strata/core/parallel.h"
#include "strata/models/layers.h"
#include "strata/models/quant_linear.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"
#include "strata/placement/execution_policy.h"
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

// Rows up to which the cpu linear takes the matvec kernels (below AMX's 5 rows, whose blocking
// is its own): one dot product per output, whatever the block.
constexpr std::int64_t kSplitMaxRows = placement::kCpuExpertQueueRows;

bool split_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("STRATA_MOE_SPLIT");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

// A projection that is one plain weight: not quantized, no bias.
bool plain_weight(const ProjectionSource& p) {
  return p.quantized == nullptr && p.names.size() == 1 && p.names.front() == "weight";
}

// An expert whose projections are plain contiguous weights (no bias, not quantized) of x's dtype
// on few rows.
bool splittable(const ExpertSource& source, const std::vector<Tensor>& tensors,
                const Tensor& rows) {
  if (rows.size(0) > kSplitMaxRows || !rows.is_cpu()) return false;
  return std::all_of(source.projections.begin(), source.projections.end(),
                     [&](const ProjectionSource& p) {
                       if (!plain_weight(p)) return false;
                       const Tensor& w = tensors[p.first];
                       return w.is_cpu() && w.is_contiguous() && w.dtype() == rows.dtype();
                     });
}

}  // namespace

bool cpu_experts_split(const std::vector<const ExpertSource*>& sources,
                       const std::vector<const std::vector<Tensor>*>& tensors,
                       const std::vector<Tensor>& rows, std::int64_t threads) {
  if (sources.empty() || !split_enabled() || threads < 2) return false;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    if (!splittable(*sources[i], *tensors[i], rows[i])) return false;
  }
  return true;
}

void cpu_experts_forward(const std::vector<const ExpertSource*>& sources,
                         const std::vector<const std::vector<Tensor>*>& tensors,
                         Activation activation, const std::vector<Tensor>& rows,
                         const std::vector<Tensor>& weights, const std::vector<Tensor>& into,
                         std::int64_t threads, const std::function<void()>& on_caller) {
  const std::size_t count = sources.size();
  STRATA_ASSERT(tensors.size() == count && rows.size() == count && into.size() == count &&
                    (weights.empty() || weights.size() == count),
                "cpu experts: {} sources, {} tensor lists, {} rows, {} weights, {} outputs", count,
                tensors.size(), rows.size(), weights.size(), into.size());
  if (count == 0) {
    if (on_caller) on_caller();
    return;
  }
  if (threads <= 0) threads = num_threads();
  if (!cpu_experts_split(sources, tensors, rows, threads)) {
    if (on_caller) on_caller();
    parallel_for(static_cast<std::int64_t>(count), 1, [&](std::int64_t begin, std::int64_t end) {
      for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i) {
        const Tensor out = expert_forward(*sources[i], *tensors[i], activation, rows[i]);
        if (weights.empty()) {
          into[i].copy_(out);
        } else {
          weigh_rows(out, weights[i], into[i]);
        }
      }
    });
    return;
  }
  // One queue of blocks over every expert's products (cpu/expert_gemv.h): gate and up, the
  // activation once an expert's are whole (the module's ops: the same numbers), then down with
  // the routing weight applied as each block is stored.
  std::vector<cpu::CpuExpertJob> jobs(count);
  for (std::size_t i = 0; i < count; ++i) {
    cpu::CpuExpertJob& job = jobs[i];
    const auto weight = [&](int projection) -> const Tensor& {
      return (*tensors[i])[sources[i]->projections[static_cast<std::size_t>(projection)].first];
    };
    job.x = rows[i].contiguous();
    job.gate = weight(0);
    job.up = weight(1);
    job.down = weight(2);
    const Shape shape{rows[i].size(0), job.gate.size(0)};
    job.gate_out = Tensor::empty(shape, rows[i].dtype(), Device::cpu());
    job.up_out = Tensor::empty(shape, rows[i].dtype(), Device::cpu());
    const bool direct = into[i].is_contiguous() && into[i].dtype() == rows[i].dtype();
    job.out = direct ? into[i] : Tensor::empty(into[i].shape(), rows[i].dtype(), Device::cpu());
    if (!weights.empty()) {
      job.weights = weights[i].to(Device::cpu(), DType::Float32).contiguous().to_vector<float>();
    }
  }
  cpu::cpu_experts_gemv(
      jobs,
      [&](std::size_t i) {
        jobs[i].hidden = ops::mul(apply_activation(activation, jobs[i].gate_out), jobs[i].up_out);
      },
      threads, cpu::expert_blocks(), on_caller);
  for (std::size_t i = 0; i < count; ++i) {
    if (jobs[i].out.data_ptr() != into[i].data_ptr()) into[i].copy_(jobs[i].out);
  }
}

std::vector<Tensor> cpu_experts_forward(const std::vector<const ExpertSource*>& sources,
                                        const std::vector<const std::vector<Tensor>*>& tensors,
                                        Activation activation, const std::vector<Tensor>& rows,
                                        std::int64_t threads) {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Tensor& w = (*tensors[i])[sources[i]->projections[2].first];
    out.push_back(Tensor::empty({rows[i].size(0), w.size(0)}, rows[i].dtype(), Device::cpu()));
  }
  cpu_experts_forward(sources, tensors, activation, rows, {}, out, threads);
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

ExpertSource resident_source(nn::Module& expert, bool mixtral_naming, Device device) {
  if (!nn::hook_passes_through(expert, device) || !expert.named_buffers().empty()) return {};
  for (const auto& [name, child] : expert.named_children()) {
    if (!nn::hook_passes_through(*child, device)) return {};
  }
  const char* const* names = projection_names(mixtral_naming);
  ExpertSource out;
  for (std::size_t i = 0; i < 3; ++i) {
    nn::Module& projection = expert.get_submodule(names[i]);
    // Exactly a Linear: a subclass (RowParallelLinear's all-reduce) computes more than its product.
    if (typeid(projection) != typeid(nn::Linear)) return {};
    ProjectionSource& where = out.projections[i];
    where.first = out.stored.size();
    for (const auto& [name, tensor] : projection.named_parameters(false, false)) {
      if (tensor.device() != device) return {};
      out.bytes += static_cast<std::int64_t>(tensor.nbytes());
      where.names.push_back(name);
      out.stored.push_back(tensor);
    }
  }
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
  // Plain bias-free gate and up under SiLU: ops::swiglu, the same numbers (one launch on a GPU).
  if (activation == Activation::SiLU && plain_weight(gate_proj) && plain_weight(up_proj)) {
    return project(down_proj, tensors,
                   ops::swiglu(x, tensors[gate_proj.first], tensors[up_proj.first]));
  }
  const Tensor gate = apply_activation(activation, project(gate_proj, tensors, x));
  return project(down_proj, tensors, ops::mul(gate, project(up_proj, tensors, x)));
}

bool groupable(const ExpertSource& source) {
  return std::all_of(source.projections.begin(), source.projections.end(), plain_weight);
}

Tensor grouped_experts_forward(const std::vector<const ExpertSource*>& sources,
                               const std::vector<const std::vector<Tensor>*>& tensors,
                               Activation activation, const Tensor& x,
                               const std::vector<std::int64_t>& rows) {
  // The three projections' weights of every expert, in the experts' order.
  std::array<std::vector<Tensor>, 3> weights;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    STRATA_ASSERT(groupable(*sources[i]), "grouped_experts_forward: expert {} is not groupable", i);
    for (std::size_t p = 0; p < 3; ++p) {
      weights[p].push_back((*tensors[i])[sources[i]->projections[p].first]);
    }
  }
  const Tensor gate = apply_activation(activation, ops::grouped_linear(x, weights[0], rows));
  return ops::grouped_linear(ops::mul(gate, ops::grouped_linear(x, weights[1], rows)), weights[2],
                             rows);
}

}  // namespace strata::models::detail

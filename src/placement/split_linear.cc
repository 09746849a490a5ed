// The split execution policy (execution_policy.h), hook side: which linear layers of a unit are
// split, and their forward in a split step. The scheduler binds rows [r, n) of each split weight
// (and bias) on the execution device (streamed there; on a cpu execution device a view of the
// stored rows), so nn::Linear::forward computes those rows unchanged; around it this code copies
// the input to the cpu once per distinct input, computes rows [0, r) from the stored weights
// after the execution device's rows are queued (so both work at once), and joins the two on the
// execution device: [cpu rows | device rows] is the full output in order.

#include "split_linear.h"

#include <algorithm>
#include <cmath>

#include "prefetch_unit.h"
#include "strata/core/error.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

std::int64_t split_cpu_rows(std::int64_t rows, double fraction) {
  if (rows < 2) return 0;
  const double wanted = std::clamp(fraction, 0.0, 1.0) * static_cast<double>(rows);
  if (rows >= 64) {  // whole 16-row kernel blocks on both sides
    return std::clamp<std::int64_t>(std::llround(wanted / 16.0) * 16, 16, (rows - 16) / 16 * 16);
  }
  return std::clamp<std::int64_t>(std::llround(wanted), 1, rows - 1);
}

bool is_split_linear_hook(const nn::Module& module) {
  return nn::find_hook<SplitLinearHook>(module) != nullptr;
}

void SplitLinearHook::pre_forward(nn::Module&, nn::Args& args) {
  if (owner_->split_step()) owner_->split_begin(index_, args);
}

void SplitLinearHook::post_forward(nn::Module&, nn::Value& output) {
  if (owner_->split_step()) owner_->split_end(index_, output);
}

namespace {

// Linear layers whose weight their parent also reads directly, outside their forward: a split
// step binds only the device's rows, so these stay whole. DeepSeek's MLA absorbs kv_b_proj's
// weight into the query and output (DeepseekAttention::absorbed_kv_b).
bool weight_read_directly(std::string_view name) {
  return name == "kv_b_proj" || name.ends_with(".kv_b_proj");
}

int offloaded_index(const std::vector<nn::AlignDevicesHook::OffloadedTensor>& tensors,
                    const nn::TensorSlot* slot) {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].slot.get() == slot && !tensors[i].shared) return static_cast<int>(i);
  }
  return -1;
}

const Tensor& first_tensor(const nn::Args& args) {
  for (const nn::Value& v : args.positional) {
    if (v.is_tensor()) return v.tensor();
  }
  STRATA_THROW(InternalError, "split linear: the forward has no tensor input");
}

}  // namespace

const std::vector<PrefetchHook::SplitLinear>& PrefetchHook::split_linears() {
  if (split_linears_) return *split_linears_;
  split_linears_.emplace();
  if (module_ == nullptr) return *split_linears_;
  const auto& tensors = offloaded_tensors();
  for (const auto& [name, module] : module_->named_modules()) {
    auto* linear = dynamic_cast<nn::Linear*>(module);
    if (linear == nullptr) continue;
    if (!name.empty() && module->hook() != nullptr) continue;  // its own hook places it
    if (weight_read_directly(name)) continue;
    SplitLinear entry;
    entry.module = module;
    entry.weight = offloaded_index(tensors, linear->parameter_slot("weight").get());
    if (entry.weight < 0) continue;  // resident or tied: nothing to split
    const Tensor& weight = tensors[static_cast<std::size_t>(entry.weight)].slot->tensor();
    if (weight.dim() != 2 || weight.size(0) < 2) continue;
    entry.rows = weight.size(0);
    if (linear->has_bias()) {
      entry.bias = offloaded_index(tensors, linear->parameter_slot("bias").get());
      if (entry.bias < 0) continue;  // a bias kept elsewhere cannot be cut with the weight
    }
    split_linears_->push_back(entry);
  }
  for (std::size_t i = 0; i < split_linears_->size(); ++i) {
    nn::Module* linear = (*split_linears_)[i].module;
    if (linear != module_)
      nn::add_hook_to_module(*linear, std::make_shared<SplitLinearHook>(this, i));
  }
  split_pending_.assign(split_linears_->size(), Tensor());
  return *split_linears_;
}

void PrefetchHook::detach_split_hooks() {
  if (split_linears_) {
    for (const SplitLinear& linear : *split_linears_) {
      if (linear.module == module_) continue;
      const auto* hook = nn::find_hook<SplitLinearHook>(*linear.module);
      if (hook != nullptr && hook->owner() == this) nn::remove_hook_from_module(*linear.module);
    }
  }
  split_linears_.reset();
  clear_split_step();
}

void PrefetchHook::clear_split_step() {
  split_step_ = false;
  std::fill(split_pending_.begin(), split_pending_.end(), Tensor());
  split_copied_.clear();
}

void PrefetchHook::split_begin(std::size_t linear, const nn::Args& args) {
  const Tensor& x = first_tensor(args);
  Tensor on_cpu;
  for (const auto& [device_input, copy] : split_copied_) {
    if (same_view(device_input, x)) on_cpu = copy;
  }
  if (!on_cpu.defined()) {
    on_cpu = x.to(Device::cpu());
    split_copied_.emplace_back(x, on_cpu);
    ++scheduler_->stats_.split_inputs_copied;
  }
  split_pending_.at(linear) = std::move(on_cpu);
}

void PrefetchHook::split_end(std::size_t linear, nn::Value& output) {
  const SplitLinear& entry = split_linears().at(linear);
  const Tensor x = std::exchange(split_pending_.at(linear), Tensor());
  STRATA_CHECK(x.defined(), InternalError, "split linear {} of {}: no input was taken", linear,
               module_class());
  const Tensor& weight = scheduler_->split_cpu_part(*this, static_cast<std::size_t>(entry.weight));
  const Tensor cpu_rows =
      entry.bias >= 0
          ? ops::linear(x, weight,
                        scheduler_->split_cpu_part(*this, static_cast<std::size_t>(entry.bias)))
          : ops::linear(x, weight);
  const Tensor device_rows = output.tensor();
  Shape shape = device_rows.shape();
  const std::int64_t r = cpu_rows.size(-1);
  shape.back() += r;
  Tensor joined = Tensor::empty(shape, device_rows.dtype(), device_rows.device());
  const Tensor front = joined.narrow(-1, 0, r);
  if (front.is_contiguous()) {  // one token (decode): one host-to-device copy into place
    front.copy_(cpu_rows.to(device_rows.dtype()));
  } else {
    front.copy_(cpu_rows.to(device_rows.device(), device_rows.dtype()));
  }
  joined.narrow(-1, r, device_rows.size(-1)).copy_(device_rows);
  output = nn::Value(std::move(joined));
  ++scheduler_->stats_.split_linears;
}

}  // namespace strata::placement

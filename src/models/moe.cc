#include "strata/models/moe.h"

#include <vector>

#include "models/attention.h"
#include "models/expert_routing.h"
#include "models/moe_experts.h"
#include "strata/core/error.h"
#include "strata/models/decoder.h"
#include "strata/ops.h"
#include "strata/placement/prefetch.h"

namespace strata::models {

namespace {

// sigmoid(x) for a [tokens, 1] gate: softmax over [x, 0] (there is no sigmoid op; the linear
// with weight [[1], [0]] writes x and an exact 0, and softmax([x, 0])[0] = 1 / (1 + e^-x)).
Tensor sigmoid_column(const Tensor& x) {
  const Tensor pad =
      Tensor::from_vector(std::vector<float>{1.0f, 0.0f}, {2, 1}).to(x.device(), x.dtype());
  return ops::softmax(ops::linear(x, pad), -1).narrow(1, 0, 1).contiguous();
}

}  // namespace

SparseMoeBlock::SparseMoeBlock(const TransformerConfig& c, DType dtype, const TensorParallel& tp)
    : nn::Module(c.class_name("SparseMoeBlock")),
      num_experts_(c.num_experts),
      top_k_(c.num_experts_per_tok),
      norm_topk_prob_(c.norm_topk_prob),
      round_weights_(c.architecture != Architecture::Mixtral),
      mixtral_naming_(c.architecture == Architecture::Mixtral),
      activation_(c.activation),
      tp_(tp) {
  gate_ = register_module("gate",
                          std::make_shared<nn::Linear>(c.hidden_size, c.num_experts, false, dtype));
  experts_ = register_module("experts", std::make_shared<nn::ModuleList>());
  const bool mixtral = c.architecture == Architecture::Mixtral;
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    experts_->push_back(std::make_shared<GatedMLP>(
        mixtral ? "MixtralBlockSparseTop2MLP" : c.class_name("MLP"),
        mixtral ? GatedMLP::Naming::MixtralExpert : GatedMLP::Naming::Llama, c.hidden_size,
        c.moe_intermediate_size, false, c.activation, dtype));
  }
  if (c.shared_expert_intermediate_size > 0) {
    shared_expert_ = register_module(
        "shared_expert",
        std::make_shared<GatedMLP>(c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size,
                                   c.shared_expert_intermediate_size, false, c.activation, dtype));
    shared_expert_gate_ = register_module(
        "shared_expert_gate", std::make_shared<nn::Linear>(c.hidden_size, 1, false, dtype));
  }
}

Value SparseMoeBlock::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t tokens = x.size(0) * x.size(1), hidden = x.size(2), k = top_k_;
  const Tensor flat = x.reshape({tokens, hidden});

  // Softmax over every expert in float32, then the top-k (renormalised with norm_topk_prob).
  const Tensor logits = call(*gate_, flat);
  const Tensor probs = ops::softmax(ops::cast(logits, DType::Float32), -1);
  auto [top_values, top_indices] = ops::topk(probs, k, -1);
  const detail::ExpertRouting routing =
      detail::route_tokens(top_indices, top_values, num_experts_, norm_topk_prob_, who);
  // transformers v5 routers round the weights to the hidden dtype; Mixtral keeps float32.
  const DType weight_dtype = round_weights_ ? x.dtype() : DType::Float32;
  Tensor result = run_experts(flat, routing, weight_dtype);
  if (tp_.active()) {
    // Each rank's experts computed their part of the intermediate size: the weighted sum of the
    // partial outputs is linear, so one all-reduce per block gives the whole (every rank routed
    // the same tokens: its input is the same everywhere).
    result = result.contiguous();
    detail::forward_communicator(tp_, who.c_str()).all_reduce_sum(result);
  }
  if (shared_expert_) {
    const Tensor shared = detail::on_device_of(call(*shared_expert_, flat), flat);
    const Tensor gate =
        sigmoid_column(detail::on_device_of(call(*shared_expert_gate_, flat), flat));
    result = ops::add(result, ops::mul(gate, shared));
  }
  return result.view(x.shape());
}

Tensor SparseMoeBlock::run_experts(const Tensor& flat, const detail::ExpertRouting& routing,
                                   DType weight_dtype) {
  const Device device = flat.device();
  const std::int64_t activation_bytes =
      flat.size(1) * static_cast<std::int64_t>(flat.element_size());
  const bool cache_here = cache_ && cache_->device() == device;
  if (!sources_) sources_ = std::make_shared<detail::ExpertSources>();

  // Where each expert with tokens computes. The cache first (GPU speed, nothing read again),
  // then the offload policy of the expert's unit for its tokens: the cpu reads only this
  // expert's stored weights; streaming copies only this expert (kept by the cache if it fits).
  enum class Where : std::uint8_t { Resident, Cpu, Device };
  struct Job {
    Where where = Where::Resident;
    std::vector<Tensor> weights;  // Cpu: as stored; Device: on `device`
  };
  std::vector<Job> jobs(static_cast<std::size_t>(num_experts_));
  bool any_cpu = false;
  for (std::int64_t e = 0; e < num_experts_; ++e) {
    const auto n =
        static_cast<std::int64_t>(routing.expert_tokens[static_cast<std::size_t>(e)].size());
    if (n == 0) continue;
    Job& job = jobs[static_cast<std::size_t>(e)];
    const detail::ExpertSource& source =
        sources_->get(e, (*experts_)[static_cast<std::size_t>(e)], mixtral_naming_);
    const placement::ExpertKey key = placement::expert_key(block_index_, e);
    if (!source.offloaded) {
      ++stats_.resident;
    } else if (const std::vector<Tensor>* hit = cache_here ? cache_->find(key) : nullptr) {
      job.where = Where::Device;
      job.weights = *hit;
      ++stats_.cached;
    } else if (source.hook->scheduler()->policy_for(*source.hook, n, activation_bytes) ==
               placement::ExecutionPolicy::Cpu) {
      job.where = Where::Cpu;
      // Free room in the cache: copy the expert in (asynchronously) for the next steps.
      if (cache_here && cache_->has_room(source.bytes)) cache_->load(key, source.stored);
      job.weights = source.stored;
      any_cpu = true;
      ++stats_.cpu;
      stats_.cpu_bytes += source.bytes;
    } else {
      job.where = Where::Device;
      if (cache_here) {
        job.weights = cache_->load(key, source.stored);
      } else {
        for (const Tensor& w : source.stored)
          job.weights.push_back(placement::owned_copy(w, device));
      }
      ++stats_.streamed;
      stats_.streamed_bytes += source.bytes;
    }
  }
  if (any_cpu) ++stats_.cpu_batches;
  return detail::combine_experts(
      flat, routing, weight_dtype,
      [&](std::int64_t e, const Tensor& rows) {
        const Job& job = jobs[static_cast<std::size_t>(e)];
        if (job.where == Where::Resident)
          return call((*experts_)[static_cast<std::size_t>(e)], rows);
        return detail::expert_forward(job.weights, activation_, rows);
      },
      [&](std::int64_t e) { return jobs[static_cast<std::size_t>(e)].where == Where::Cpu; });
}

void SparseMoeBlock::set_expert_cache(std::shared_ptr<placement::ExpertCache> cache,
                                      std::int64_t block_index) {
  cache_ = std::move(cache);
  block_index_ = block_index;
}

ExpertExecutionStats& ExpertExecutionStats::operator+=(const ExpertExecutionStats& o) {
  resident += o.resident;
  cpu += o.cpu;
  streamed += o.streamed;
  cached += o.cached;
  cpu_bytes += o.cpu_bytes;
  streamed_bytes += o.streamed_bytes;
  cpu_batches += o.cpu_batches;
  return *this;
}

std::vector<SparseMoeBlock*> sparse_moe_blocks(nn::Module& model) {
  std::vector<SparseMoeBlock*> out;
  for (const auto& [name, module] : model.named_modules()) {
    if (auto* block = dynamic_cast<SparseMoeBlock*>(module)) out.push_back(block);
  }
  return out;
}

ExpertExecutionStats expert_execution_stats(nn::Module& model) {
  ExpertExecutionStats total;
  for (const SparseMoeBlock* block : sparse_moe_blocks(model)) total += block->execution_stats();
  return total;
}

void reset_expert_execution_stats(nn::Module& model) {
  for (SparseMoeBlock* block : sparse_moe_blocks(model)) block->reset_execution_stats();
}

std::shared_ptr<placement::ExpertCache> attach_expert_cache(nn::Module& model,
                                                            std::int64_t capacity_bytes,
                                                            placement::ExpertCachePolicy policy) {
  STRATA_CHECK_ARG(capacity_bytes >= 0, "expert cache of {} bytes: must not be negative",
                   capacity_bytes);
  const auto scheduler = placement::find_scheduler(model);
  std::shared_ptr<placement::ExpertCache> cache;
  if (scheduler && capacity_bytes > 0) {
    cache = std::make_shared<placement::ExpertCache>(scheduler->execution_device(), capacity_bytes,
                                                     policy);
  }
  std::int64_t index = 0;
  for (SparseMoeBlock* block : sparse_moe_blocks(model)) block->set_expert_cache(cache, index++);
  return cache;
}

}  // namespace strata::models

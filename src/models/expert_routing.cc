// Shared mixture-of-experts routing (models/expert_routing.h).

#include "models/expert_routing.h"

#include "models/attention.h"
#include "strata/core/error.h"
#include "strata/core/parallel.h"
#include "strata/ops.h"

namespace strata::models::detail {

ExpertRouting route_tokens(const Tensor& indices_t, const Tensor& weights_t,
                           std::int64_t num_experts, bool normalize_top_k, std::string_view who) {
  STRATA_CHECK_ARG(indices_t.dim() == 2 && weights_t.shape() == indices_t.shape(),
                   "{}: router_indices {} and routing_weights {} must both be [tokens, k]", who,
                   indices_t.describe(), weights_t.describe());
  ExpertRouting r;
  r.tokens = indices_t.size(0);
  r.top_k = indices_t.size(1);
  const std::int64_t k = r.top_k;
  const std::vector<std::int64_t> indices =
      indices_t.to(Device::cpu(), DType::Int64).to_vector<std::int64_t>();
  const std::vector<double> weights = weights_t.to(Device::cpu()).to_doubles();
  r.expert_tokens.resize(static_cast<std::size_t>(num_experts));
  r.expert_weights.resize(static_cast<std::size_t>(num_experts));
  for (std::int64_t t = 0; t < r.tokens; ++t) {
    float sum = 1.0f;
    if (normalize_top_k) {  // in float32, as the router's float32 probabilities are summed
      sum = 0.0f;
      for (std::int64_t s = 0; s < k; ++s) {
        sum += static_cast<float>(weights[static_cast<std::size_t>(t * k + s)]);
      }
    }
    for (std::int64_t s = 0; s < k; ++s) {
      const auto at = static_cast<std::size_t>(t * k + s);
      const std::int64_t e = indices[at];
      STRATA_CHECK_ARG(e >= 0 && e < num_experts, "{}: router index {} outside [0, {})", who, e,
                       num_experts);
      r.expert_tokens[static_cast<std::size_t>(e)].push_back(t);
      r.expert_weights[static_cast<std::size_t>(e)].push_back(
          normalize_top_k ? static_cast<double>(static_cast<float>(weights[at]) / sum)
                          : weights[at]);
    }
  }
  return r;
}

Tensor combine_experts(const Tensor& x, const ExpertRouting& routing, DType weight_dtype,
                       const std::function<Tensor(std::int64_t expert, const Tensor& rows)>& expert,
                       const std::function<bool(std::int64_t expert)>& on_cpu) {
  const std::int64_t tokens = routing.tokens, k = routing.top_k, hidden = x.size(1);
  const Device device = x.device();
  const auto cpu_expert = [&](std::size_t e) {
    return on_cpu && on_cpu(static_cast<std::int64_t>(e));
  };
  // Each expert's weighted outputs go to consecutive rows of `contributions`, the cpu experts'
  // first (one block to copy back); rows_of[t] lists token t's rows in increasing expert order.
  std::int64_t cpu_rows = 0;
  for (std::size_t e = 0; e < routing.expert_tokens.size(); ++e) {
    if (cpu_expert(e)) cpu_rows += static_cast<std::int64_t>(routing.expert_tokens[e].size());
  }
  Tensor contributions = Tensor::empty({tokens * k, hidden}, x.dtype(), device);
  const bool cpu_apart = cpu_rows > 0 && !device.is_cpu();
  const Tensor x_cpu = cpu_apart ? x.to(Device::cpu()) : x;
  const Tensor out_cpu =
      cpu_apart ? Tensor::empty({cpu_rows, hidden}, x.dtype(), Device::cpu()) : contributions;
  // Expert e on its rows of `source`, times the routing weights.
  const auto weighted_output = [&](std::size_t e, const Tensor& source) {
    const std::vector<std::int64_t>& routed = routing.expert_tokens[e];
    const auto n = static_cast<std::int64_t>(routed.size());
    const Device at = source.device();
    const Tensor picked = ops::embedding(Tensor::from_vector(routed).to(at), source);
    const Tensor out = on_device_of(expert(static_cast<std::int64_t>(e), picked), source);
    const Tensor weight =
        Tensor::from_doubles(routing.expert_weights[e], {n, 1}, weight_dtype).to(at);
    return out.dtype() == DType::Float32 && weight.dtype() == DType::Float32
               ? ops::mul(out, weight)
               : ops::cast(
                     ops::mul(ops::cast(out, DType::Float32), ops::cast(weight, DType::Float32)),
                     out.dtype());
  };
  // The cpu experts compute in parallel, one expert per task whose ops run on its thread: a
  // decode step's products are a few MB each, too small to pay for spreading every op over the
  // pool (measured on the H100 host: 12 GB/s that way for 8 experts of 9.4 MB).
  std::vector<std::size_t> cpu_experts;
  for (std::size_t e = 0; e < routing.expert_tokens.size(); ++e) {
    if (!routing.expert_tokens[e].empty() && cpu_expert(e)) cpu_experts.push_back(e);
  }
  std::vector<Tensor> cpu_outputs(cpu_experts.size());
  parallel_for(static_cast<std::int64_t>(cpu_experts.size()), 1,
               [&](std::int64_t begin, std::int64_t end) {
                 for (std::int64_t i = begin; i < end; ++i) {
                   const auto at = static_cast<std::size_t>(i);
                   cpu_outputs[at] = weighted_output(cpu_experts[at], x_cpu);
                 }
               });

  std::vector<std::vector<std::int64_t>> rows_of(static_cast<std::size_t>(tokens));
  std::int64_t cpu_offset = 0, offset = cpu_rows;
  std::size_t next_cpu = 0;
  for (std::size_t e = 0; e < routing.expert_tokens.size(); ++e) {
    const std::vector<std::int64_t>& routed = routing.expert_tokens[e];
    const auto n = static_cast<std::int64_t>(routed.size());
    if (n == 0) continue;
    const bool here = cpu_expert(e);
    const Tensor out = here ? cpu_outputs[next_cpu++] : weighted_output(e, x);
    std::int64_t& next = here ? cpu_offset : offset;
    (here ? out_cpu : contributions).narrow(0, next, n).copy_(out);
    for (std::int64_t r = 0; r < n; ++r) {
      rows_of[static_cast<std::size_t>(routed[static_cast<std::size_t>(r)])].push_back(next + r);
    }
    next += n;
  }
  STRATA_ASSERT(offset == tokens * k && cpu_offset == cpu_rows,
                "MoE routed {} rows for {} tokens x top-{}", offset, tokens, k);
  if (cpu_apart) contributions.narrow(0, 0, cpu_rows).copy_(out_cpu);

  Tensor result;
  std::vector<std::int64_t> rows(static_cast<std::size_t>(tokens));
  for (std::int64_t j = 0; j < k; ++j) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      rows[static_cast<std::size_t>(t)] =
          rows_of[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)];
    }
    const Tensor part = ops::embedding(Tensor::from_vector(rows).to(device), contributions);
    result = j == 0 ? part : ops::add(result, part);
  }
  return result;
}

}  // namespace strata::models::detail

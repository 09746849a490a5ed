// Shared mixture-of-experts routing (models/expert_routing.h).

#include "models/expert_routing.h"

#include "models/attention.h"
#include "models/moe_beside.h"
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
                       const std::function<bool(std::int64_t expert)>& on_cpu,
                       const CpuExpertsFn& cpu_batch, const HostStaging* staging,
                       const GroupedExpertsFn& grouped) {
  const std::int64_t tokens = routing.tokens, k = routing.top_k, hidden = x.size(1);
  const Device device = x.device();
  const std::size_t experts = routing.expert_tokens.size();
  const auto routed = [&](std::size_t e) {
    return static_cast<std::int64_t>(routing.expert_tokens[e].size());
  };
  std::vector<bool> cpu_expert(experts, false);
  for (std::size_t e = 0; e < experts; ++e) {
    cpu_expert[e] = routed(e) > 0 && on_cpu && on_cpu(static_cast<std::int64_t>(e));
  }
  // Each expert's weighted outputs go to consecutive rows of `contributions`, the cpu experts'
  // first (one block to copy back), then the others, each in increasing expert order.
  std::vector<std::int64_t> first_row(experts, 0);
  std::int64_t cpu_rows = 0, rows = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t e = 0; e < experts; ++e) {
      if (routed(e) == 0 || cpu_expert[e] != (pass == 0)) continue;
      first_row[e] = rows;
      rows += routed(e);
    }
    if (pass == 0) cpu_rows = rows;
  }
  STRATA_ASSERT(rows == tokens * k, "MoE routed {} rows for {} tokens x top-{}", rows, tokens, k);
  // The tables every expert reads a slice of, built on the host and copied to the device once
  // per step (not a few small copies per expert): the token of each row, its routing weight
  // (rounded to weight_dtype), and for the sum the row of each token's j-th contribution in
  // increasing expert order (gather[j * tokens + t]).
  std::vector<std::int64_t> token_of(static_cast<std::size_t>(rows));
  std::vector<double> weight_of(static_cast<std::size_t>(rows));
  std::vector<std::int64_t> gather(static_cast<std::size_t>(rows));
  std::vector<std::int64_t> filled(static_cast<std::size_t>(tokens), 0);
  for (std::size_t e = 0; e < experts; ++e) {
    for (std::int64_t r = 0; r < routed(e); ++r) {
      const auto row = static_cast<std::size_t>(first_row[e] + r);
      const std::int64_t t = routing.expert_tokens[e][static_cast<std::size_t>(r)];
      token_of[row] = t;
      weight_of[row] = routing.expert_weights[e][static_cast<std::size_t>(r)];
      std::int64_t& j = filled[static_cast<std::size_t>(t)];
      STRATA_ASSERT(j < k, "MoE token {} routed to more than top-{} experts", t, k);
      gather[static_cast<std::size_t>(j * tokens + t)] = static_cast<std::int64_t>(row);
      ++j;
    }
  }
  const Tensor token_host = Tensor::from_vector(token_of);
  // The weights rounded to weight_dtype, then held as float32 (exact), the dtype of the products.
  const Tensor weight_host =
      Tensor::from_doubles(weight_of, {rows, 1}, weight_dtype).to(Device::cpu(), DType::Float32);
  const bool any_here = rows > cpu_rows;
  const auto fits = [&](const Tensor& buffer, std::int64_t n, std::int64_t width, DType dtype) {
    return staging != nullptr && buffer.defined() && buffer.dtype() == dtype &&
           buffer.size(0) >= n && buffer.size(1) == width;
  };
  // (One token: every expert picks a view of its row, the token table is not read.)
  // The tables' copies queue without waiting for the GPU: cudaMemcpyAsync has read pageable host
  // memory when it returns (a blocking copy here waited for every expert copy queued before it).
  const Tensor token_here =
      any_here && tokens > 1 ? token_host.to(device, /*non_blocking=*/true) : token_host;
  Tensor weight_here = weight_host;
  if (any_here && !device.is_cpu()) {
    if (fits(staging ? staging->weights : Tensor(), rows, 1, DType::Float32)) {
      const Tensor staged = staging->weights.narrow(0, 0, rows);
      staged.copy_(weight_host);
      weight_here = staged.to(device, /*non_blocking=*/true);
    } else {
      weight_here = weight_host.to(device, /*non_blocking=*/true);
    }
  }

  Tensor contributions = Tensor::empty({rows, hidden}, x.dtype(), device);
  const bool cpu_apart = cpu_rows > 0 && !device.is_cpu();
  Tensor x_cpu = x, out_cpu = contributions;
  bool staged_rows = false;
  if (cpu_apart) {
    x_cpu = staging != nullptr && staging->x.defined() ? staging->x : x.to(Device::cpu());
    staged_rows = fits(staging ? staging->rows : Tensor(), cpu_rows, hidden, x.dtype());
    out_cpu = staged_rows ? staging->rows.narrow(0, 0, cpu_rows)
                          : Tensor::empty({cpu_rows, hidden}, x.dtype(), Device::cpu());
  }
  // Expert e's rows of `source` (one row, every expert of a decode step, is a view of it: no
  // gather to launch); its output `out` times the routing weights into its rows of `into`.
  const auto pick = [&](std::size_t e, const Tensor& source, const Tensor& token_at) {
    if (routed(e) == 1) {
      return source.narrow(0, token_of[static_cast<std::size_t>(first_row[e])], 1);
    }
    return ops::embedding(token_at.narrow(0, first_row[e], routed(e)), source);
  };
  const auto weigh_into = [&](std::size_t e, const Tensor& out, const Tensor& weight_at,
                              const Tensor& into, std::int64_t at) {
    weigh_rows(out, weight_at.narrow(0, first_row[e], routed(e)), into.narrow(0, at, routed(e)));
  };
  const auto weighted_output = [&](std::size_t e, const Tensor& source, const Tensor& token_at,
                                   const Tensor& weight_at, const Tensor& into, std::int64_t at) {
    const Tensor out = expert(static_cast<std::int64_t>(e), pick(e, source, token_at));
    weigh_into(e, on_device_of(out, source), weight_at, into, at);
  };
  std::vector<std::size_t> cpu_experts;
  for (std::size_t e = 0; e < experts; ++e) {
    if (cpu_expert[e]) cpu_experts.push_back(e);
  }
  const auto cpu_count = static_cast<std::int64_t>(cpu_experts.size());
  // Weights that are x's dtype already (rounded to it, held exactly as float32) multiply a
  // device expert's output in one op: the float32 product of two such values is exact, so one
  // rounding gives the bits of weigh_rows' cast, multiply, cast. At one token the product stays
  // a tensor of its own (the sum below reads it; no copy into `contributions`).
  const bool one_op = any_here && !device.is_cpu() && weight_dtype == x.dtype();
  std::vector<Tensor> device_rows(tokens == 1 ? static_cast<std::size_t>(rows) : 0);
  // The device's experts, queued behind the routing: the GPU computes them while the cpu
  // computes its experts.
  const auto launch_device_experts = [&] {
    const Tensor weight_in_x = one_op ? ops::cast(weight_here, x.dtype()) : Tensor();
    if (grouped && tokens > 1 && any_here) {
      // Their rows are the consecutive rows after the cpu experts', in expert order.
      std::vector<std::int64_t> ids, counts;
      for (std::size_t e = 0; e < experts; ++e) {
        if (routed(e) == 0 || cpu_expert[e]) continue;
        ids.push_back(static_cast<std::int64_t>(e));
        counts.push_back(routed(e));
      }
      const std::int64_t n = rows - cpu_rows;
      const Tensor out = on_device_of(
          grouped(ids, counts, ops::embedding(token_here.narrow(0, cpu_rows, n), x)), x);
      const Tensor into = contributions.narrow(0, cpu_rows, n);
      if (one_op && out.dtype() == x.dtype()) {
        into.copy_(ops::mul(out, weight_in_x.narrow(0, cpu_rows, n)));
      } else {
        weigh_rows(out, weight_here.narrow(0, cpu_rows, n), into);
      }
      return;
    }
    for (std::size_t e = 0; e < experts; ++e) {
      if (routed(e) == 0 || cpu_expert[e]) continue;
      const Tensor out =
          on_device_of(expert(static_cast<std::int64_t>(e), pick(e, x, token_here)), x);
      if (!one_op || out.dtype() != x.dtype()) {
        weigh_into(e, out, weight_here, contributions, first_row[e]);
        continue;
      }
      const Tensor weighted = ops::mul(out, weight_in_x.narrow(0, first_row[e], routed(e)));
      if (tokens == 1) {
        device_rows[static_cast<std::size_t>(first_row[e])] = weighted;
      } else {
        contributions.narrow(0, first_row[e], routed(e)).copy_(weighted);
      }
    }
  };
  // With the staging's `in_queue`, the cpu batch runs the launches on this thread once the
  // pool's workers have started on the cpu experts (cpu/expert_gemv.h): they overlap the reads.
  const bool in_queue = cpu_batch && cpu_count > 0 && staging != nullptr && staging->in_queue;
  const auto run_cpu_experts = [&] {
    if (cpu_batch && cpu_count > 0) {
      std::vector<std::int64_t> ids;
      std::vector<Tensor> picked, weights, into;
      for (const std::size_t e : cpu_experts) {
        ids.push_back(static_cast<std::int64_t>(e));
        picked.push_back(pick(e, x_cpu, token_host));
        weights.push_back(weight_host.narrow(0, first_row[e], routed(e)));
        into.push_back(out_cpu.narrow(0, first_row[e], routed(e)));
      }
      cpu_batch(ids, picked, weights, into,
                in_queue ? std::function<void()>(launch_device_experts) : std::function<void()>());
      return;
    }
    // The cpu experts compute in parallel, one expert per task whose ops run on its thread: a
    // decode step's products are a few MB each, too small to pay for spreading every op over
    // the pool (measured on the H100 host: 12 GB/s that way for 8 experts of 9.4 MB).
    parallel_for(cpu_count, 1, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        const std::size_t e = cpu_experts[static_cast<std::size_t>(i)];
        weighted_output(e, x_cpu, token_host, weight_host, out_cpu, first_row[e]);
      }
    });
  };
  if (in_queue) {
    run_cpu_experts();
  } else {
    // The cpu experts start first, beside this thread when the staging says so (moe_beside.h),
    // while this thread launches the device's experts; else they run after those launches.
    Beside cpu_side(run_cpu_experts, cpu_count > 0 && staging != nullptr && staging->beside);
    launch_device_experts();
    cpu_side.join();
  }
  // From the staging buffer the copy queues without waiting (the buffer is written again only
  // at this block's next step, after that step's routing has waited for this copy).
  if (cpu_apart) contributions.narrow(0, 0, cpu_rows).copy_(out_cpu, /*non_blocking=*/staged_rows);

  // Each token's k contributions added in its expert order, in one op (the bits of k - 1 adds,
  // ops::sum_in_order). One token (decode): they are views of rows of `contributions` (no table
  // to copy, no gather to launch); more: one gather per top-k slot.
  std::vector<Tensor> parts;
  if (tokens == 1) {
    for (std::int64_t j = 0; j < k; ++j) {
      const auto row = static_cast<std::size_t>(gather[static_cast<std::size_t>(j)]);
      parts.push_back(device_rows[row].defined()
                          ? device_rows[row]
                          : contributions.narrow(0, static_cast<std::int64_t>(row), 1));
    }
    return ops::sum_in_order(parts);
  }
  const Tensor gather_here = Tensor::from_vector(gather).to(device, /*non_blocking=*/true);
  for (std::int64_t j = 0; j < k; ++j) {
    parts.push_back(ops::embedding(gather_here.narrow(0, j * tokens, tokens), contributions));
  }
  return ops::sum_in_order(parts);
}

void weigh_rows(const Tensor& out, const Tensor& weight, const Tensor& into) {
  into.copy_(out.dtype() == DType::Float32
                 ? ops::mul(out, weight)
                 : ops::cast(ops::mul(ops::cast(out, DType::Float32), weight), out.dtype()));
}

}  // namespace strata::models::detail

// The generation driver (generate.h). Each batch: one prefill forward over the prompts, then one
// single-token forward per step with the KV cache (logits of the last position only), the
// sampler on the logits where they are, and the stop criteria per row. Finished rows stay in the
// batch (their cache keeps its shape) but are neither extended nor reported.

#include "strata/engine/generate.h"

#include <algorithm>
#include <chrono>

#include "strata/core/error.h"
#include "strata/models/decode_graph.h"

namespace strata::engine {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// As models::generate_greedy: the embedding's device when its weight is materialised.
Device input_device_of(models::CausalLM& model, const GenerateOptions& options) {
  if (options.input_device) return *options.input_device;
  if (const Tensor& w = model.input_embeddings().weight(); !w.is_meta()) return w.device();
  return Device::cpu();
}

struct Batch {
  std::vector<std::size_t> requests;  // indices into the request list
  std::int64_t prompt_length = 0;     // the longest prompt
};

class BatchRunner {
 public:
  BatchRunner(models::CausalLM& model, std::span<const GenerateRequest> requests,
              const StopCriteria& stop, Device device, bool decode_graph,
              const TokenCallback& on_token, GenerateOutput& out)
      : model_(model),
        requests_(requests),
        stop_(stop),
        device_(device),
        decode_graph_(decode_graph),
        on_token_(on_token),
        out_(out) {}

  void run(const Batch& batch) {
    const auto rows = static_cast<std::int64_t>(batch.requests.size());
    const std::int64_t length = batch.prompt_length;  // the longest prompt
    std::vector<std::vector<std::int64_t>> contexts;
    // Prompts left-padded to the longest (padding id 0, hidden by the mask).
    Tensor prompt = Tensor::zeros({rows, length}, DType::Int64);
    auto* prompt_ids = prompt.data<std::int64_t>();
    bool padded = false;
    std::vector<std::int64_t> prompt_mask(static_cast<std::size_t>(rows * length), 1);
    for (std::int64_t r = 0; r < rows; ++r) {
      const GenerateRequest& request = requests_[batch.requests[static_cast<std::size_t>(r)]];
      contexts.push_back(request.prompt);
      const auto pad = length - static_cast<std::int64_t>(request.prompt.size());
      std::copy(request.prompt.begin(), request.prompt.end(), prompt_ids + r * length + pad);
      std::fill_n(prompt_mask.begin() + r * length, pad, 0);
      padded = padded || pad > 0;
    }
    // The mask over the cached and the new columns: the prompt's, then ones (every running or
    // finished row gets a token each step).
    const auto mask_for = [&](std::int64_t step) -> std::optional<Tensor> {
      if (!padded) return std::nullopt;
      const std::int64_t columns = length + step;
      Tensor mask = Tensor::ones({rows, columns}, DType::Int64);
      auto* m = mask.data<std::int64_t>();
      for (std::int64_t r = 0; r < rows; ++r) {
        std::copy_n(prompt_mask.begin() + r * length, length, m + r * columns);
      }
      return mask;
    };
    std::vector<bool> active(static_cast<std::size_t>(rows), true);
    auto cache = model_.make_cache(length + stop_.max_new_tokens());
    Tensor input = prompt.to(device_);
    // Unpadded decode steps may take the fused CUDA graph (it refuses what it cannot run).
    std::unique_ptr<models::DecodeGraphRunner> fast;
    if (decode_graph_ && !padded && stop_.max_new_tokens() > 1) {
      fast = std::make_unique<models::DecodeGraphRunner>(model_);
    }
    Tensor host_next;
    std::vector<SampleRow> sample_rows(static_cast<std::size_t>(rows));
    for (std::int64_t step = 0;; ++step) {
      const auto start = Clock::now();
      std::optional<Tensor> fast_logits;
      if (fast && step > 0) fast_logits = fast->step(host_next, *cache);
      if (!fast_logits && step > 0) input = host_next.to(device_);
      const Tensor logits =
          fast_logits ? *fast_logits : model_.run(input, cache, 1, mask_for(step)).logits;
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::size_t i = batch.requests[static_cast<std::size_t>(r)];
        const auto& context = contexts[static_cast<std::size_t>(r)];
        sample_rows[static_cast<std::size_t>(r)] =
            SampleRow{&requests_[i].params, context,
                      static_cast<std::int64_t>(out_.rows[i].tokens.size()), out_.rows[i].seed};
      }
      const std::vector<std::int64_t> next = sample(logits, sample_rows);
      const auto end = Clock::now();
      if (step == 0) {
        out_.prefill_seconds += seconds_between(start, end);
      } else {
        out_.step_seconds.push_back(seconds_between(start, end));
      }
      bool any_active = false;
      for (std::int64_t r = 0; r < rows; ++r) {
        if (!active[static_cast<std::size_t>(r)]) continue;
        const std::size_t i = batch.requests[static_cast<std::size_t>(r)];
        const std::int64_t token = next[static_cast<std::size_t>(r)];
        RowOutput& row = out_.rows[i];
        auto& context = contexts[static_cast<std::size_t>(r)];
        context.push_back(token);
        row.tokens.push_back(token);
        StopDecision decision;
        if (!stop_.is_eos(token) && on_token_ && !on_token_(static_cast<std::int64_t>(i), token)) {
          decision = {FinishReason::Stop, "stopped by the caller (a stop string)"};
        } else {
          decision = stop_.after_token(token, static_cast<std::int64_t>(row.tokens.size()),
                                       static_cast<std::int64_t>(context.size()));
        }
        if (decision.stopped()) {
          row.finish = decision.reason;
          row.message = std::move(decision.message);
          active[static_cast<std::size_t>(r)] = false;
        } else {
          any_active = true;
        }
      }
      if (!any_active) break;
      host_next = Tensor::from_vector(next, {rows, 1});
    }
  }

 private:
  models::CausalLM& model_;
  std::span<const GenerateRequest> requests_;
  const StopCriteria& stop_;
  Device device_;
  bool decode_graph_;
  const TokenCallback& on_token_;
  GenerateOutput& out_;
};

}  // namespace

GenerateOutput generate(models::CausalLM& model, std::span<const GenerateRequest> requests,
                        const GenerateOptions& options, const TokenCallback& on_token) {
  const std::int64_t limit = options.context_limit.value_or(model.config().max_position_embeddings);
  const StopCriteria stop(options.eos_token_ids, options.max_new_tokens, limit);
  const std::int64_t vocab = model.config().vocab_size;
  GenerateOutput out;
  out.rows.resize(requests.size());
  // Everything is checked before the first forward.
  Batch batch;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const GenerateRequest& request = requests[i];
    StopCriteria::check_prompt(static_cast<std::int64_t>(request.prompt.size()), limit);
    for (std::size_t p = 0; p < request.prompt.size(); ++p) {
      const std::int64_t id = request.prompt[p];
      STRATA_CHECK_ARG(id >= 0 && (vocab <= 0 || id < vocab),
                       "generate: request {} has token id {} at position {}, outside the model's "
                       "vocabulary [0, {})",
                       i, id, p, vocab);
    }
    request.params.validate();
    out.rows[i].seed = resolve_seed(request.params);
    batch.prompt_length =
        std::max(batch.prompt_length, static_cast<std::int64_t>(request.prompt.size()));
    batch.requests.push_back(i);
  }
  BatchRunner runner(model, requests, stop, input_device_of(model, options), options.decode_graph,
                     on_token, out);
  if (!batch.requests.empty()) runner.run(batch);
  return out;
}

SamplingParams sampling_params_from(const text::GenerationConfig& config) {
  SamplingParams params;
  params.do_sample = config.do_sample;
  params.temperature = config.temperature;
  params.top_k = config.top_k;
  params.top_p = config.top_p;
  params.min_p = config.min_p.value_or(0.0);
  params.repetition_penalty = config.repetition_penalty;
  return params;
}

std::int64_t max_new_tokens_from(const text::GenerationConfig& config, std::int64_t prompt_tokens,
                                 std::int64_t fallback) {
  if (config.max_new_tokens) return *config.max_new_tokens;
  if (config.max_length) return std::max<std::int64_t>(1, *config.max_length - prompt_tokens);
  return fallback;
}

}  // namespace strata::engine

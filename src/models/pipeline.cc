// Pipelined micro-batches over a model's stages (strata/models/pipeline.h).

#include "strata/models/pipeline.h"

#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "models/base_model_pass.h"
#include "strata/core/error.h"
#include "strata/models/base_model.h"

namespace strata::models {
namespace {

// A bounded hand-off between two stage threads (GPipe's activation queue). close() wakes every
// waiter: another stage failed, so nothing more will come or be taken.
template <class T>
class Channel {
 public:
  explicit Channel(std::size_t depth) : depth_(depth) {}

  bool push(T item) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return closed_ || items_.size() < depth_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (closed_) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  std::size_t depth_;
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> items_;
  bool closed_ = false;
};

constexpr std::size_t kQueueDepth = 2;

void check_stages(const std::vector<PipelineStage>& stages, std::int64_t num_layers) {
  STRATA_CHECK_ARG(!stages.empty(), "run_pipelined: no stages (give at least one layer range)");
  std::int64_t next = 0;
  for (std::size_t g = 0; g < stages.size(); ++g) {
    const PipelineStage& s = stages[g];
    STRATA_CHECK_ARG(s.first_layer == next && s.end_layer > s.first_layer,
                     "run_pipelined: stage {} holds layers [{}, {}); stages must be non-empty "
                     "consecutive ranges starting at layer 0 (this one should start at {})",
                     g, s.first_layer, s.end_layer, next);
    next = s.end_layer;
  }
  STRATA_CHECK_ARG(next == num_layers,
                   "run_pipelined: the stages end at layer {}; the model has {} layers", next,
                   num_layers);
}

}  // namespace

std::vector<PipelineStage> pipeline_stages(const placement::DeviceMap& map,
                                           const std::string& base_model_prefix,
                                           std::int64_t num_layers) {
  std::vector<PipelineStage> stages;
  std::optional<placement::MapDevice> current;
  for (std::int64_t i = 0; i < num_layers; ++i) {
    const std::string name = fmt::format("{}.layers.{}", base_model_prefix, i);
    const std::optional<placement::MapDevice> device = placement::device_for(map, name);
    STRATA_CHECK_ARG(device.has_value(),
                     "pipeline_stages: the device map places no entry over '{}'; map every "
                     "layer (or the whole model, \"\")",
                     name);
    if (stages.empty() || device != current) {
      stages.push_back({i, i + 1});
      current = device;
    } else {
      stages.back().end_layer = i + 1;
    }
  }
  return stages;
}

Tensor run_pipelined(CausalLM& model, const std::vector<PipelineStage>& stages,
                     const Tensor& input_ids, const PipelineOptions& options) {
  auto* base = dynamic_cast<BaseModel*>(&model.base_model());
  STRATA_CHECK(base != nullptr, NotSupported,
               "run_pipelined: {} is not staged (only the BaseModel families: the Llama family, "
               "Gemma, gpt-oss); run it with CausalLM::run",
               model.class_name());
  check_stages(stages, static_cast<std::int64_t>(base->layers()->size()));
  STRATA_CHECK_ARG(input_ids.dim() == 2 && input_ids.size(1) > 0,
                   "run_pipelined: input_ids must be [batch, seq] token ids, got {}",
                   input_ids.describe());
  const std::int64_t batch = input_ids.size(0), micro = options.micro_batches;
  STRATA_CHECK_ARG(micro >= 1 && micro <= batch,
                   "run_pipelined: micro_batches is {}; it must be in [1, {}] (the batch size)",
                   micro, batch);
  STRATA_CHECK_ARG(
      options.caches.empty() || static_cast<std::int64_t>(options.caches.size()) == micro,
      "run_pipelined: {} caches for {} micro-batches; give one per micro-batch or "
      "none",
      options.caches.size(), micro);
  STRATA_CHECK_ARG(options.logits_to_keep >= 0,
                   "run_pipelined: logits_to_keep is {}; it must be >= 0", options.logits_to_keep);

  // Rows [row_begin[m], row_begin[m + 1]) form micro-batch m (sizes differ by at most one).
  std::vector<std::int64_t> row_begin(static_cast<std::size_t>(micro) + 1, 0);
  for (std::int64_t m = 0; m < micro; ++m) {
    row_begin[static_cast<std::size_t>(m) + 1] =
        row_begin[static_cast<std::size_t>(m)] + batch / micro + (m < batch % micro ? 1 : 0);
  }
  const auto stage_count = stages.size();
  std::vector<std::unique_ptr<Channel<std::shared_ptr<BaseModel::Pass>>>> channels;
  for (std::size_t g = 0; g + 1 < stage_count; ++g) {
    channels.push_back(std::make_unique<Channel<std::shared_ptr<BaseModel::Pass>>>(kQueueDepth));
  }
  std::vector<Tensor> logits(static_cast<std::size_t>(micro));
  std::mutex error_mutex;
  std::exception_ptr error;

  const auto stage_loop = [&](std::size_t g) {
    for (std::int64_t m = 0; m < micro; ++m) {
      std::shared_ptr<BaseModel::Pass> pass;
      if (g == 0) {
        const std::int64_t r0 = row_begin[static_cast<std::size_t>(m)];
        const std::int64_t rows = row_begin[static_cast<std::size_t>(m) + 1] - r0;
        Args args({input_ids.narrow(0, r0, rows)});
        if (!options.caches.empty()) {
          args.keywords.set("past_key_values", Value(options.caches[static_cast<std::size_t>(m)]));
        }
        if (options.attention_mask) {
          args.keywords.set("attention_mask", options.attention_mask->narrow(0, r0, rows));
        }
        // Every rope now: later stages run on other threads, the rotary module on this one.
        pass = base->begin(args, /*all_ropes=*/true);
      } else {
        std::optional<std::shared_ptr<BaseModel::Pass>> got = channels[g - 1]->pop();
        if (!got) return;  // another stage failed
        pass = std::move(*got);
      }
      const PipelineStage& s = stages[g];
      base->run_layers(*pass, static_cast<std::size_t>(s.first_layer),
                       static_cast<std::size_t>(s.end_layer));
      if (g + 1 == stage_count) {
        logits[static_cast<std::size_t>(m)] =
            model.head(base->finish(*pass), options.logits_to_keep);
      } else if (!channels[g]->push(std::move(pass))) {
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t g = 0; g < stage_count; ++g) {
    threads.emplace_back([&, g] {
      try {
        stage_loop(g);
      } catch (...) {
        {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::current_exception();
        }
        for (auto& channel : channels) channel->close();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);

  const Tensor& first = logits.front();
  Tensor out = Tensor::empty({batch, first.size(1), first.size(2)}, first.dtype(), first.device());
  for (std::int64_t m = 0; m < micro; ++m) {
    const std::int64_t r0 = row_begin[static_cast<std::size_t>(m)];
    out.narrow(0, r0, row_begin[static_cast<std::size_t>(m) + 1] - r0)
        .copy_(logits[static_cast<std::size_t>(m)]);
  }
  return out;
}

}  // namespace strata::models

// The continuous-batching scheduler against a fake model whose next token is a fixed function of
// a sequence's tokens: a sequence's output then depends on its own tokens only, so every output
// can be checked against the same sequence generated alone (by the function, no scheduler), and
// the fake checks the cache protocol (prefill once, decode with all but the last token cached,
// release exactly what was cached).
#include "strata/engine/scheduler.h"

#include <gtest/gtest.h>

#include <functional>
#include <future>
#include <map>
#include <set>

#include "models/model_testing.h"
#include "strata/engine/generate.h"
#include "strata/engine/sampling.h"

namespace strata::engine {
namespace {

constexpr std::int64_t kEos = 0;

// The fake's next token: never the eos unless the sequence says so by its last token.
std::int64_t next_token(std::span<const std::int64_t> tokens) {
  std::int64_t sum = 0;
  for (std::int64_t t : tokens) sum = (sum * 31 + t) % 1000003;
  if (tokens.back() == 99) return kEos;  // a 99 is followed by the end of the sequence
  return 1 + (sum + static_cast<std::int64_t>(tokens.size())) % 97;
}

std::vector<std::int64_t> alone(std::vector<std::int64_t> prompt, std::int64_t max_new) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < max_new; ++i) {
    const std::int64_t t = next_token(prompt);
    if (t == kEos) break;
    out.push_back(t);
    prompt.push_back(t);
  }
  return out;
}

class FakeModel : public BatchModel {
 public:
  std::vector<std::int64_t> step(std::span<const StepRow> rows) override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++steps_;
      gate_cv_.wait(lock, [&] { return open_; });
      if (fail_next_) {
        fail_next_ = false;
        throw std::runtime_error("the fake model failed");
      }
      max_rows_ = std::max(max_rows_, rows.size());
      for (const StepRow& row : rows) {
        const auto length = static_cast<std::int64_t>(row.tokens.size());
        if (row.prefill) {
          EXPECT_EQ(cached_.count(row.id), 0u) << "prefill of a cached sequence " << row.id;
          EXPECT_EQ(row.generated, 0);
        } else {
          EXPECT_EQ(cached_.at(row.id), length - 1) << "decode row " << row.id;
        }
        cached_[row.id] = length;
      }
    }
    std::vector<std::int64_t> out;
    for (const StepRow& row : rows) out.push_back(next_token(row.tokens));
    return out;
  }
  void release(SequenceId id) override {
    std::lock_guard<std::mutex> lock(mutex_);
    cached_.erase(id);  // after a failed step the sequence may not be cached: that is allowed
    released_.insert(id);
  }
  std::uint64_t cache_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_.size() * 100;
  }
  void close_gate() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  void open_gate() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    gate_cv_.notify_all();
  }
  void fail_next() {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_next_ = true;
  }
  // Waits until `n` steps have started (the gate holds the last one).
  void wait_steps(std::size_t n) {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (steps_ >= n) return;
      }
      std::this_thread::yield();
    }
  }
  std::size_t max_rows() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return max_rows_;
  }
  std::size_t cached() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_.size();
  }
  std::set<SequenceId> released() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return released_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable gate_cv_;
  bool open_ = true;
  bool fail_next_ = false;
  std::size_t steps_ = 0;
  std::size_t max_rows_ = 0;
  std::map<SequenceId, std::int64_t> cached_;
  std::set<SequenceId> released_;
};

class Collector : public SequenceObserver {
 public:
  explicit Collector(std::int64_t stop_after = -1) : stop_after_(stop_after) {}
  bool on_token(std::int64_t token) override {
    tokens.push_back(token);
    return stop_after_ < 0 || static_cast<std::int64_t>(tokens.size()) < stop_after_;
  }
  void on_end(SequenceEnd end, const std::string& message) override {
    ++ends;
    done.set_value({end, message});
  }
  std::vector<std::int64_t> tokens;
  int ends = 0;
  std::promise<std::pair<SequenceEnd, std::string>> done;
  std::future<std::pair<SequenceEnd, std::string>> result = done.get_future();

 private:
  std::int64_t stop_after_;
};

SequenceRequest request(std::vector<std::int64_t> prompt, std::int64_t max_new,
                        std::shared_ptr<Collector> collector) {
  SequenceRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new;
  r.eos_token_ids = {kEos};
  r.observer = std::move(collector);
  return r;
}

TEST(Scheduler, OneSequenceRunsToMaxNewTokens) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  auto c = std::make_shared<Collector>();
  scheduler.submit(request({5, 6, 7}, 12, c));
  const auto [end, message] = c->result.get();
  EXPECT_EQ(end, SequenceEnd::Length) << message;
  EXPECT_EQ(c->tokens, alone({5, 6, 7}, 12));
  EXPECT_EQ(c->tokens.size(), 12u);
  scheduler.shutdown();
  EXPECT_EQ(model->cached(), 0u);
  EXPECT_EQ(c->ends, 1);
  const SchedulerStats stats = scheduler.stats();
  EXPECT_EQ(stats.prompt_tokens, 3u);
  EXPECT_EQ(stats.generated_tokens, 12u);
  EXPECT_EQ(stats.steps, 12u);
}

TEST(Scheduler, EosEndsWithStopAndIsNotReported) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  auto c = std::make_shared<Collector>();
  scheduler.submit(request({5, 99}, 12, c));
  EXPECT_EQ(c->result.get().first, SequenceEnd::Stop);
  EXPECT_TRUE(c->tokens.empty());
}

TEST(Scheduler, ObserverStopEndsWithStop) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  auto c = std::make_shared<Collector>(3);
  scheduler.submit(request({1, 2}, 10, c));
  EXPECT_EQ(c->result.get().first, SequenceEnd::Stop);
  EXPECT_EQ(c->tokens, alone({1, 2}, 3));
}

TEST(Scheduler, AnObserverThatThrowsFailsItsSequenceOnly) {
  class Throwing : public Collector {
   public:
    bool on_token(std::int64_t token) override {
      if (!tokens.empty()) throw std::runtime_error("cannot decode token");
      return Collector::on_token(token);
    }
  };
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  auto throwing = std::make_shared<Throwing>();
  auto fine = std::make_shared<Collector>();
  scheduler.submit(request({1, 2}, 6, throwing));
  scheduler.submit(request({3, 4}, 6, fine));
  const auto [end, message] = throwing->result.get();
  EXPECT_EQ(end, SequenceEnd::Failed);
  EXPECT_EQ(message, "cannot decode token");
  EXPECT_EQ(fine->result.get().first, SequenceEnd::Length);
  EXPECT_EQ(fine->tokens, alone({3, 4}, 6));
}

TEST(Scheduler, ConcurrentSequencesShareStepsAndMatchAlone) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {.max_sequences = 4, .max_queue = 64, .ctx_size = 64});
  model->close_gate();
  std::vector<std::shared_ptr<Collector>> collectors;
  std::vector<std::vector<std::int64_t>> prompts;
  for (int i = 0; i < 10; ++i) {
    prompts.push_back({i + 1, 2 * i + 3, 7});
    collectors.push_back(std::make_shared<Collector>());
  }
  scheduler.submit(request(prompts[0], 5 + 0, collectors[0]));
  model->wait_steps(1);  // the first sequence is alone in a step held by the gate
  for (int i = 1; i < 10; ++i) scheduler.submit(request(prompts[i], 5 + i, collectors[i]));
  model->open_gate();
  for (int i = 0; i < 10; ++i) {
    const auto [end, message] = collectors[i]->result.get();
    EXPECT_EQ(end, SequenceEnd::Length) << i << ": " << message;
    EXPECT_EQ(collectors[i]->tokens, alone(prompts[i], 5 + i)) << "sequence " << i;
  }
  EXPECT_EQ(model->max_rows(), 4u);  // joined the running one, never more than the slots
  scheduler.shutdown();
  EXPECT_EQ(model->cached(), 0u);
  EXPECT_EQ(model->released().size(), 10u);
}

TEST(Scheduler, CancelEndsARunningSequenceAndFreesItsCache) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  model->close_gate();
  auto c = std::make_shared<Collector>();
  const SequenceId id = scheduler.submit(request({3, 4}, 1000, c));
  model->wait_steps(1);
  scheduler.cancel(id);
  model->open_gate();
  EXPECT_EQ(c->result.get().first, SequenceEnd::Cancelled);
  scheduler.shutdown();
  EXPECT_EQ(model->cached(), 0u);
  EXPECT_TRUE(model->released().count(id));
  scheduler.cancel(id);  // finished ids are ignored
}

TEST(Scheduler, CancelWhileWaiting) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {.max_sequences = 1, .max_queue = 4, .ctx_size = 64});
  model->close_gate();
  auto first = std::make_shared<Collector>();
  auto second = std::make_shared<Collector>();
  scheduler.submit(request({1}, 3, first));
  model->wait_steps(1);
  const SequenceId waiting = scheduler.submit(request({2}, 3, second));
  scheduler.cancel(waiting);
  model->open_gate();
  EXPECT_EQ(second->result.get().first, SequenceEnd::Cancelled);
  EXPECT_TRUE(second->tokens.empty());
  EXPECT_EQ(first->result.get().first, SequenceEnd::Length);
  EXPECT_FALSE(model->released().count(waiting));  // never cached, never released
}

TEST(Scheduler, FullQueueIsRefused) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {.max_sequences = 1, .max_queue = 1, .ctx_size = 64});
  model->close_gate();
  scheduler.submit(request({1}, 3, std::make_shared<Collector>()));
  model->wait_steps(1);
  scheduler.submit(request({1}, 3, std::make_shared<Collector>()));
  EXPECT_THROW(scheduler.submit(request({1}, 3, std::make_shared<Collector>())), QueueFull);
  model->open_gate();
}

TEST(Scheduler, PromptMustLeaveRoomInTheContext) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {.max_sequences = 2, .max_queue = 2, .ctx_size = 8});
  try {
    scheduler.submit(request({1, 2, 3, 4, 5, 6, 7, 8}, 3, std::make_shared<Collector>()));
    FAIL() << "a prompt filling the context was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("8 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--ctx-size"), std::string::npos) << e.what();
  }
  EXPECT_THROW(scheduler.submit(request({}, 3, std::make_shared<Collector>())), InvalidArgument);
  EXPECT_THROW(scheduler.submit(request({1}, 0, std::make_shared<Collector>())), InvalidArgument);
  // max_new_tokens past the context is cut to what it leaves.
  auto c = std::make_shared<Collector>();
  scheduler.submit(request({1, 2, 3, 4, 5}, 100, c));
  EXPECT_EQ(c->result.get().first, SequenceEnd::Length);
  EXPECT_EQ(c->tokens.size(), 3u);
}

TEST(Scheduler, AFailedStepFailsItsSequencesAndServingGoesOn) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {});
  model->fail_next();
  auto failed = std::make_shared<Collector>();
  scheduler.submit(request({1, 2}, 4, failed));
  const auto [end, message] = failed->result.get();
  EXPECT_EQ(end, SequenceEnd::Failed);
  EXPECT_EQ(message, "the fake model failed");
  auto next = std::make_shared<Collector>();
  scheduler.submit(request({1, 2}, 4, next));
  EXPECT_EQ(next->result.get().first, SequenceEnd::Length);
  EXPECT_EQ(next->tokens, alone({1, 2}, 4));
}

TEST(Scheduler, ShutdownCancelsEverythingAndRefusesNewWork) {
  auto model = std::make_shared<FakeModel>();
  Scheduler scheduler(model, {.max_sequences = 1, .max_queue = 4, .ctx_size = 1 << 20});
  model->close_gate();
  auto running = std::make_shared<Collector>();
  auto waiting = std::make_shared<Collector>();
  scheduler.submit(request({1}, 100000, running));
  model->wait_steps(1);
  scheduler.submit(request({2}, 100000, waiting));
  // shutdown() waits for the step the gate holds: open it from here once shutdown began.
  std::thread stopper([&] { scheduler.shutdown(); });
  model->open_gate();
  stopper.join();
  EXPECT_EQ(running->result.get().first, SequenceEnd::Cancelled);
  EXPECT_EQ(waiting->result.get().first, SequenceEnd::Cancelled);
  EXPECT_EQ(running->ends, 1);
  EXPECT_EQ(model->cached(), 0u);
  EXPECT_THROW(scheduler.submit(request({1}, 3, std::make_shared<Collector>())), NotSupported);
}

TEST(Scheduler, OptionsOutOfRangeAreRefused) {
  auto model = std::make_shared<FakeModel>();
  EXPECT_THROW(Scheduler(model, {.max_sequences = 0}), InvalidArgument);
  EXPECT_THROW(Scheduler(model, {.max_queue = -1}), InvalidArgument);
  EXPECT_THROW(Scheduler(model, {.ctx_size = 1}), InvalidArgument);
  EXPECT_THROW(Scheduler(nullptr, {}), InvalidArgument);
}

}  // namespace
}  // namespace strata::engine

// The real model batch on the recorded llama fixture: sequences that join a running batch at
// different steps, leave at different lengths and are cancelled produce, token for token, what
// engine::generate produces for each prompt alone (greedy and seeded sampling).
namespace strata::engine {
namespace {

// Forwards to the model batch and, before step k, submits what `before_step` submits: sequences
// then join at fixed step boundaries.
class JoiningModel : public BatchModel {
 public:
  JoiningModel(std::shared_ptr<BatchModel> inner, std::function<void(std::size_t)> before_step)
      : inner_(std::move(inner)), before_step_(std::move(before_step)) {}
  std::vector<std::int64_t> step(std::span<const StepRow> rows) override {
    before_step_(steps_++);
    max_rows_ = std::max(max_rows_, rows.size());
    return inner_->step(rows);
  }
  void release(SequenceId id) override { inner_->release(id); }
  std::uint64_t cache_bytes() const override { return inner_->cache_bytes(); }
  std::size_t max_rows_ = 0;

 private:
  std::shared_ptr<BatchModel> inner_;
  std::function<void(std::size_t)> before_step_;
  std::size_t steps_ = 0;
};

void expect_joining_and_leaving_match_each_alone(const std::string& fixture_name) {
  const testing::ModelFixture fixture = testing::load_model_fixture(fixture_name);
  auto model = testing::load_fixture_model(fixture, Device::cpu());
  const std::vector<std::int64_t> base = fixture.prompt_ids.select(0, 0).to_vector<std::int64_t>();

  struct Case {
    std::vector<std::int64_t> prompt;
    std::int64_t max_new;
    std::shared_ptr<SamplingParams> params;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 6; ++i) {
    Case c;
    c.prompt.assign(base.begin(), base.begin() + 3 + i);  // prompts of different lengths
    c.max_new = 4 + 3 * i;
    c.params = std::make_shared<SamplingParams>();
    if (i % 2 == 0) {
      c.params->do_sample = false;
    } else {
      c.params->temperature = 1.2;
      c.params->top_k = 30;
      c.params->seed = 1000 + i;
    }
    cases.push_back(c);
  }

  std::vector<std::shared_ptr<Collector>> collectors;
  for (std::size_t i = 0; i < cases.size(); ++i)
    collectors.push_back(std::make_shared<Collector>());
  Scheduler* scheduler_ptr = nullptr;
  auto submit = [&](std::size_t i) {
    SequenceRequest r;
    r.prompt = cases[i].prompt;
    r.max_new_tokens = cases[i].max_new;
    r.params = cases[i].params;
    r.seed = resolve_seed(*cases[i].params);
    r.observer = collectors[i];
    scheduler_ptr->submit(std::move(r));
  };
  // Sequences 0 and 1 start together; 2 joins before step 2, 3 and 4 before step 5, 5 before 9.
  auto joining = std::make_shared<JoiningModel>(make_model_batch(model), [&](std::size_t step) {
    if (step == 2) submit(2);
    if (step == 5) {
      submit(3);
      submit(4);
    }
    if (step == 9) submit(5);
  });
  Scheduler scheduler(joining, {.max_sequences = 4, .max_queue = 8, .ctx_size = 256});
  scheduler_ptr = &scheduler;
  submit(0);
  submit(1);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto [end, message] = collectors[i]->result.get();
    EXPECT_EQ(end, SequenceEnd::Length) << i << ": " << message;
    GenerateOptions options;
    options.max_new_tokens = cases[i].max_new;
    GenerateRequest alone{cases[i].prompt, *cases[i].params};
    const GenerateOutput expected = generate(*model, {&alone, 1}, options);
    EXPECT_EQ(collectors[i]->tokens, expected.rows[0].tokens) << "sequence " << i;
  }
  EXPECT_GE(joining->max_rows_, 3u);
  scheduler.shutdown();
  EXPECT_EQ(joining->cache_bytes(), 0u);
}

TEST(ModelBatch, SequencesJoiningAndLeavingMatchEachAlone) {
  expect_joining_and_leaving_match_each_alone("llama");
}

// DeepSeek's compressed cache (latent keys, narrower rope values) through the batch cache
// rebuilds (gather_cache_rows), and its absorbed decode over left-padded rows.
TEST(ModelBatch, DeepseekSequencesJoiningAndLeavingMatchEachAlone) {
  expect_joining_and_leaving_match_each_alone("deepseek_v3");
}

}  // namespace
}  // namespace strata::engine

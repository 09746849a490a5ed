#pragma once
// Continuous batching: requests come in from any thread, one scheduler thread runs the model.
// Every step it lets waiting sequences join (up to max_sequences, each taking one slot of the KV
// cache pool), asks the BatchModel for one token per running sequence (prefill rows for those
// that just joined, decode rows for the others), hands each token to its sequence's observer, and
// removes finished or cancelled sequences at once (their cache is released before the next
// step). With offloaded weights this is where throughput comes from: one weight stream per step
// serves the whole batch. docs/serving.md has the design.
//
// The scheduler is model-agnostic: a BatchModel does the forwards and the sampling (the real one
// wraps a CausalLM), the scheduler does admission, stopping (eos, max_new_tokens, the context
// size), cancellation and bookkeeping; tests drive it with a fake model.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "strata/core/error.h"

namespace strata::models {
class CausalLM;
}

namespace strata::engine {

struct SamplingParams;

// The queue is full: the server answers 503 with Retry-After.
class QueueFull : public Error {
 public:
  using Error::Error;
};

// Why a sequence ended. Stop: eos or the observer asked (a stop string); Length: max_new_tokens
// or the context size; Cancelled: cancel() or shutdown; Failed: the model step threw (the message
// says why; every sequence of that step fails, the scheduler keeps serving the next ones).
enum class SequenceEnd { Stop, Length, Cancelled, Failed };
const char* to_string(SequenceEnd end);

// Receives a sequence's results on the scheduler thread: keep the callbacks short (queue the
// token for the HTTP thread). on_token returning false ends the sequence (SequenceEnd::Stop);
// on_token throwing ends it with SequenceEnd::Failed and the exception's message.
class SequenceObserver {
 public:
  virtual ~SequenceObserver() = default;
  virtual bool on_token(std::int64_t token) = 0;
  // Called exactly once, last.
  virtual void on_end(SequenceEnd end, const std::string& message) = 0;
};

struct SequenceRequest {
  std::vector<std::int64_t> prompt;              // not empty
  std::int64_t max_new_tokens = 16;              // >= 1
  std::vector<std::int64_t> eos_token_ids;       // end the sequence, not reported to the observer
  std::shared_ptr<const SamplingParams> params;  // read by the BatchModel only
  std::uint64_t seed = 0;
  std::shared_ptr<SequenceObserver> observer;  // required
};

using SequenceId = std::uint64_t;

// One row of a step: a sequence the model must extend by one token.
struct StepRow {
  SequenceId id = 0;
  // prompt + tokens generated so far. A prefill row has nothing generated and no cache yet; a
  // decode row has every token but the last cached.
  std::span<const std::int64_t> tokens;
  std::int64_t generated = 0;
  bool prefill = false;
  const SamplingParams* params = nullptr;
  std::uint64_t seed = 0;
};

class BatchModel {
 public:
  virtual ~BatchModel() = default;
  // The next token of every row, in order. Afterwards every row's cache holds the row's tokens
  // (the new token is cached by the next step).
  virtual std::vector<std::int64_t> step(std::span<const StepRow> rows) = 0;
  // The sequence left: free its cache (called before the next step; unknown ids are ignored).
  virtual void release(SequenceId id) = 0;
  // Bytes the KV caches hold now.
  virtual std::uint64_t cache_bytes() const = 0;
};

// The BatchModel of a CausalLM (src/engine/scheduler_model.cc). Each step runs at most two
// forwards: one decode forward for every running sequence (one token each, left-padded to the
// longest with an attention mask, on one batch KV cache) and one prefill forward for the
// sequences that joined (their prompts left-padded into one batch). The batch cache is rebuilt
// (models/kv_cache_rows.h) only when sequences join or leave, so a step of a steady batch copies
// one token per row and layer. Tokens are drawn by engine::sample with each row's parameters
// (StepRow::params must point to SamplingParams) and seed. `input_device`: where token ids go
// (nullopt: the input embedding's device when materialised, else the cpu).
struct ModelBatchOptions {
  std::int64_t reserve_tokens = 64;  // headroom of a rebuilt batch cache past its longest row
};
std::shared_ptr<BatchModel> make_model_batch(std::shared_ptr<models::CausalLM> model,
                                             ModelBatchOptions options = {});

struct SchedulerOptions {
  std::int64_t max_sequences = 8;  // KV cache slots: sequences that run at once
  std::int64_t max_queue = 64;     // waiting sequences beyond those; more get QueueFull
  std::int64_t ctx_size = 2048;    // prompt + new tokens of one sequence
};

struct SchedulerStats {
  std::int64_t waiting = 0;
  std::int64_t running = 0;
  std::uint64_t cache_bytes = 0;
  std::uint64_t steps = 0;
  std::uint64_t prompt_tokens = 0;     // of sequences that ran a prefill
  std::uint64_t generated_tokens = 0;  // reported to observers
};

class Scheduler {
 public:
  // Starts the scheduler thread. Throws InvalidArgument for options out of range.
  Scheduler(std::shared_ptr<BatchModel> model, SchedulerOptions options);
  ~Scheduler();  // shutdown(), then joins the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a sequence. Throws InvalidArgument (empty prompt, max_new_tokens < 1, no observer, a
  // prompt that leaves no room in ctx_size: the message says the numbers), QueueFull, or
  // NotSupported after shutdown. A max_new_tokens past ctx_size is cut to what it leaves (the
  // sequence then ends with Length there).
  SequenceId submit(SequenceRequest request);
  // Ends a sequence (waiting or running) with Cancelled before its next token; unknown or
  // finished ids are ignored. Any thread, also from an observer's callback.
  void cancel(SequenceId id);
  // Stops accepting, cancels every sequence and returns when each observer got on_end.
  void shutdown();

  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Sequence;
  void loop();
  void run_step(std::unique_lock<std::mutex>& lock);
  void end_locked(const std::shared_ptr<Sequence>& sequence, SequenceEnd end, std::string message,
                  std::vector<std::shared_ptr<Sequence>>& ended);
  void notify_ended(std::vector<std::shared_ptr<Sequence>>& ended);

  std::shared_ptr<BatchModel> model_;
  SchedulerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable drained_;
  std::deque<std::shared_ptr<Sequence>> waiting_;
  std::vector<std::shared_ptr<Sequence>> running_;
  std::unordered_map<SequenceId, std::shared_ptr<Sequence>> by_id_;
  std::vector<SequenceId> to_release_;  // left since the last step
  SequenceId next_id_ = 1;
  bool stopping_ = false;
  bool exit_ = false;
  SchedulerStats stats_;
  std::thread thread_;
};

}  // namespace strata::engine

#include "strata/engine/scheduler.h"

#include <algorithm>
#include <atomic>

namespace strata::engine {

const char* to_string(SequenceEnd end) {
  switch (end) {
    case SequenceEnd::Stop:
      return "stop";
    case SequenceEnd::Length:
      return "length";
    case SequenceEnd::Cancelled:
      return "cancelled";
    case SequenceEnd::Failed:
      return "failed";
  }
  return "unknown";
}

struct Scheduler::Sequence {
  SequenceId id = 0;
  SequenceRequest request;
  std::vector<std::int64_t> tokens;  // prompt + generated
  std::int64_t generated = 0;
  bool prefilled = false;
  std::atomic<bool> cancelled{false};
  SequenceEnd end = SequenceEnd::Stop;
  std::string message;
};

Scheduler::Scheduler(std::shared_ptr<BatchModel> model, SchedulerOptions options)
    : model_(std::move(model)), options_(options) {
  STRATA_CHECK_ARG(model_ != nullptr, "Scheduler: the model is null");
  STRATA_CHECK_ARG(options_.max_sequences >= 1,
                   "Scheduler: max_sequences is {}; it must be at least 1 (--max-sequences)",
                   options_.max_sequences);
  STRATA_CHECK_ARG(options_.max_queue >= 0,
                   "Scheduler: max_queue is {}; it must be at least 0 (--max-queue)",
                   options_.max_queue);
  STRATA_CHECK_ARG(options_.ctx_size >= 2,
                   "Scheduler: ctx_size is {}; it must be at least 2 tokens (--ctx-size)",
                   options_.ctx_size);
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { shutdown(); }

SequenceId Scheduler::submit(SequenceRequest request) {
  STRATA_CHECK_ARG(!request.prompt.empty(), "the prompt is empty: it must hold at least one token");
  STRATA_CHECK_ARG(request.max_new_tokens >= 1, "max_new_tokens is {}; it must be at least 1",
                   request.max_new_tokens);
  STRATA_CHECK_ARG(request.observer != nullptr, "Scheduler::submit: the observer is null");
  const auto prompt_tokens = static_cast<std::int64_t>(request.prompt.size());
  STRATA_CHECK_ARG(prompt_tokens < options_.ctx_size,
                   "the prompt has {} tokens, which leaves no room for a new token in a context "
                   "of {} tokens: shorten the prompt (or start the server with a larger "
                   "--ctx-size)",
                   prompt_tokens, options_.ctx_size);
  request.max_new_tokens = std::min(request.max_new_tokens, options_.ctx_size - prompt_tokens);

  auto sequence = std::make_shared<Sequence>();
  sequence->tokens = request.prompt;
  sequence->request = std::move(request);
  std::lock_guard<std::mutex> lock(mutex_);
  STRATA_CHECK(!stopping_, NotSupported, "the server is shutting down: no new requests");
  const auto free_slots = options_.max_sequences - static_cast<std::int64_t>(running_.size());
  if (static_cast<std::int64_t>(waiting_.size()) >=
      options_.max_queue + std::max<std::int64_t>(free_slots, 0)) {
    STRATA_THROW(QueueFull,
                 "the queue is full: {} sequences run and {} wait (--max-sequences {}, "
                 "--max-queue {}); retry later",
                 running_.size(), waiting_.size(), options_.max_sequences, options_.max_queue);
  }
  sequence->id = next_id_++;
  by_id_[sequence->id] = sequence;
  waiting_.push_back(sequence);
  wake_.notify_all();
  return sequence->id;
}

void Scheduler::cancel(SequenceId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  it->second->cancelled = true;
  wake_.notify_all();
}

void Scheduler::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    exit_ = true;
    for (auto& [id, sequence] : by_id_) sequence->cancelled = true;
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  SchedulerStats out = stats_;
  out.waiting = static_cast<std::int64_t>(waiting_.size());
  out.running = static_cast<std::int64_t>(running_.size());
  return out;
}

void Scheduler::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] {
      return exit_ || !waiting_.empty() || !running_.empty() || !to_release_.empty();
    });
    if (exit_ && waiting_.empty() && running_.empty()) break;
    run_step(lock);
  }
  // Free what the last step left behind.
  std::vector<SequenceId> release;
  release.swap(to_release_);
  lock.unlock();
  for (SequenceId id : release) model_->release(id);
}

void Scheduler::end_locked(const std::shared_ptr<Sequence>& sequence, SequenceEnd end,
                           std::string message, std::vector<std::shared_ptr<Sequence>>& ended) {
  sequence->end = end;
  sequence->message = std::move(message);
  by_id_.erase(sequence->id);
  if (sequence->prefilled) to_release_.push_back(sequence->id);
  ended.push_back(sequence);
}

void Scheduler::notify_ended(std::vector<std::shared_ptr<Sequence>>& ended) {
  for (const auto& sequence : ended) {
    try {
      sequence->request.observer->on_end(sequence->end, sequence->message);
    } catch (const std::exception&) {
      // The observer's own failure ends nothing else: the sequence is already gone.
    }
  }
  ended.clear();
}

void Scheduler::run_step(std::unique_lock<std::mutex>& lock) {
  std::vector<std::shared_ptr<Sequence>> ended;
  // Cancelled sequences leave first, waiting or running.
  auto drop_cancelled = [&](auto& list) {
    for (auto it = list.begin(); it != list.end();) {
      if ((*it)->cancelled) {
        end_locked(*it, SequenceEnd::Cancelled, "cancelled", ended);
        it = list.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop_cancelled(waiting_);
  drop_cancelled(running_);
  // New sequences join at the step boundary, as many as there are free cache slots.
  while (static_cast<std::int64_t>(running_.size()) < options_.max_sequences && !waiting_.empty()) {
    running_.push_back(waiting_.front());
    waiting_.pop_front();
  }
  std::vector<SequenceId> release;
  release.swap(to_release_);
  // Only this thread changes running_ and the sequences' tokens: both are read unlocked below.
  lock.unlock();
  notify_ended(ended);
  for (SequenceId id : release) model_->release(id);

  std::vector<StepRow> rows;
  rows.reserve(running_.size());
  std::uint64_t prompt_tokens = 0;
  for (const auto& sequence : running_) {
    StepRow row;
    row.id = sequence->id;
    row.tokens = sequence->tokens;
    row.generated = sequence->generated;
    row.prefill = !sequence->prefilled;
    row.params = sequence->request.params.get();
    row.seed = sequence->request.seed;
    if (row.prefill) prompt_tokens += sequence->tokens.size();
    rows.push_back(row);
  }

  std::vector<std::int64_t> next;
  std::string failure;
  if (!rows.empty()) {
    try {
      next = model_->step(rows);
      if (next.size() != rows.size()) {
        failure = "internal error: the model step returned " + std::to_string(next.size()) +
                  " tokens for " + std::to_string(rows.size()) + " sequences";
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  for (const auto& sequence : running_) sequence->prefilled = true;

  // Tokens go to the observers outside the lock (an observer may call cancel()).
  std::vector<std::pair<std::shared_ptr<Sequence>, std::pair<SequenceEnd, std::string>>> finished;
  std::uint64_t reported = 0;
  for (std::size_t i = 0; i < running_.size(); ++i) {
    const auto& sequence = running_[i];
    if (!failure.empty()) {
      finished.push_back({sequence, {SequenceEnd::Failed, failure}});
      continue;
    }
    if (sequence->cancelled) continue;  // leaves at the next step boundary
    const std::int64_t token = next[i];
    const auto& eos = sequence->request.eos_token_ids;
    sequence->tokens.push_back(token);
    sequence->generated += 1;
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
      finished.push_back({sequence, {SequenceEnd::Stop, "end of sequence token"}});
      continue;
    }
    ++reported;
    bool go_on = true;
    try {
      go_on = sequence->request.observer->on_token(token);
    } catch (const std::exception& e) {  // e.g. a token its detokeniser cannot read
      finished.push_back({sequence, {SequenceEnd::Failed, e.what()}});
      continue;
    }
    if (!go_on) {
      finished.push_back({sequence, {SequenceEnd::Stop, "stopped by the observer"}});
    } else if (sequence->generated >= sequence->request.max_new_tokens) {
      finished.push_back({sequence, {SequenceEnd::Length, "max_new_tokens reached"}});
    }
  }
  const std::uint64_t bytes = model_->cache_bytes();

  lock.lock();
  for (auto& [sequence, why] : finished) {
    running_.erase(std::find(running_.begin(), running_.end(), sequence));
    end_locked(sequence, why.first, std::move(why.second), ended);
  }
  stats_.steps += rows.empty() ? 0 : 1;
  stats_.prompt_tokens += prompt_tokens;
  stats_.generated_tokens += reported;
  stats_.cache_bytes = bytes;
  lock.unlock();
  notify_ended(ended);
  lock.lock();
}

}  // namespace strata::engine

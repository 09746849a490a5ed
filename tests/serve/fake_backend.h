#pragma once
// A Backend without a model for the HTTP tests: a prompt's characters are its token ids, a token
// t reads as the letter 'a' + t % 26, and the next token is a fixed function of a sequence's
// tokens (so every output can be computed alone). A gate holds the model step, so tests can
// keep a stream open while they disconnect or shut the server down.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>

#include "strata/serve/backend.h"

namespace strata::serve::testing {

inline constexpr std::int64_t kFakeEos = 0;
inline constexpr std::int64_t kFakeVocab = 128;

inline std::int64_t fake_next(std::span<const std::int64_t> tokens) {
  std::int64_t sum = 0;
  for (std::int64_t t : tokens) sum = (sum * 31 + t) % 1000003;
  if (tokens.back() == '!') return kFakeEos;  // "!" ends a prompt's answer at once
  return 1 + (sum + static_cast<std::int64_t>(tokens.size())) % 30;  // never the 33 of "!"
}

inline std::string fake_text(std::int64_t token) {
  return std::string(1, static_cast<char>('a' + token % 26));
}

class FakeBatchModel : public engine::BatchModel {
 public:
  std::vector<std::int64_t> step(std::span<const engine::StepRow> rows) override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      gate_.wait(lock, [&] { return open_; });
      for (const auto& row : rows) cached_.insert(row.id);
    }
    steps_ += 1;
    std::vector<std::int64_t> out;
    for (const auto& row : rows) out.push_back(fake_next(row.tokens));
    return out;
  }
  void release(engine::SequenceId id) override {
    std::lock_guard<std::mutex> lock(mutex_);
    cached_.erase(id);
  }
  std::uint64_t cache_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_.size() * 1000;
  }
  void set_open(bool open) {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = open;
    gate_.notify_all();
  }
  std::size_t cached() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_.size();
  }
  std::atomic<std::uint64_t> steps_{0};

 private:
  mutable std::mutex mutex_;
  std::condition_variable gate_;
  bool open_ = true;
  std::set<engine::SequenceId> cached_;
};

class FakeTextStream : public TextStream {
 public:
  explicit FakeTextStream(std::vector<std::string> stop) : stop_(std::move(stop)) {}
  Piece push(std::int64_t token) override {
    text_ += fake_text(token);
    for (const auto& s : stop_) {
      const auto at = text_.find(s);
      if (at != std::string::npos) {
        Piece piece{text_.substr(sent_, at > sent_ ? at - sent_ : 0), true};
        sent_ = text_.size();
        stopped_ = true;
        return piece;
      }
    }
    // Holds back as many characters as the longest stop string could still need.
    std::size_t hold = 0;
    for (const auto& s : stop_) hold = std::max(hold, s.size() - 1);
    const std::size_t ready = text_.size() > hold ? text_.size() - hold : 0;
    Piece piece{ready > sent_ ? text_.substr(sent_, ready - sent_) : "", false};
    sent_ = std::max(sent_, ready);
    return piece;
  }
  std::string finish() override {
    if (stopped_) return "";
    std::string rest = text_.substr(std::min(sent_, text_.size()));
    sent_ = text_.size();
    return rest;
  }

 private:
  std::vector<std::string> stop_;
  std::string text_;
  std::size_t sent_ = 0;
  bool stopped_ = false;
};

class FakeBackend : public Backend {
 public:
  FakeBackend(engine::SchedulerOptions options, bool chat_template)
      : model_(std::make_shared<FakeBatchModel>()),
        scheduler_(model_, options),
        chat_template_(chat_template) {}

  std::vector<std::int64_t> encode_prompt(const std::string& prompt) const override {
    std::vector<std::int64_t> ids;
    for (unsigned char c : prompt) ids.push_back(c % kFakeVocab);
    return ids;
  }
  std::vector<std::int64_t> encode_chat(const nlohmann::json& messages) const override {
    if (!chat_template_) {
      throw ApiError(400, "the model has no chat template", "messages", "no_chat_template");
    }
    std::string prompt;
    for (const auto& m : messages) {
      prompt += "<" + m["role"].get<std::string>() + ">" + m["content"].get<std::string>();
    }
    return encode_prompt(prompt + "<assistant>");
  }
  std::int64_t vocab_size() const override { return kFakeVocab; }
  std::vector<std::int64_t> eos_token_ids() const override { return {kFakeEos}; }
  std::shared_ptr<const engine::SamplingParams> sampling_params(
      const SamplingFields&) const override {
    return nullptr;
  }
  std::uint64_t seed_for(const SamplingFields& fields) const override {
    return fields.seed.value_or(0);
  }
  std::unique_ptr<TextStream> text_stream(const std::vector<std::string>& stop) const override {
    return std::make_unique<FakeTextStream>(stop);
  }
  engine::Scheduler& scheduler() override { return scheduler_; }
  FakeBatchModel& model() { return *model_; }

  // The text a prompt's answer has when generated alone, up to max_new tokens (eos ends it).
  std::string alone(std::vector<std::int64_t> tokens, std::int64_t max_new) const {
    std::string out;
    for (std::int64_t i = 0; i < max_new; ++i) {
      const std::int64_t t = fake_next(tokens);
      if (t == kFakeEos) break;
      out += fake_text(t);
      tokens.push_back(t);
    }
    return out;
  }

 private:
  std::shared_ptr<FakeBatchModel> model_;
  engine::Scheduler scheduler_;
  bool chat_template_;
};

}  // namespace strata::serve::testing

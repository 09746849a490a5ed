#pragma once
// The bridge between the scheduler thread and an HTTP thread for one request: the scheduler's
// observer callbacks detokenise and append text, the HTTP thread takes what arrived.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "strata/engine/scheduler.h"
#include "strata/serve/backend.h"

namespace strata::serve {

class RequestStream : public engine::SequenceObserver {
 public:
  explicit RequestStream(std::unique_ptr<TextStream> text) : text_(std::move(text)) {}

  bool on_token(std::int64_t token) override;
  void on_end(engine::SequenceEnd end, const std::string& message) override;

  struct Update {
    std::string text;  // arrived since the last take
    bool ended = false;
    engine::SequenceEnd end = engine::SequenceEnd::Stop;
    std::string message;
    std::int64_t tokens = 0;  // generated so far
  };
  // What arrived, waiting up to `timeout` for something (text or the end).
  Update take(std::chrono::milliseconds timeout);
  // Blocks until the end; all the text.
  Update wait_end();

 private:
  std::unique_ptr<TextStream> text_;  // used on the scheduler thread only
  std::mutex mutex_;
  std::condition_variable changed_;
  Update pending_;
};

}  // namespace strata::serve

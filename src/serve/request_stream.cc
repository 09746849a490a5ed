#include "request_stream.h"

namespace strata::serve {

bool RequestStream::on_token(std::int64_t token) {
  TextStream::Piece piece = text_->push(token);
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.text += piece.text;
  pending_.tokens += 1;
  changed_.notify_all();
  return !piece.stopped;
}

void RequestStream::on_end(engine::SequenceEnd end, const std::string& message) {
  std::string tail = text_->finish();
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.text += tail;
  pending_.ended = true;
  pending_.end = end;
  pending_.message = message;
  changed_.notify_all();
}

RequestStream::Update RequestStream::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return pending_.ended || !pending_.text.empty(); });
  Update out = pending_;
  pending_.text.clear();
  return out;
}

RequestStream::Update RequestStream::wait_end() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return pending_.ended; });
  Update out = pending_;
  pending_.text.clear();
  return out;
}

}  // namespace strata::serve

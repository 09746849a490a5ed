#pragma once
// `strata serve`: an OpenAI-compatible HTTP server on cpp-httplib.
//
//   GET  /health                  {"status": "ok"} (503 while shutting down)
//   GET  /v1/models               the served model
//   GET  /v1/models/{id}          the model, or 404
//   POST /v1/completions          text completion (stream: server-sent events ending in [DONE])
//   POST /v1/chat/completions     chat completion through the model's chat template
//   GET  /metrics                 Prometheus text (serve/metrics.h)
//
// Errors are OpenAI's error JSON: 400 for invalid JSON or fields (the field named), 401 without
// the API key, 404 for unknown routes or models, 413 for bodies over max_body_bytes, 503 with
// Retry-After when the queue is full or the server is stopping; never 500 for bad input. A
// streaming client that disconnects cancels its sequence (its KV cache is freed at the next step).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "strata/serve/backend.h"
#include "strata/serve/metrics.h"

namespace strata::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;       // 0: any free port (bind() says which)
  std::string model_id;  // the name /v1/models lists and requests must give
  std::string api_key;   // "": no authentication; else /v1/* needs "Authorization: Bearer KEY"
  std::size_t max_body_bytes = 4u << 20;
  int retry_after_seconds = 1;
  std::int64_t default_max_tokens = 16;    // completions without max_tokens (OpenAI's default)
  std::uint64_t cache_capacity_bytes = 0;  // the KV cache pool of the plan, shown by /metrics
  // HTTP worker threads (each streaming client holds one): 0 = running + queued sequences + 8.
  std::size_t http_threads = 0;
};

class Server {
 public:
  Server(Backend& backend, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket and returns its port. Throws IoError naming host and port.
  int bind();
  // Serves until stop(); returns when every connection is closed.
  void run();
  // Any thread: stop accepting, cancel what runs (streams end with an error event and [DONE]),
  // then close. Idempotent.
  void stop();
  bool stopping() const { return stopping_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stopping_{false};
};

// Constant-time comparison of an API key (the time depends on the lengths only).
bool api_key_matches(std::string_view expected, std::string_view given);

}  // namespace strata::serve

// The HTTP routes of `strata serve` on cpp-httplib: requests are parsed by protocol.h, turned into
// scheduler sequences through the Backend, and answered whole or streamed as server-sent events.
#include "strata/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "request_stream.h"

namespace strata::serve {

using nlohmann::json;

bool api_key_matches(std::string_view expected, std::string_view given) {
  // Every byte of the longer string is visited and differences are OR-ed: no early exit.
  const std::size_t n = std::max(expected.size(), given.size());
  unsigned difference = expected.size() != given.size() ? 1u : 0u;
  for (std::size_t i = 0; i < n; ++i) {
    const auto a = static_cast<unsigned char>(i < expected.size() ? expected[i] : 0);
    const auto b = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    difference |= static_cast<unsigned>(a ^ b);
  }
  return difference == 0;
}

namespace {

constexpr const char* kJson = "application/json";
// A streaming client that waits this long without a token gets an SSE comment, so a client that
// left is found (the write fails) even while its sequence waits in the queue.
constexpr auto kHeartbeat = std::chrono::seconds(2);
constexpr auto kPoll = std::chrono::milliseconds(100);

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* finish_reason(engine::SequenceEnd end) {
  return end == engine::SequenceEnd::Length ? "length" : "stop";
}

void send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status();
  res.set_content(error_body(error), kJson);
}

// The routes whose counts /metrics keeps apart; anything else counts as "other".
std::string route_label(const std::string& path) {
  for (const char* known :
       {"/health", "/v1/models", "/v1/completions", "/v1/chat/completions", "/metrics"}) {
    if (path == known) return known;
  }
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

}  // namespace

struct Server::Impl {
  Impl(Server& owner, Backend& backend, ServerOptions options)
      : owner(owner), backend(backend), options(std::move(options)) {}

  Server& owner;
  Backend& backend;
  ServerOptions options;
  httplib::Server http;
  Metrics metrics;
  std::atomic<int> active_streams{0};
  std::int64_t created = unix_now();

  void install_routes();
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, bool chat, const std::string& model,
              std::shared_ptr<RequestStream> sequence, engine::SequenceId id, std::int64_t prompt,
              bool include_usage, std::string echo);
};

namespace {

// What a request asks the scheduler for, built from either endpoint's fields.
struct Prepared {
  std::vector<std::int64_t> prompt;
  std::string echo;  // completions with echo: the prompt text to send first
  SamplingFields sampling;
};

}  // namespace

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  if (owner.stopping()) {
    res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
    throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
  }
  Prepared prepared;
  std::string model;
  if (chat) {
    ChatRequest request = parse_chat_request(req.body);
    model = request.model;
    if (model != options.model_id) {
      throw ApiError(404,
                     fmt::format("the model '{}' does not exist; this server serves '{}'", model,
                                 options.model_id),
                     "model", "model_not_found");
    }
    prepared.prompt = backend.encode_chat(request.messages);
    prepared.sampling = std::move(request.sampling);
  } else {
    CompletionRequest request = parse_completion_request(req.body);
    model = request.model;
    if (model != options.model_id) {
      throw ApiError(404,
                     fmt::format("the model '{}' does not exist; this server serves '{}'", model,
                                 options.model_id),
                     "model", "model_not_found");
    }
    if (request.prompt_ids) {
      for (std::int64_t id : *request.prompt_ids) {
        if (id >= backend.vocab_size()) {
          throw ApiError(400,
                         fmt::format("'prompt' holds token id {}, outside the vocabulary of {} "
                                     "tokens",
                                     id, backend.vocab_size()),
                         "prompt", "invalid_value");
        }
      }
      prepared.prompt = *request.prompt_ids;
    } else {
      prepared.prompt = backend.encode_prompt(request.prompt);
      if (request.echo) prepared.echo = request.prompt;
    }
    if (!request.sampling.max_tokens) request.sampling.max_tokens = options.default_max_tokens;
    prepared.sampling = std::move(request.sampling);
  }
  if (prepared.prompt.empty()) {
    throw ApiError(400, "the prompt is empty after tokenization: send at least one token",
                   chat ? "messages" : "prompt", "invalid_value");
  }
  const auto ctx = backend.scheduler().options().ctx_size;
  const auto prompt_tokens = static_cast<std::int64_t>(prepared.prompt.size());
  if (prompt_tokens >= ctx) {
    throw ApiError(400,
                   fmt::format("the prompt has {} tokens; the context holds {} (--ctx-size), so "
                               "no token is left to generate: shorten the prompt",
                               prompt_tokens, ctx),
                   chat ? "messages" : "prompt", "context_length_exceeded");
  }

  auto sequence = std::make_shared<RequestStream>(backend.text_stream(prepared.sampling.stop));
  engine::SequenceRequest request;
  request.prompt = std::move(prepared.prompt);
  request.max_new_tokens = prepared.sampling.max_tokens.value_or(ctx - prompt_tokens);
  request.eos_token_ids = backend.eos_token_ids();
  request.params = backend.sampling_params(prepared.sampling);
  request.seed = backend.seed_for(prepared.sampling);
  request.observer = sequence;
  engine::SequenceId id = 0;
  try {
    id = backend.scheduler().submit(std::move(request));
  } catch (const engine::QueueFull& e) {
    res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
    throw ApiError(503, e.what(), "", "server_busy");
  } catch (const NotSupported& e) {  // the scheduler stopped between the check and now
    res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
    throw ApiError(503, e.what(), "", "server_shutting_down");
  }

  if (prepared.sampling.stream) {
    stream(res, chat, model, std::move(sequence), id, prompt_tokens,
           prepared.sampling.include_usage, std::move(prepared.echo));
    return;
  }
  RequestStream::Update done = sequence->wait_end();
  if (done.end == engine::SequenceEnd::Cancelled) {
    res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
    throw ApiError(503, "the request was cancelled: the server is shutting down", "",
                   "server_shutting_down");
  }
  if (done.end == engine::SequenceEnd::Failed) {
    throw ApiError(500, "generation failed: " + done.message, "", "generation_failed");
  }
  const Usage usage{prompt_tokens, done.tokens};
  const std::string request_id = make_request_id(chat ? "chatcmpl" : "cmpl");
  const json body =
      chat ? chat_response(request_id, model, unix_now(), done.text, finish_reason(done.end), usage)
           : completion_response(request_id, model, unix_now(), prepared.echo + done.text,
                                 finish_reason(done.end), usage);
  res.set_content(dump_json(body), kJson);
}

void Server::Impl::stream(httplib::Response& res, bool chat, const std::string& model,
                          std::shared_ptr<RequestStream> sequence, engine::SequenceId id,
                          std::int64_t prompt_tokens, bool include_usage, std::string echo) {
  struct State {
    std::string request_id;
    std::int64_t created = 0;
    bool first = true;
    bool finished = false;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  auto state = std::make_shared<State>();
  state->request_id = make_request_id(chat ? "chatcmpl" : "cmpl");
  state->created = unix_now();
  const std::string object = chat ? "chat.completion.chunk" : "text_completion";
  ++active_streams;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, chat, model, sequence, state, prompt_tokens, include_usage, object,
       echo = std::move(echo)](std::size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& data) {
          state->last_write = std::chrono::steady_clock::now();
          return sink.write(data.data(), data.size());
        };
        auto chunk = [&](const std::string& text, std::string_view finish) {
          if (chat) {
            const bool first = state->first;
            state->first = false;
            return sse_event(chat_chunk(state->request_id, model, state->created,
                                        first ? "assistant" : "", text, finish, include_usage));
          }
          return sse_event(completion_chunk(state->request_id, model, state->created, text, finish,
                                            include_usage));
        };
        if (state->first && (chat || !echo.empty())) {
          if (!write(chunk(chat ? "" : echo, ""))) return false;
          state->first = false;
        }
        RequestStream::Update update = sequence->take(kPoll);
        if (!update.text.empty() && !write(chunk(update.text, ""))) return false;
        if (!update.ended) {
          if (std::chrono::steady_clock::now() - state->last_write > kHeartbeat) {
            return write(": keep-alive\n\n");
          }
          return true;
        }
        state->finished = true;
        if (update.end == engine::SequenceEnd::Stop || update.end == engine::SequenceEnd::Length) {
          if (!write(chunk("", finish_reason(update.end)))) return false;
          if (include_usage &&
              !write(sse_event(usage_chunk(object, state->request_id, model, state->created,
                                           {prompt_tokens, update.tokens})))) {
            return false;
          }
        } else {
          const bool shutting = update.end == engine::SequenceEnd::Cancelled;
          const ApiError error(shutting ? 503 : 500,
                               shutting ? "the request was cancelled: the server is shutting down"
                                        : "generation failed: " + update.message,
                               "", shutting ? "server_shutting_down" : "generation_failed");
          if (!write("data: " + error_body(error) + "\n\n")) return false;
        }
        if (!write(std::string(kSseDone))) return false;
        sink.done();
        return true;
      },
      [this, sequence, id, state](bool) {
        // The client left (or the stream ended): a sequence still running is cancelled so its
        // cache slot frees at the next step.
        if (!state->finished) backend.scheduler().cancel(id);
        --active_streams;
      });
}

void Server::Impl::install_routes() {
  http.set_payload_max_length(options.max_body_bytes);
  const std::size_t threads =
      options.http_threads != 0
          ? options.http_threads
          : static_cast<std::size_t>(backend.scheduler().options().max_sequences +
                                     backend.scheduler().options().max_queue + 8);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty() || req.path.rfind("/v1/", 0) != 0) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    const bool bearer = header.rfind(kBearer, 0) == 0;
    const std::string_view given =
        bearer ? std::string_view(header).substr(kBearer.size()) : std::string_view();
    if (bearer && api_key_matches(options.api_key, given)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, ApiError(401,
                             bearer ? "the API key is not valid"
                                    : "an API key is required: send 'Authorization: Bearer KEY'",
                             "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });

  // Answers for statuses httplib sets itself (unknown route 404, body too large 413, a request
  // line it cannot read 400) in OpenAI's error format; handlers' own bodies are kept.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string message;
        std::string code;
        if (res.status == 404) {
          message = fmt::format(
              "no route {} {}: the server offers GET /health, GET /v1/models, "
              "POST /v1/completions, POST /v1/chat/completions, GET /metrics",
              req.method, req.path);
          code = "not_found";
        } else if (res.status == 413) {
          message = fmt::format("the request body is larger than {} bytes", options.max_body_bytes);
          code = "request_too_large";
        } else {
          message = fmt::format("HTTP {}", res.status);
        }
        res.set_content(error_body(res.status, message, "", code), kJson);
        return httplib::Server::HandlerResponse::Handled;
      }));

  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        try {
          std::rethrow_exception(error);
        } catch (const ApiError& e) {
          send_error(res, e);
        } catch (const InvalidArgument& e) {  // bad input the engine found (a prompt, a value)
          send_error(res, ApiError(400, e.what(), "", "invalid_value"));
        } catch (const std::exception& e) {
          send_error(res, ApiError(500, fmt::format("internal error: {}", e.what())));
        } catch (...) {
          send_error(res, ApiError(500, "internal error"));
        }
      });

  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(route_label(req.path), res.status);
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (owner.stopping()) {
      res.status = 503;
      res.set_content(R"({"status":"stopping"})", kJson);
      return;
    }
    res.set_content(R"({"status":"ok"})", kJson);
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump_json(models_response(options.model_id, created)), kJson);
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id != options.model_id) {
      throw ApiError(404, fmt::format("the model '{}' does not exist", id), "model",
                     "model_not_found");
    }
    res.set_content(dump_json(models_response(options.model_id, created)["data"][0]), kJson);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, false);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, true);
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(backend.scheduler().stats(), options.cache_capacity_bytes,
                                   Metrics::Clock::now()),
                    "text/plain; version=0.0.4");
  });
}

Server::Server(Backend& backend, ServerOptions options)
    : impl_(std::make_unique<Impl>(*this, backend, std::move(options))) {
  impl_->install_routes();
}

Server::~Server() { stop(); }

int Server::bind() {
  const ServerOptions& o = impl_->options;
  // cpp-httplib 0.11 listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into
  // Debian's library): many clients connecting at once overflow it and some get reset. The
  // listening socket is taken when it is made and listen() is called again with the system's
  // maximum, which Linux applies to a socket that already listens.
  int socket_fd = -1;
  impl_->http.set_socket_options([&socket_fd](socket_t sock) {
    httplib::default_socket_options(sock);
    socket_fd = sock;
  });
  int port = o.port;
  if (o.port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    STRATA_CHECK(port > 0, IoError, "cannot listen on {} (any port)", o.host);
  } else {
    STRATA_CHECK(impl_->http.bind_to_port(o.host, o.port), IoError,
                 "cannot listen on {}:{}: is the port taken (--port) or the address not local "
                 "(--host)?",
                 o.host, o.port);
  }
  if (socket_fd >= 0) ::listen(socket_fd, SOMAXCONN);
  impl_->http.set_socket_options(httplib::default_socket_options);  // drops the capture
  return port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  if (stopping_.exchange(true)) return;
  // Cancel first: the streams write their last event and [DONE] while the socket is still up;
  // then wait (bounded) for them to finish writing before closing.
  impl_->backend.scheduler().shutdown();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (impl_->active_streams > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->http.stop();
}

}  // namespace strata::serve

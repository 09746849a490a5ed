#pragma once
// The OpenAI HTTP protocol, as pure functions: request bodies parsed and validated into typed
// structs (each bad field named in a 400), responses, streamed chunks (server-sent events) and
// error bodies formatted as OpenAI's API formats them. No sockets, no model: unit-tested and
// fuzzed on their own (fuzz/serve_request_fuzz.cc).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/error.h"

namespace strata::serve {

// An error answered to the client: the HTTP status (400 bad request, 404 unknown route or model,
// 413 body too large, 503 queue full), OpenAI's error `type` and `code`, and the request field at
// fault (`param`, "" for none). The server turns it into OpenAI's error JSON.
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // invalid_request_error (4xx), server_error (5xx; 503 is "server_is_busy" style overload).
  std::string type() const;

 private:
  int status_;
  std::string param_;
  std::string code_;
};

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
std::string error_body(const ApiError& error);
std::string error_body(int status, const std::string& message, const std::string& param = {},
                       const std::string& code = {});

// The decoding fields both endpoints share, as the client sent them (absent = the server's
// defaults, which come from the model's generation_config.json).
struct SamplingFields {
  std::optional<double> temperature;         // [0, 2]; 0 is greedy
  std::optional<double> top_p;               // (0, 1]
  std::optional<std::int64_t> top_k;         // >= -1 (-1 and 0 disable it; vLLM's extension)
  std::optional<double> min_p;               // [0, 1]
  std::optional<double> repetition_penalty;  // > 0 (vLLM's extension)
  double presence_penalty = 0.0;             // [-2, 2]
  double frequency_penalty = 0.0;            // [-2, 2]
  std::optional<std::uint64_t> seed;         // any integer (negative ones are taken mod 2^64)
  std::optional<std::int64_t> max_tokens;    // >= 1; max_completion_tokens wins over max_tokens
  std::vector<std::string> stop;             // up to 4 non-empty strings
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

struct CompletionRequest {
  std::string model;
  // A string prompt, or token ids when the client sent a list of integers.
  std::string prompt;
  std::optional<std::vector<std::int64_t>> prompt_ids;
  bool echo = false;  // prepend the prompt to the text (OpenAI's legacy echo)
  SamplingFields sampling;
};

struct ChatRequest {
  std::string model;
  // OpenAI messages, normalised for chat templates: each {"role": string, "content": string}
  // (a list of text parts is joined into one string) plus any other keys the client sent.
  nlohmann::json messages;
  SamplingFields sampling;
};

// Parse and validate a body. Throw ApiError(400) naming the field: invalid JSON, a body that is
// not an object, a missing or mistyped field, a value out of range, or a feature the server does
// not offer (n > 1, logprobs, tools, several prompts). Unknown fields are ignored, as vLLM does,
// so clients that send newer fields keep working.
CompletionRequest parse_completion_request(std::string_view body);
ChatRequest parse_chat_request(std::string_view body);

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& usage);

// "cmpl-..." / "chatcmpl-..." followed by 24 random hex digits.
std::string make_request_id(std::string_view prefix);

// One response object per request kind; `finish_reason` is "stop" or "length".
nlohmann::json completion_response(const std::string& id, const std::string& model,
                                   std::int64_t created, const std::string& text,
                                   std::string_view finish_reason, const Usage& usage);
nlohmann::json chat_response(const std::string& id, const std::string& model, std::int64_t created,
                             const std::string& content, std::string_view finish_reason,
                             const Usage& usage);

// Streamed chunks. `finish_reason` empty = null (a chunk in the middle of the stream). When
// the client asked for include_usage every chunk carries "usage": null and a last chunk with
// empty choices carries the usage (usage_chunk), as OpenAI streams it.
nlohmann::json completion_chunk(const std::string& id, const std::string& model,
                                std::int64_t created, const std::string& text,
                                std::string_view finish_reason, bool include_usage);
// `role` is sent in the first chunk only ("" otherwise); `content` is omitted from the delta when
// empty and no role is sent with it.
nlohmann::json chat_chunk(const std::string& id, const std::string& model, std::int64_t created,
                          std::string_view role, const std::string& content,
                          std::string_view finish_reason, bool include_usage);
nlohmann::json usage_chunk(std::string_view object, const std::string& id, const std::string& model,
                           std::int64_t created, const Usage& usage);

// "data: {json}\n\n"; invalid UTF-8 in strings is replaced (U+FFFD) instead of throwing.
std::string sse_event(const nlohmann::json& payload);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
// JSON text with invalid UTF-8 replaced, for every body the server sends.
std::string dump_json(const nlohmann::json& value);

// GET /v1/models: one model, `id` as served.
nlohmann::json models_response(const std::string& id, std::int64_t created);

}  // namespace strata::serve

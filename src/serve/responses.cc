// OpenAI response bodies, streamed chunks and error bodies.
#include <fmt/format.h>

#include <random>

#include "strata/serve/protocol.h"

namespace strata::serve {

using nlohmann::json;

ApiError::ApiError(int status, const std::string& message, std::string param, std::string code)
    : Error(message), status_(status), param_(std::move(param)), code_(std::move(code)) {}

std::string ApiError::type() const {
  return status_ >= 500 ? "server_error" : "invalid_request_error";
}

std::string dump_json(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_body(int status, const std::string& message, const std::string& param,
                       const std::string& code) {
  return error_body(ApiError(status, message, param, code));
}

std::string error_body(const ApiError& error) {
  json body = {{"error",
                {{"message", error.what()},
                 {"type", error.type()},
                 {"param", error.param().empty() ? json(nullptr) : json(error.param())},
                 {"code", error.code().empty() ? json(nullptr) : json(error.code())}}}};
  return dump_json(body);
}

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

std::string make_request_id(std::string_view prefix) {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return fmt::format("{}-{:016x}{:08x}", prefix, engine(), static_cast<std::uint32_t>(engine()));
}

namespace {

json finish_json(std::string_view finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(std::string(finish_reason));
}

json envelope(std::string_view object, const std::string& id, const std::string& model,
              std::int64_t created) {
  return {{"id", id}, {"object", std::string(object)}, {"created", created}, {"model", model}};
}

}  // namespace

json completion_response(const std::string& id, const std::string& model, std::int64_t created,
                         const std::string& text, std::string_view finish_reason,
                         const Usage& usage) {
  json out = envelope("text_completion", id, model, created);
  out["choices"] = json::array({{{"index", 0},
                                 {"text", text},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  out["usage"] = usage_json(usage);
  return out;
}

json chat_response(const std::string& id, const std::string& model, std::int64_t created,
                   const std::string& content, std::string_view finish_reason, const Usage& usage) {
  json out = envelope("chat.completion", id, model, created);
  out["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", content}}},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  out["usage"] = usage_json(usage);
  return out;
}

json completion_chunk(const std::string& id, const std::string& model, std::int64_t created,
                      const std::string& text, std::string_view finish_reason, bool include_usage) {
  json out = envelope("text_completion", id, model, created);
  out["choices"] = json::array({{{"index", 0},
                                 {"text", text},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json chat_chunk(const std::string& id, const std::string& model, std::int64_t created,
                std::string_view role, const std::string& content, std::string_view finish_reason,
                bool include_usage) {
  json out = envelope("chat.completion.chunk", id, model, created);
  json delta = json::object();
  if (!role.empty()) delta["role"] = std::string(role);
  if (!content.empty() || !role.empty()) delta["content"] = content;
  out["choices"] = json::array({{{"index", 0},
                                 {"delta", delta},
                                 {"logprobs", nullptr},
                                 {"finish_reason", finish_json(finish_reason)}}});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk(std::string_view object, const std::string& id, const std::string& model,
                 std::int64_t created, const Usage& usage) {
  json out = envelope(object, id, model, created);
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

std::string sse_event(const json& payload) { return "data: " + dump_json(payload) + "\n\n"; }

json models_response(const std::string& id, std::int64_t created) {
  return {{"object", "list"},
          {"data",
           json::array(
               {{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "strata"}}})}};
}

}  // namespace strata::serve

// libFuzzer target: the request parser of `strata serve` (serve/protocol.h) on arbitrary bodies.
// A body is accepted or refused with ApiError(400) naming a field; nothing else may happen. What
// is accepted holds the documented ranges, and the error body of what is refused is JSON.
// Seeds: fuzz/corpus/serve_request (valid and damaged completion and chat bodies, written by
// hand from OpenAI's API reference).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "strata/serve/protocol.h"

namespace {

void check(const strata::serve::SamplingFields& s) {
  if (s.temperature && !(*s.temperature >= 0.0 && *s.temperature <= 2.0)) std::abort();
  if (s.top_p && !(*s.top_p > 0.0 && *s.top_p <= 1.0)) std::abort();
  if (s.top_k && *s.top_k < -1) std::abort();
  if (s.min_p && !(*s.min_p >= 0.0 && *s.min_p <= 1.0)) std::abort();
  if (s.max_tokens && *s.max_tokens < 1) std::abort();
  if (std::fabs(s.presence_penalty) > 2.0 || std::fabs(s.frequency_penalty) > 2.0) std::abort();
  if (s.stop.size() > 4) std::abort();
  for (const auto& stop : s.stop) {
    if (stop.empty()) std::abort();
  }
  if (s.include_usage && !s.stream) std::abort();
}

void refused(const strata::serve::ApiError& e) {
  if (e.status() != 400) std::abort();
  const auto body = nlohmann::json::parse(strata::serve::error_body(e), nullptr, false);
  if (body.is_discarded() || !body["error"]["message"].is_string()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  try {
    const auto request = strata::serve::parse_completion_request(body);
    check(request.sampling);
    if (request.prompt_ids) {
      for (std::int64_t id : *request.prompt_ids) {
        if (id < 0) std::abort();
      }
      if (request.prompt_ids->empty()) std::abort();
    }
    // Whatever text came in can be sent back (invalid UTF-8 is replaced, never thrown).
    (void)strata::serve::dump_json(strata::serve::completion_response(
        "cmpl-x", request.model, 0, request.prompt, "stop", {1, 1}));
  } catch (const strata::serve::ApiError& e) {
    refused(e);
  }
  try {
    const auto request = strata::serve::parse_chat_request(body);
    check(request.sampling);
    if (!request.messages.is_array() || request.messages.empty()) std::abort();
    for (const auto& message : request.messages) {
      if (!message["role"].is_string() || !message["content"].is_string()) std::abort();
    }
    (void)strata::serve::dump_json(request.messages);
  } catch (const strata::serve::ApiError& e) {
    refused(e);
  }
  return 0;
}

// OpenAI request bodies into typed requests. Every rejection is an ApiError(400) whose param is
// the field at fault and whose message says what was expected and what came.
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "strata/serve/protocol.h"

namespace strata::serve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

std::string type_name(const json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "null";
}

json parse_object(std::string_view body) {
  json parsed;
  try {
    parsed = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    throw ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what()), "",
                   "invalid_json");
  }
  if (!parsed.is_object()) {
    throw ApiError(400,
                   fmt::format("the request body must be a JSON object; got {}", type_name(parsed)),
                   "", "invalid_json");
  }
  return parsed;
}

// The field's value when present and not null.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> number_in(const json& body, const char* name, double low, double high,
                                bool low_open, const char* range) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  if (!value->is_number()) {
    bad(name, fmt::format("'{}' must be a number {}; got {}", name, range, type_name(*value)));
  }
  const double x = value->get<double>();
  if (!std::isfinite(x) || x < low || x > high || (low_open && x == low)) {
    bad(name, fmt::format("'{}' must be {}; got {}", name, range, x));
  }
  return x;
}

std::optional<std::int64_t> integer(const json& body, const char* name, std::int64_t low,
                                    const char* range) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  // 4.0 is accepted as 4 (JavaScript clients have no integers); 4.5 is not.
  std::int64_t x = 0;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() &&
        value->get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      bad(name, fmt::format("'{}' must be an integer {}; got {}", name, range, value->dump()));
    }
    x = value->get<std::int64_t>();
  } else if (value->is_number_float()) {
    const double d = value->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) {
      bad(name, fmt::format("'{}' must be an integer {}; got {}", name, range, value->dump()));
    }
    x = static_cast<std::int64_t>(d);
  } else {
    bad(name, fmt::format("'{}' must be an integer {}; got {}", name, range, type_name(*value)));
  }
  if (x < low) bad(name, fmt::format("'{}' must be an integer {}; got {}", name, range, x));
  return x;
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* value = field(body, name);
  if (!value) return fallback;
  if (!value->is_boolean()) {
    bad(name, fmt::format("'{}' must be true or false; got {}", name, type_name(*value)));
  }
  return value->get<bool>();
}

std::string required_string(const json& body, const char* name) {
  const json* value = field(body, name);
  if (!value) bad(name, fmt::format("'{}' is required", name));
  if (!value->is_string()) {
    bad(name, fmt::format("'{}' must be a string; got {}", name, type_name(*value)));
  }
  return value->get<std::string>();
}

void refuse_unless(bool ok, const char* name, const std::string& message) {
  if (!ok) throw ApiError(400, message, name, "unsupported_parameter");
}

// Fields the server does not offer: refused by name instead of silently ignored, since a client
// that asks for them would get something else than it expects.
void refuse_unsupported(const json& body) {
  if (auto n = integer(body, "n", 1, ">= 1")) {
    refuse_unless(*n == 1, "n", fmt::format("'n' must be 1 (one choice per request); got {}", *n));
  }
  if (auto best_of = integer(body, "best_of", 1, ">= 1")) {
    refuse_unless(*best_of == 1, "best_of", fmt::format("'best_of' must be 1; got {}", *best_of));
  }
  if (const json* logprobs = field(body, "logprobs")) {
    const bool off = (logprobs->is_boolean() && !logprobs->get<bool>()) ||
                     (logprobs->is_number_integer() && logprobs->get<std::int64_t>() == 0);
    refuse_unless(off, "logprobs", "'logprobs' is not supported by this server");
  }
  if (const json* top_logprobs = field(body, "top_logprobs")) {
    refuse_unless(top_logprobs->is_number_integer() && top_logprobs->get<std::int64_t>() == 0,
                  "top_logprobs", "'top_logprobs' is not supported by this server");
  }
  if (const json* tools = field(body, "tools")) {
    refuse_unless(tools->is_array() && tools->empty(), "tools",
                  "'tools' is not supported by this server");
  }
  if (const json* logit_bias = field(body, "logit_bias")) {
    refuse_unless(logit_bias->is_object() && logit_bias->empty(), "logit_bias",
                  "'logit_bias' is not supported by this server");
  }
  if (const json* suffix = field(body, "suffix")) {
    refuse_unless(suffix->is_string() && suffix->get<std::string>().empty(), "suffix",
                  "'suffix' is not supported by this server");
  }
  if (const json* format = field(body, "response_format")) {
    const bool text =
        format->is_object() && format->contains("type") && (*format)["type"] == "text";
    refuse_unless(text, "response_format",
                  "'response_format' must be {\"type\": \"text\"}: structured output is not "
                  "supported by this server");
  }
}

std::vector<std::string> stop_strings(const json& body) {
  const json* value = field(body, "stop");
  if (!value) return {};
  std::vector<std::string> out;
  if (value->is_string()) {
    out.push_back(value->get<std::string>());
  } else if (value->is_array()) {
    if (value->size() > 4) {
      bad("stop", fmt::format("'stop' holds at most 4 strings; got {}", value->size()));
    }
    for (const json& item : *value) {
      if (!item.is_string()) {
        bad("stop", fmt::format("'stop' must be a string or an array of strings; an item is {}",
                                type_name(item)));
      }
      out.push_back(item.get<std::string>());
    }
  } else {
    bad("stop",
        fmt::format("'stop' must be a string or an array of strings; got {}", type_name(*value)));
  }
  for (const std::string& s : out) {
    if (s.empty()) bad("stop", "'stop' strings must not be empty");
  }
  return out;
}

SamplingFields sampling_fields(const json& body) {
  refuse_unsupported(body);
  SamplingFields s;
  s.temperature = number_in(body, "temperature", 0.0, 2.0, false, "in [0, 2]");
  s.top_p = number_in(body, "top_p", 0.0, 1.0, true, "in (0, 1]");
  s.top_k = integer(body, "top_k", -1, ">= -1 (-1 or 0 disable it)");
  s.min_p = number_in(body, "min_p", 0.0, 1.0, false, "in [0, 1]");
  s.repetition_penalty = number_in(body, "repetition_penalty", 0.0, 1.0e9, true, "> 0");
  s.presence_penalty =
      number_in(body, "presence_penalty", -2.0, 2.0, false, "in [-2, 2]").value_or(0.0);
  s.frequency_penalty =
      number_in(body, "frequency_penalty", -2.0, 2.0, false, "in [-2, 2]").value_or(0.0);
  if (const json* seed = field(body, "seed")) {
    if (seed->is_number_unsigned()) {
      s.seed = seed->get<std::uint64_t>();
    } else if (seed->is_number_integer()) {
      s.seed = static_cast<std::uint64_t>(seed->get<std::int64_t>());
    } else {
      bad("seed", fmt::format("'seed' must be an integer; got {}", type_name(*seed)));
    }
  }
  s.max_tokens = integer(body, "max_tokens", 1, ">= 1");
  if (auto m = integer(body, "max_completion_tokens", 1, ">= 1")) s.max_tokens = m;
  s.stop = stop_strings(body);
  s.stream = boolean(body, "stream", false);
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) {
      bad("stream_options",
          fmt::format("'stream_options' must be an object; got {}", type_name(*options)));
    }
    if (!s.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (const json* usage = field(*options, "include_usage")) {
      if (!usage->is_boolean()) {
        bad("stream_options.include_usage",
            fmt::format("'stream_options.include_usage' must be true or false; got {}",
                        type_name(*usage)));
      }
      s.include_usage = usage->get<bool>();
    }
  }
  return s;
}

std::vector<std::int64_t> token_ids(const json& list, const char* name) {
  std::vector<std::int64_t> ids;
  for (const json& item : list) {
    if (!item.is_number_integer() || item.get<std::int64_t>() < 0 ||
        (item.is_number_unsigned() &&
         item.get<std::uint64_t>() >
             static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))) {
      bad(name,
          fmt::format("'{}' token ids must be non-negative integers; got {}", name, item.dump()));
    }
    ids.push_back(item.get<std::int64_t>());
  }
  if (ids.empty()) bad(name, fmt::format("'{}' must not be empty", name));
  return ids;
}

// A message's content as one string: a string, a list of text parts ({"type": "text", "text"}),
// or null (an assistant turn that only called tools).
std::string content_text(const json& message, std::size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) {
    bad(param, fmt::format("'{}' must be a string or an array of text parts; got {}", param,
                           type_name(*it)));
  }
  std::string text;
  for (std::size_t p = 0; p < it->size(); ++p) {
    const json& part = (*it)[p];
    const std::string part_param = fmt::format("{}[{}]", param, p);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      bad(part_param, fmt::format("'{}' must be an object with a string 'type'", part_param));
    }
    if (part["type"] != "text") {
      throw ApiError(400,
                     fmt::format("'{}' has type '{}'; only 'text' parts are supported", part_param,
                                 part["type"].get<std::string>()),
                     part_param, "unsupported_parameter");
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      bad(part_param, fmt::format("'{}.text' must be a string", part_param));
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

json normalised_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) bad("messages", "'messages' is required");
  if (!messages->is_array()) {
    bad("messages", fmt::format("'messages' must be an array; got {}", type_name(*messages)));
  }
  if (messages->empty()) bad("messages", "'messages' must hold at least one message");
  json out = json::array();
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!message.is_object()) {
      bad(param, fmt::format("'{}' must be an object; got {}", param, type_name(message)));
    }
    auto role = message.find("role");
    if (role == message.end() || !role->is_string()) {
      bad(param + ".role", fmt::format("'{}.role' must be a string", param));
    }
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer") {
      bad(param + ".role",
          fmt::format("'{}.role' must be system, developer, user, assistant or tool; got '{}'",
                      param, r));
    }
    json normal = message;
    normal["content"] = content_text(message, i);
    out.push_back(std::move(normal));
  }
  return out;
}

}  // namespace

CompletionRequest parse_completion_request(std::string_view body_text) {
  const json body = parse_object(body_text);
  CompletionRequest request;
  request.model = required_string(body, "model");
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "'prompt' is required");
  if (prompt->is_string()) {
    request.prompt = prompt->get<std::string>();
  } else if (prompt->is_array()) {
    if (prompt->empty()) bad("prompt", "'prompt' must not be empty");
    const json& first = prompt->front();
    if (first.is_number()) {
      request.prompt_ids = token_ids(*prompt, "prompt");
    } else if (prompt->size() > 1) {
      throw ApiError(
          400,
          fmt::format("'prompt' holds {} prompts; send one prompt per request", prompt->size()),
          "prompt", "unsupported_parameter");
    } else if (first.is_string()) {
      request.prompt = first.get<std::string>();
    } else if (first.is_array()) {
      request.prompt_ids = token_ids(first, "prompt");
    } else {
      bad("prompt", fmt::format("'prompt' must be a string, an array of token ids or an array of "
                                "one of those; got an array of {}",
                                type_name(first)));
    }
  } else {
    bad("prompt", fmt::format("'prompt' must be a string or an array of token ids; got {}",
                              type_name(*prompt)));
  }
  request.echo = boolean(body, "echo", false);
  request.sampling = sampling_fields(body);
  return request;
}

ChatRequest parse_chat_request(std::string_view body_text) {
  const json body = parse_object(body_text);
  ChatRequest request;
  request.model = required_string(body, "model");
  request.messages = normalised_messages(body);
  request.sampling = sampling_fields(body);
  return request;
}

}  // namespace strata::serve

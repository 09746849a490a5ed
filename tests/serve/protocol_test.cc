// Request parsing and response formatting against OpenAI's API reference (field names, ranges,
// the shape of responses, chunks and errors as api.openai.com sends them).
#include "strata/serve/protocol.h"

#include <gtest/gtest.h>

namespace strata::serve {
namespace {

using nlohmann::json;

struct BadCase {
  const char* body;
  const char* param;  // "" = none
  const char* words;  // a part of the message
};

void expect_bad_completion(const BadCase& c) {
  try {
    parse_completion_request(c.body);
    ADD_FAILURE() << "accepted: " << c.body;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << c.body;
    EXPECT_EQ(e.param(), c.param) << c.body << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.words), std::string::npos) << c.body << ": " << e.what();
  }
}

TEST(ServeProtocol, CompletionFields) {
  const CompletionRequest r = parse_completion_request(R"({
    "model": "m", "prompt": "Once", "max_tokens": 7, "temperature": 0, "top_p": 0.5,
    "top_k": 20, "min_p": 0.1, "seed": -1, "stop": ["\n", "end"], "presence_penalty": 1.5,
    "frequency_penalty": -2, "stream": true, "stream_options": {"include_usage": true},
    "repetition_penalty": 1.1, "user": "ignored", "some_new_field": 1})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "Once");
  EXPECT_FALSE(r.prompt_ids.has_value());
  const SamplingFields& s = r.sampling;
  EXPECT_EQ(s.max_tokens, 7);
  EXPECT_EQ(s.temperature, 0.0);
  EXPECT_EQ(s.top_p, 0.5);
  EXPECT_EQ(s.top_k, 20);
  EXPECT_EQ(s.min_p, 0.1);
  EXPECT_EQ(s.seed, ~std::uint64_t{0});
  EXPECT_EQ(s.stop, (std::vector<std::string>{"\n", "end"}));
  EXPECT_EQ(s.presence_penalty, 1.5);
  EXPECT_EQ(s.frequency_penalty, -2.0);
  EXPECT_EQ(s.repetition_penalty, 1.1);
  EXPECT_TRUE(s.stream);
  EXPECT_TRUE(s.include_usage);
}

TEST(ServeProtocol, CompletionDefaultsAndPromptForms) {
  const CompletionRequest r = parse_completion_request(R"({"model": "m", "prompt": ["hi"]})");
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_FALSE(r.sampling.temperature.has_value());
  EXPECT_FALSE(r.sampling.max_tokens.has_value());
  EXPECT_FALSE(r.sampling.stream);
  EXPECT_TRUE(r.sampling.stop.empty());
  EXPECT_EQ(parse_completion_request(R"({"model":"m","prompt":[1,2,3]})").prompt_ids,
            (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(parse_completion_request(R"({"model":"m","prompt":[[4,5]]})").prompt_ids,
            (std::vector<std::int64_t>{4, 5}));
  // JavaScript numbers: 4.0 is an integer; nulls are absent fields.
  const CompletionRequest js = parse_completion_request(
      R"({"model":"m","prompt":"x","max_tokens":4.0,"temperature":null,"stop":null})");
  EXPECT_EQ(js.sampling.max_tokens, 4);
  EXPECT_FALSE(js.sampling.temperature.has_value());
  EXPECT_EQ(parse_completion_request(R"({"model":"m","prompt":"x","stop":"S"})").sampling.stop,
            (std::vector<std::string>{"S"}));
  // max_completion_tokens wins over max_tokens.
  EXPECT_EQ(parse_completion_request(
                R"({"model":"m","prompt":"x","max_tokens":3,"max_completion_tokens":9})")
                .sampling.max_tokens,
            9);
}

TEST(ServeProtocol, MalformedCompletionsNameTheField) {
  const BadCase cases[] = {
      {"", "", "not valid JSON"},
      {"{", "", "not valid JSON"},
      {"[1]", "", "must be a JSON object"},
      {"\"text\"", "", "must be a JSON object"},
      {R"({"prompt":"x"})", "model", "'model' is required"},
      {R"({"model":3,"prompt":"x"})", "model", "must be a string"},
      {R"({"model":"m"})", "prompt", "'prompt' is required"},
      {R"({"model":"m","prompt":5})", "prompt", "must be a string"},
      {R"({"model":"m","prompt":[]})", "prompt", "must not be empty"},
      {R"({"model":"m","prompt":["a","b"]})", "prompt", "one prompt per request"},
      {R"({"model":"m","prompt":[1,-2]})", "prompt", "non-negative integers"},
      {R"({"model":"m","prompt":[1,"a"]})", "prompt", "non-negative integers"},
      {R"({"model":"m","prompt":[[]]})", "prompt", "must not be empty"},
      {R"({"model":"m","prompt":[{}]})", "prompt", "an array of an object"},
      {R"({"model":"m","prompt":"x","max_tokens":0})", "max_tokens", ">= 1"},
      {R"({"model":"m","prompt":"x","max_tokens":"5"})", "max_tokens", "got a string"},
      {R"({"model":"m","prompt":"x","max_tokens":2.5})", "max_tokens", "an integer"},
      {R"({"model":"m","prompt":"x","max_tokens":1e300})", "max_tokens", "an integer"},
      {R"({"model":"m","prompt":"x","max_tokens":18446744073709551615})", "max_tokens",
       "an integer"},
      {R"({"model":"m","prompt":"x","max_completion_tokens":-1})", "max_completion_tokens", ">= 1"},
      {R"({"model":"m","prompt":"x","temperature":2.5})", "temperature", "in [0, 2]"},
      {R"({"model":"m","prompt":"x","temperature":-0.1})", "temperature", "in [0, 2]"},
      {R"({"model":"m","prompt":"x","temperature":"hot"})", "temperature", "a number"},
      {R"({"model":"m","prompt":"x","top_p":0})", "top_p", "in (0, 1]"},
      {R"({"model":"m","prompt":"x","top_p":1.01})", "top_p", "in (0, 1]"},
      {R"({"model":"m","prompt":"x","top_k":-2})", "top_k", ">= -1"},
      {R"({"model":"m","prompt":"x","min_p":2})", "min_p", "in [0, 1]"},
      {R"({"model":"m","prompt":"x","presence_penalty":3})", "presence_penalty", "in [-2, 2]"},
      {R"({"model":"m","prompt":"x","frequency_penalty":-3})", "frequency_penalty", "in [-2, 2]"},
      {R"({"model":"m","prompt":"x","repetition_penalty":0})", "repetition_penalty", "> 0"},
      {R"({"model":"m","prompt":"x","seed":1.5})", "seed", "an integer"},
      {R"({"model":"m","prompt":"x","stop":[1]})", "stop", "an item is an integer"},
      {R"({"model":"m","prompt":"x","stop":["a","b","c","d","e"]})", "stop", "at most 4"},
      {R"({"model":"m","prompt":"x","stop":[""]})", "stop", "must not be empty"},
      {R"({"model":"m","prompt":"x","stop":{}})", "stop", "got an object"},
      {R"({"model":"m","prompt":"x","stream":"yes"})", "stream", "true or false"},
      {R"({"model":"m","prompt":"x","stream_options":{"include_usage":true}})", "stream_options",
       "only allowed when 'stream' is true"},
      {R"({"model":"m","prompt":"x","stream":true,"stream_options":[]})", "stream_options",
       "must be an object"},
      {R"({"model":"m","prompt":"x","stream":true,"stream_options":{"include_usage":1}})",
       "stream_options.include_usage", "true or false"},
      {R"({"model":"m","prompt":"x","n":2})", "n", "must be 1"},
      {R"({"model":"m","prompt":"x","best_of":3})", "best_of", "must be 1"},
      {R"({"model":"m","prompt":"x","logprobs":5})", "logprobs", "not supported"},
      {R"({"model":"m","prompt":"x","logit_bias":{"1":5}})", "logit_bias", "not supported"},
      {R"({"model":"m","prompt":"x","suffix":"s"})", "suffix", "not supported"},
      {R"({"model":"m","prompt":"x","echo":1})", "echo", "true or false"},
  };
  for (const BadCase& c : cases) expect_bad_completion(c);
}

TEST(ServeProtocol, ChatMessagesAreNormalised) {
  const ChatRequest r = parse_chat_request(R"({"model":"m","messages":[
      {"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
      {"role":"assistant","content":null,"name":"x"}],
      "max_completion_tokens": 5, "logprobs": false})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0]["content"], "Be brief.");
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_EQ(r.messages[2]["content"], "");
  EXPECT_EQ(r.messages[2]["name"], "x");
  EXPECT_EQ(r.sampling.max_tokens, 5);
}

TEST(ServeProtocol, MalformedChatsNameTheField) {
  const BadCase cases[] = {
      {R"({"model":"m"})", "messages", "'messages' is required"},
      {R"({"model":"m","messages":{}})", "messages", "must be an array"},
      {R"({"model":"m","messages":[]})", "messages", "at least one message"},
      {R"({"model":"m","messages":[1]})", "messages[0]", "must be an object"},
      {R"({"model":"m","messages":[{"content":"x"}]})", "messages[0].role", "must be a string"},
      {R"({"model":"m","messages":[{"role":"king","content":"x"}]})", "messages[0].role",
       "got 'king'"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content",
       "must be a string or an array"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "messages[0].content[0]", "only 'text' parts"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages[0].content[0]", ".text' must be a string"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{}]})", "tools",
       "not supported"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],
           "response_format":{"type":"json_object"}})",
       "response_format", "not supported"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})",
       "top_logprobs", "not supported"},
  };
  for (const BadCase& c : cases) {
    try {
      parse_chat_request(c.body);
      ADD_FAILURE() << "accepted: " << c.body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << c.body;
      EXPECT_EQ(e.param(), c.param) << c.body << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(c.words), std::string::npos)
          << c.body << ": " << e.what();
    }
  }
}

TEST(ServeProtocol, ErrorBodyIsOpenAIs) {
  const json body = json::parse(error_body(ApiError(400, "bad top_p", "top_p", "invalid_value")));
  EXPECT_EQ(body, json::parse(R"({"error": {"message": "bad top_p", "type":
      "invalid_request_error", "param": "top_p", "code": "invalid_value"}})"));
  const json busy = json::parse(error_body(503, "busy"));
  EXPECT_EQ(busy["error"]["type"], "server_error");
  EXPECT_TRUE(busy["error"]["param"].is_null());
  EXPECT_TRUE(busy["error"]["code"].is_null());
}

TEST(ServeProtocol, ResponsesAndChunks) {
  const json c = completion_response("cmpl-1", "m", 10, "text", "length", {3, 4});
  EXPECT_EQ(c, json::parse(R"({"id":"cmpl-1","object":"text_completion","created":10,
      "model":"m","choices":[{"index":0,"text":"text","logprobs":null,"finish_reason":"length"}],
      "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})"));
  const json chat = chat_response("chatcmpl-1", "m", 10, "hi", "stop", {1, 2});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"], json::parse(R"({"role":"assistant","content":"hi"})"));
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");

  const json first = chat_chunk("chatcmpl-1", "m", 10, "assistant", "", "", false);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(first.contains("usage"));
  const json last = chat_chunk("chatcmpl-1", "m", 10, "", "", "stop", true);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["usage"].is_null());
  const json usage = usage_chunk("chat.completion.chunk", "chatcmpl-1", "m", 10, {5, 6});
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 11);
  EXPECT_EQ(completion_chunk("cmpl-1", "m", 1, "a", "", false)["choices"][0]["text"], "a");

  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  // Broken UTF-8 (a token that ends mid-character) is replaced, never thrown.
  EXPECT_EQ(dump_json(json("a\xff")), "\"a\xEF\xBF\xBD\"");
  const std::string id = make_request_id("chatcmpl");
  EXPECT_EQ(id.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(id.size(), std::string("chatcmpl-").size() + 24);
  EXPECT_EQ(models_response("m", 5)["data"][0]["id"], "m");
}

}  // namespace
}  // namespace strata::serve

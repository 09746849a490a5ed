// The HTTP server over real loopback sockets with a fake backend (fake_backend.h): routes,
// answers and streams in OpenAI's format, every kind of bad request with its status and error
// body, authentication, a full queue, a client leaving mid-stream and a shutdown mid-stream.
#include "strata/serve/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <thread>

#include "serve/fake_backend.h"

namespace strata::serve {
namespace {

using nlohmann::json;
using testing::FakeBackend;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef STRATA_HTTPLIB_CLIENT
    GTEST_SKIP() << "built without the OpenSSL headers: cpp-httplib's client classes would not "
                    "match Debian's library (cmake/StrataTextDeps.cmake)";
#endif
  }
  void start(engine::SchedulerOptions scheduler = {.max_sequences = 4,
                                                   .max_queue = 8,
                                                   .ctx_size = 256},
             bool chat_template = true, std::string api_key = "") {
    backend_ = std::make_unique<FakeBackend>(scheduler, chat_template);
    ServerOptions options;
    options.port = 0;
    options.model_id = "fake";
    options.api_key = std::move(api_key);
    options.max_body_bytes = 4096;
    server_ = std::make_unique<Server>(*backend_, options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    if (server_) {
      backend_->model().set_open(true);
      server_->stop();
      thread_.join();
    }
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(std::chrono::seconds(30));
    return c;
  }
  httplib::Result post(const std::string& path, const std::string& body) {
    return client().Post(path.c_str(), body, "application/json");
  }

  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = 0;
};

std::vector<std::int64_t> ids(const std::string& text) {
  std::vector<std::int64_t> out;
  for (unsigned char c : text) out.push_back(c);
  return out;
}

// The JSON payloads of an SSE body, "[DONE]" as a string.
std::vector<json> events(const std::string& body) {
  std::vector<json> out;
  std::size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const std::size_t end = body.find("\n\n", at);
    const std::string payload = body.substr(at + 6, end - at - 6);
    out.push_back(payload == "[DONE]" ? json("[DONE]") : json::parse(payload));
    at = end;
  }
  return out;
}

TEST_F(ServerTest, HealthModelsAndMetrics) {
  start();
  auto health = client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto models = client().Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "fake");
  auto one = client().Get("/v1/models/fake");
  ASSERT_TRUE(one);
  EXPECT_EQ(json::parse(one->body)["object"], "model");
  auto missing = client().Get("/v1/models/other");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "model_not_found");

  ASSERT_TRUE(post("/v1/completions", R"({"model":"fake","prompt":"abc","max_tokens":5})"));
  // A request is counted after its answer is written: wait until the count shows.
  std::string body;
  while (body.find("route=\"/v1/completions\"") == std::string::npos) {
    auto metrics = client().Get("/metrics");
    ASSERT_TRUE(metrics);
    body = metrics->body;
  }
  EXPECT_NE(body.find("strata_prompt_tokens_total 3\n"), std::string::npos) << body;
  EXPECT_NE(body.find("strata_generated_tokens_total 5\n"), std::string::npos);
  EXPECT_NE(body.find("strata_requests_total{route=\"/v1/completions\",status=\"200\"} 1\n"),
            std::string::npos);
  EXPECT_NE(body.find("strata_queue_depth 0\n"), std::string::npos);
  EXPECT_NE(body.find("strata_running_sequences 0\n"), std::string::npos);
  EXPECT_NE(body.find("# TYPE strata_kv_cache_bytes gauge"), std::string::npos);
}

TEST_F(ServerTest, CompletionAnswersWhole) {
  start();
  auto res = post("/v1/completions", R"({"model":"fake","prompt":"Once","max_tokens":7})");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  const json body = json::parse(res->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "fake");
  EXPECT_EQ(body["choices"][0]["text"], backend_->alone(ids("Once"), 7));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"],
            json::parse(R"({"prompt_tokens":4,"completion_tokens":7,"total_tokens":11})"));
  // An end-of-sequence token ends with "stop"; token ids are a prompt too; echo prepends it.
  auto eos = post("/v1/completions", R"({"model":"fake","prompt":"wow!","max_tokens":7})");
  EXPECT_EQ(json::parse(eos->body)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json::parse(eos->body)["choices"][0]["text"], "");
  auto by_ids = post("/v1/completions", R"({"model":"fake","prompt":[79,110,99,101],
                                            "max_tokens":7, "temperature": 0})");
  EXPECT_EQ(json::parse(by_ids->body)["choices"][0]["text"], backend_->alone(ids("Once"), 7));
  auto echo =
      post("/v1/completions", R"({"model":"fake","prompt":"Once","max_tokens":3,"echo":true})");
  EXPECT_EQ(json::parse(echo->body)["choices"][0]["text"],
            "Once" + backend_->alone(ids("Once"), 3));
}

TEST_F(ServerTest, StopStringsEndWithStop) {
  start();
  const std::string full = backend_->alone(ids("Once"), 20);
  const std::string stop = full.substr(5, 2);
  auto res = post(
      "/v1/completions",
      json{{"model", "fake"}, {"prompt", "Once"}, {"max_tokens", 20}, {"stop", {stop}}}.dump());
  ASSERT_EQ(res->status, 200) << res->body;
  const json body = json::parse(res->body);
  EXPECT_EQ(body["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, ChatAnswersWholeAndStreamed) {
  start();
  const std::string messages =
      R"([{"role":"system","content":"S"},{"role":"user","content":"Hi"}])";
  const std::string expected = backend_->alone(ids("<system>S<user>Hi<assistant>"), 6);
  auto whole = post("/v1/chat/completions",
                    R"({"model":"fake","max_completion_tokens":6,"messages":)" + messages + "}");
  ASSERT_EQ(whole->status, 200) << whole->body;
  const json body = json::parse(whole->body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], expected);
  EXPECT_EQ(body["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);

  auto streamed = post("/v1/chat/completions",
                       R"({"model":"fake","max_tokens":6,"stream":true,
                           "stream_options":{"include_usage":true},"messages":)" +
                           messages + "}");
  ASSERT_EQ(streamed->status, 200);
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<json> chunks = events(streamed->body);
  ASSERT_GE(chunks.size(), 4u) << streamed->body;
  EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (std::size_t i = 0; i + 2 < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(chunks[i]["id"], chunks.front()["id"]);
    EXPECT_TRUE(chunks[i]["usage"].is_null());
    if (chunks[i]["choices"][0]["delta"].contains("content")) {
      text += chunks[i]["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(text, expected);
  EXPECT_EQ(chunks[chunks.size() - 3]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"], json::array());
  EXPECT_EQ(chunks[chunks.size() - 2]["usage"]["completion_tokens"], 6);
  EXPECT_EQ(chunks.back(), "[DONE]");
  EXPECT_EQ(streamed->body.substr(streamed->body.size() - 14), "data: [DONE]\n\n");
}

TEST_F(ServerTest, CompletionStreamedMatchesWhole) {
  start();
  auto res =
      post("/v1/completions", R"({"model":"fake","prompt":"Once","max_tokens":9,"stream":true})");
  ASSERT_EQ(res->status, 200);
  const std::vector<json> chunks = events(res->body);
  std::string text;
  for (std::size_t i = 0; i + 1 < chunks.size(); ++i) {
    EXPECT_FALSE(chunks[i].contains("usage"));
    text += chunks[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, backend_->alone(ids("Once"), 9));
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chunks.back(), "[DONE]");
}

TEST_F(ServerTest, ChatWithoutATemplateIs400WhileCompletionsWork) {
  start({}, /*chat_template=*/false);
  auto chat = post("/v1/chat/completions",
                   R"({"model":"fake","messages":[{"role":"user","content":"x"}]})");
  ASSERT_EQ(chat->status, 400);
  EXPECT_EQ(json::parse(chat->body)["error"]["code"], "no_chat_template");
  auto completion = post("/v1/completions", R"({"model":"fake","prompt":"x"})");
  EXPECT_EQ(completion->status, 200);
}

TEST_F(ServerTest, MalformedRequestsGetTheirStatusAndAnErrorBody) {
  start({.max_sequences = 4, .max_queue = 8, .ctx_size = 16});
  struct Case {
    const char* path;
    std::string body;
    int status;
    const char* param;  // "" = null
  };
  const std::string too_big(5000, 'x');
  const Case cases[] = {
      {"/v1/completions", "", 400, ""},
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", "[]", 400, ""},
      {"/v1/completions", "null", 400, ""},
      {"/v1/completions", R"({"prompt":"x"})", 400, "model"},
      {"/v1/completions", R"({"model":"other","prompt":"x"})", 404, "model"},
      {"/v1/completions", R"({"model":"fake"})", 400, "prompt"},
      {"/v1/completions", R"({"model":"fake","prompt":7})", 400, "prompt"},
      {"/v1/completions", R"({"model":"fake","prompt":""})", 400, "prompt"},
      {"/v1/completions", R"({"model":"fake","prompt":[500]})", 400, "prompt"},
      {"/v1/completions", R"({"model":"fake","prompt":"this prompt is too long"})", 400, "prompt"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","max_tokens":0})", 400, "max_tokens"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","max_tokens":"9"})", 400, "max_tokens"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","temperature":9})", 400, "temperature"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","top_p":-1})", 400, "top_p"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","top_k":"5"})", 400, "top_k"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","min_p":-0.5})", 400, "min_p"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","seed":"s"})", 400, "seed"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","stop":[""]})", 400, "stop"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","presence_penalty":5})", 400,
       "presence_penalty"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","frequency_penalty":"a"})", 400,
       "frequency_penalty"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","stream":1})", 400, "stream"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","stream_options":{}})", 400,
       "stream_options"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","n":3})", 400, "n"},
      {"/v1/completions", R"({"model":"fake","prompt":"x","logprobs":2})", 400, "logprobs"},
      {"/v1/completions", too_big, 413, ""},
      {"/v1/chat/completions", R"({"model":"fake"})", 400, "messages"},
      {"/v1/chat/completions", R"({"model":"fake","messages":"hi"})", 400, "messages"},
      {"/v1/chat/completions", R"({"model":"fake","messages":[]})", 400, "messages"},
      {"/v1/chat/completions", R"({"model":"fake","messages":[{"role":"x","content":""}]})", 400,
       "messages[0].role"},
      {"/v1/chat/completions", R"({"model":"fake","messages":[{"role":"user","content":{}}]})", 400,
       "messages[0].content"},
      {"/v1/chat/completions",
       R"({"model":"fake","messages":[{"role":"user","content":"x"}],"tools":[{"a":1}]})", 400,
       "tools"},
      {"/v1/chat/completions", R"({"model":"nope","messages":[{"role":"user","content":"x"}]})",
       404, "model"},
      {"/v1/chat/completions",
       R"({"model":"fake","messages":[{"role":"user","content":"a very long message"}]})", 400,
       "messages"},
      {"/v1/embeddings", R"({"model":"fake","input":"x"})", 404, ""},
      {"/v2/anything", "{}", 404, ""},
  };
  for (const Case& c : cases) {
    auto res = post(c.path, c.body);
    ASSERT_TRUE(res) << c.body;
    EXPECT_EQ(res->status, c.status) << c.path << " " << c.body.substr(0, 80) << ": " << res->body;
    json body;
    ASSERT_NO_THROW(body = json::parse(res->body)) << res->body;
    ASSERT_TRUE(body.contains("error")) << res->body;
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    if (*c.param) {
      EXPECT_EQ(body["error"]["param"], c.param) << c.body << ": " << res->body;
    } else {
      EXPECT_TRUE(body["error"]["param"].is_null()) << c.body << ": " << res->body;
    }
  }
  // A GET on a POST route is an unknown route too; the server still answers afterwards.
  auto get = client().Get("/v1/completions");
  EXPECT_EQ(get->status, 404);
  EXPECT_EQ(client().Get("/health")->status, 200);
}

TEST_F(ServerTest, ApiKeyIsRequiredOnV1Routes) {
  start({}, true, "sekret");
  auto none = post("/v1/completions", R"({"model":"fake","prompt":"x"})");
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["code"], "invalid_api_key");
  httplib::Client c = client();
  c.set_bearer_token_auth("wrong");
  EXPECT_EQ(
      c.Post("/v1/completions", R"({"model":"fake","prompt":"x"})", "application/json")->status,
      401);
  c.set_bearer_token_auth("sekret");
  EXPECT_EQ(
      c.Post("/v1/completions", R"({"model":"fake","prompt":"x"})", "application/json")->status,
      200);
  EXPECT_EQ(client().Get("/health")->status, 200);  // health needs no key
  EXPECT_TRUE(api_key_matches("abc", "abc"));
  EXPECT_FALSE(api_key_matches("abc", "abd"));
  EXPECT_FALSE(api_key_matches("abc", "abcd"));
  EXPECT_FALSE(api_key_matches("abc", ""));
}

TEST_F(ServerTest, FullQueueIs503WithRetryAfter) {
  start({.max_sequences = 1, .max_queue = 0, .ctx_size = 256});
  backend_->model().set_open(false);  // the first request holds the only slot
  std::thread first(
      [&] { post("/v1/completions", R"({"model":"fake","prompt":"x","max_tokens":2})"); });
  while (backend_->scheduler().stats().running == 0) std::this_thread::yield();
  auto busy = post("/v1/completions", R"({"model":"fake","prompt":"x"})");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503);
  EXPECT_EQ(busy->get_header_value("Retry-After"), "1");
  EXPECT_EQ(json::parse(busy->body)["error"]["type"], "server_error");
  backend_->model().set_open(true);
  first.join();
}

TEST_F(ServerTest, AClientLeavingMidStreamCancelsItsSequence) {
  start({.max_sequences = 4, .max_queue = 8, .ctx_size = 1 << 30});  // a stream without end
  std::atomic<int> received{0};
  httplib::Client c = client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"model":"fake","prompt":"x","max_tokens":100000,"stream":true})";
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    return ++received < 5;  // leave after a few chunks
  };
  auto res = c.send(req);
  EXPECT_GE(received, 5);
  // The sequence is cancelled and its cache released (the next steps see the write fail).
  while (backend_->scheduler().stats().running != 0 || backend_->model().cached() != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_LT(backend_->scheduler().stats().generated_tokens, 100000u);
  EXPECT_EQ(client().Get("/health")->status, 200);
}

TEST_F(ServerTest, ShutdownWhileStreamingEndsTheStreamAndStops) {
  start({.max_sequences = 4, .max_queue = 8, .ctx_size = 1 << 30});  // a stream without end
  std::string body;
  std::atomic<bool> got_data{false};
  std::thread reader([&] {
    httplib::Client c = client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = R"({"model":"fake","messages":[{"role":"user","content":"x"}],
                   "max_tokens":100000,"stream":true})";
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      body.append(data, n);
      got_data = true;
      return true;
    };
    c.send(req);
  });
  while (!got_data) std::this_thread::yield();
  server_->stop();
  thread_.join();
  reader.join();
  server_.reset();
  ASSERT_GE(body.size(), 14u);
  EXPECT_EQ(body.substr(body.size() - 14), "data: [DONE]\n\n");
  EXPECT_NE(body.find("server_shutting_down"), std::string::npos);
}

}  // namespace
}  // namespace strata::serve

#include "serve_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <ostream>
#include <thread>

#include "strata/core/error.h"
#include "strata/placement/memory.h"
#include "strata/serve/model_backend.h"
#include "strata/serve/server.h"

namespace strata::cli {
namespace {

int g_stop_fd = -1;  // the write end of the stop pipe, for the signal handler

extern "C" void on_stop_signal(int signal) {
  const unsigned char byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] const ssize_t n = ::write(g_stop_fd, &byte, 1);
}

// SIGINT/SIGTERM -> a byte in a pipe; wait() returns the signal (0 for wake(0)). The handlers
// are installed for the pipe's lifetime and the previous ones restored after.
class StopPipe {
 public:
  StopPipe() {
    STRATA_CHECK(::pipe(fds_) == 0, IoError, "strata serve: cannot create a pipe for signals");
    g_stop_fd = fds_[1];
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopPipe() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    g_stop_fd = -1;
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  StopPipe(const StopPipe&) = delete;
  StopPipe& operator=(const StopPipe&) = delete;

  int wait() {
    unsigned char byte = 0;
    while (::read(fds_[0], &byte, 1) < 0 && errno == EINTR) {
    }
    return byte;
  }
  void wake(int value) {
    const unsigned char byte = static_cast<unsigned char>(value);
    [[maybe_unused]] const ssize_t n = ::write(fds_[1], &byte, 1);
  }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

}  // namespace

std::uint64_t serve_kv_cache_bytes(const models::TransformerConfig& config, DType dtype,
                                   std::int64_t max_sequences, std::int64_t ctx_size) {
  return config.kv_cache_bytes_per_token(dtype) * static_cast<std::uint64_t>(max_sequences) *
         static_cast<std::uint64_t>(ctx_size);
}

CLI::App* add_serve_command(CLI::App& app, ServeArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "serve", "serve a model over an OpenAI-compatible HTTP API with continuous batching");
  cmd->add_option("model_dir", args.model_dir,
                  "folder with config.json, *.safetensors and tokenizer.json (default: the "
                  "built-in model)");
  cmd->add_option("--host", args.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", args.port, "port to listen on (0: any free port)")
      ->capture_default_str();
  cmd->add_option("--api-key", args.api_key,
                  "require 'Authorization: Bearer KEY' on /v1/* (default: none)");
  cmd->add_option("--served-model-name", args.served_name,
                  "the model's name in the API (default: the folder's name)");
  cmd->add_option("--max-sequences", args.max_sequences,
                  "sequences decoded together (KV cache slots)")
      ->capture_default_str();
  cmd->add_option("--max-queue", args.max_queue, "requests waiting beyond those; more get 503")
      ->capture_default_str();
  cmd->add_option("--ctx-size", args.ctx_size,
                  "tokens of one sequence, prompt included (cut to the model's limit)")
      ->capture_default_str();
  cmd->add_option("--max-body", args.max_body, "largest request body (e.g. 4MiB); more get 413")
      ->capture_default_str();
  add_placement_options(cmd, args);
  return cmd;
}

int run_serve(const ServeArgs& args, std::ostream& out, std::ostream& err) {
  STRATA_CHECK_ARG(args.port >= 0 && args.port <= 65535, "--port {}: must be in [0, 65535]",
                   args.port);
  STRATA_CHECK_ARG(args.max_sequences >= 1, "--max-sequences {}: must be at least 1",
                   args.max_sequences);
  STRATA_CHECK_ARG(args.max_queue >= 0, "--max-queue {}: must be at least 0", args.max_queue);
  STRATA_CHECK_ARG(args.ctx_size >= 2, "--ctx-size {}: must be at least 2", args.ctx_size);
  const std::int64_t max_body = placement::parse_memory_size(args.max_body);
  STRATA_CHECK_ARG(max_body > 0, "--max-body {}: must be positive", args.max_body);
  const std::filesystem::path dir =
      args.model_dir.empty() ? builtin_model_dir() : std::filesystem::path(args.model_dir);

  // SIGINT and SIGTERM stop the server. Threads that exist before main (OpenBLAS's) keep every
  // signal unblocked, so a handler (which may run on any thread) writes to a pipe that a watcher
  // thread reads: the handler itself does nothing but that async-signal-safe write. A client that
  // leaves must not kill the process either (SIGPIPE).
  StopPipe stop_pipe;
  std::signal(SIGPIPE, SIG_IGN);

  // The KV cache pool is part of the memory plan: held back on every GPU before weights are
  // placed (config only: nothing is loaded yet).
  const EmptyModel shape = build_empty_model(dir, args.dtype);
  engine::SchedulerOptions scheduling{args.max_sequences, args.max_queue, args.ctx_size};
  if (shape.config.max_position_embeddings > 0) {
    scheduling.ctx_size = std::min(scheduling.ctx_size, shape.config.max_position_embeddings);
  }
  const std::uint64_t kv_bytes = serve_kv_cache_bytes(
      shape.config, shape.dtype, scheduling.max_sequences, scheduling.ctx_size);
  PlacementArgs placement = args;
  placement.reserve_per_gpu = static_cast<std::int64_t>(kv_bytes);
  LoadedModel loaded = load_model(dir, placement);
  auto backend = serve::make_model_backend(loaded.empty.model, dir, scheduling);

  serve::ServerOptions options;
  options.host = args.host;
  options.port = args.port;
  options.api_key = args.api_key;
  options.model_id = args.served_name.empty()
                         ? std::filesystem::absolute(dir).lexically_normal().filename().string()
                         : args.served_name;
  if (options.model_id.empty()) options.model_id = dir.parent_path().filename().string();
  options.max_body_bytes = static_cast<std::size_t>(max_body);
  options.cache_capacity_bytes = kv_bytes;
  serve::Server server(*backend, options);
  const int port = server.bind();
  out << fmt::format(
             "strata serve: listening on http://{}:{} (model '{}', {} sequences x {} tokens, "
             "KV cache up to {:.2f} MiB; weights {})",
             args.host, port, options.model_id, scheduling.max_sequences, scheduling.ctx_size,
             static_cast<double>(kv_bytes) / (1024.0 * 1024.0),
             weights_per_device(loaded.loaded.load.summary))
      << std::endl;

  std::thread signals([&] {
    const int signal = stop_pipe.wait();
    if (signal != 0) {
      err << fmt::format("strata serve: {} received: stopping",
                         signal == SIGINT ? "SIGINT" : "SIGTERM")
          << std::endl;
    }
    server.stop();
  });
  server.run();
  stop_pipe.wake(0);  // run() returned on its own: let the watcher go
  signals.join();
  out << "strata serve: stopped" << std::endl;
  return 0;
}

}  // namespace strata::cli

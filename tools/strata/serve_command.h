#pragma once
// `strata serve [MODEL_DIR]`: an OpenAI-compatible HTTP server with continuous batching
// (serve/server.h). Without MODEL_DIR it serves the built-in model.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <string>

#include "model_loading.h"

namespace strata::cli {

struct ServeArgs : PlacementArgs {
  std::string model_dir;  // "" = the built-in model
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string served_name;  // "" = the folder's name
  std::int64_t max_sequences = 8;
  std::int64_t max_queue = 64;
  std::int64_t ctx_size = 2048;
  std::string max_body = "4MiB";
};

CLI::App* add_serve_command(CLI::App& app, ServeArgs& args);

// Serves until SIGINT or SIGTERM, then stops accepting, cancels what runs and returns 0. The
// listening line ("strata serve: listening on http://HOST:PORT ...") goes to `out`.
int run_serve(const ServeArgs& args, std::ostream& out, std::ostream& err);

// The KV cache pool of the server: max_sequences sequences of ctx_size tokens.
std::uint64_t serve_kv_cache_bytes(const models::TransformerConfig& config, DType dtype,
                                   std::int64_t max_sequences, std::int64_t ctx_size);

}  // namespace strata::cli

#include "strata/core/logging.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace strata {
namespace {

std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}

LogSink& current_sink() {
  static LogSink sink = [](LogLevel level, const std::string& message) {
    static const bool debug = std::getenv("STRATA_DEBUG") != nullptr;
    if (level == LogLevel::Debug && !debug) return;
    const char* name = level == LogLevel::Warning ? "warning"
                       : level == LogLevel::Debug ? "debug"
                                                  : "info";
    std::fprintf(stderr, "strata %s: %s\n", name, message.c_str());
  };
  return sink;
}

}  // namespace

LogSink set_log_sink(LogSink sink) {
  std::lock_guard lock(sink_mutex());
  LogSink previous = std::move(current_sink());
  current_sink() = std::move(sink);
  return previous;
}

void log_message(LogLevel level, const std::string& message) {
  std::lock_guard lock(sink_mutex());
  if (current_sink()) current_sink()(level, message);
}

}  // namespace strata

#pragma once
// Minimal logging: warnings the user should see (a refused pin, a lowercase "gb" read as bits).
// The sink defaults to stderr and can be replaced by the embedding application.

#include <functional>
#include <string>

namespace strata {

// Debug messages (why a fast path was not taken) reach the default sink only when STRATA_DEBUG
// is set in the environment; a replaced sink gets them all.
enum class LogLevel { Info, Warning, Debug };

using LogSink = std::function<void(LogLevel, const std::string&)>;

// Replaces the sink; returns the previous one. An empty sink silences logging.
LogSink set_log_sink(LogSink sink);
void log_message(LogLevel level, const std::string& message);
inline void log_warning(const std::string& message) { log_message(LogLevel::Warning, message); }

}  // namespace strata

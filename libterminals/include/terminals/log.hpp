#pragma once

/// @file log.hpp
/// Where the library's log lines go. By default: standard error, one line each, Info and
/// above. A host sets its own sink to route them into its logging. Secrets (keys, tokens)
/// are never part of a message.

#include <functional>
#include <string_view>

#include "terminals/export.hpp"

namespace terminals {

enum class LogLevel { Debug, Info, Warning, Error };
/// "debug", "info", "warning", "error".
TERMINALS_API const char* log_level_name(LogLevel level) noexcept;

/// Receives every line at or above the threshold. `component` names the part of the library
/// ("local", "proxy", ...). Called on whichever thread logs; calls are serialised.
using LogSink = std::function<void(LogLevel level, std::string_view component, std::string_view message)>;

/// Replaces the sink (an empty function restores the default stderr sink). Thread-safe.
TERMINALS_API void set_log_sink(LogSink sink);
/// Lines below `level` are dropped. Thread-safe.
TERMINALS_API void set_log_level(LogLevel level);

/// Logs a line through the current sink.
TERMINALS_API void log(LogLevel level, std::string_view component, std::string_view message);

}  // namespace terminals

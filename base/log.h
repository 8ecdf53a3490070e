// Logger: levelled messages to a sink (stderr by default).
//
// Contract: each Engine owns one Logger; there is no global logger. Messages
// below the level are dropped before formatting.
// Thread rules: log() may be called from any thread; set_* from the loop thread
// before concurrent use.
#pragma once

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace strata {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

class Logger {
 public:
  using Sink = std::function<void(LogLevel, std::string_view)>;

  void set_level(LogLevel level) { level_ = level; }
  LogLevel level() const { return level_; }
  void set_sink(Sink sink) { sink_ = std::move(sink); }
  bool enabled(LogLevel level) const { return level >= level_; }

  void log(LogLevel level, std::string_view message) {
    if (!enabled(level)) return;
    std::lock_guard lock(mutex_);
    if (sink_) {
      sink_(level, message);
    } else {
      std::fprintf(stderr, "strata: %s: %.*s\n", name(level), static_cast<int>(message.size()),
                   message.data());
    }
  }
  void debug(std::string_view m) { log(LogLevel::kDebug, m); }
  void info(std::string_view m) { log(LogLevel::kInfo, m); }
  void warning(std::string_view m) { log(LogLevel::kWarning, m); }
  void error(std::string_view m) { log(LogLevel::kError, m); }

  static const char* name(LogLevel level) {
    switch (level) {
      case LogLevel::kDebug: return "debug";
      case LogLevel::kInfo: return "info";
      case LogLevel::kWarning: return "warning";
      case LogLevel::kError: return "error";
      case LogLevel::kOff: return "off";
    }
    return "?";
  }

 private:
  LogLevel level_ = LogLevel::kWarning;
  Sink sink_;
  std::mutex mutex_;
};

}  // namespace strata

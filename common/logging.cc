#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/strings.h"

namespace silo {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

std::string_view Basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// JSON string body: quotes, backslashes and control characters escaped; other bytes as they are.
std::string JsonEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name) {
  for (const LogLevel level :
       {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (name == LevelName(level)) return level;
  }
  return absl::InvalidArgumentError(
      StrCat("unknown log level '", name, "': expected one of debug, info, warning, error"));
}

absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      StrCat("unknown log format '", name, "': expected text or json"));
}

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }
void SetLogFormat(LogFormat format) { g_format.store(format, std::memory_order_relaxed); }
bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }

std::string FormatLogLine(LogFormat format, LogLevel level, std::string_view file, int line,
                          std::string_view message) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  const std::string_view source = Basename(file);
  if (format == LogFormat::kJson) {
    return StrCat(R"({"ts":")", time, R"(","level":")", LevelName(level), R"(","src":")",
                  JsonEscape(source), ":", line, R"(","msg":")", JsonEscape(message), R"("})");
  }
  const char level_letter = static_cast<char>(LevelName(level)[0] - 'a' + 'A');
  return StrCat(time, " ", std::string_view(&level_letter, 1), " ", source, ":", line, "] ",
                message);
}

namespace internal_log {

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  static std::mutex write_mutex;  // constant-initialized, trivially destroyed: safe at exit
  std::string text =
      FormatLogLine(g_format.load(std::memory_order_relaxed), level_, file_, line_, message_.str());
  text += '\n';
  const std::lock_guard<std::mutex> lock(write_mutex);
  std::fwrite(text.data(), 1, text.size(), stderr);
}

}  // namespace internal_log
}  // namespace silo

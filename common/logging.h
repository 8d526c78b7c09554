// Process-wide logging to stderr, as text or as JSON lines.
//
//   SILO_LOG(Info) << "listening on " << address;
//   SILO_LOG(Warning) << "peer " << peer << " is slow";
//
// Text:  2026-11-23T18:40:00.123456Z I node.cc:42] listening on 127.0.0.1:7000
// JSON:  {"ts":"2026-11-23T18:40:00.123456Z","level":"info","src":"node.cc:42","msg":"..."}
//
// Thread-safe: a line is formatted by its caller and written whole under a lock. Level and
// format may be changed at any time (atomics). Messages below the level are not formatted.
// Never log secrets (keys, seeds, plaintext documents): see STYLE.md.
#ifndef SILO_COMMON_LOGGING_H_
#define SILO_COMMON_LOGGING_H_

#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace silo {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// Returns InvalidArgument unless `name` is one of debug, info, warning, error.
absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name);
// Returns InvalidArgument unless `name` is text or json.
absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name);

void SetLogLevel(LogLevel level);  // default kInfo
LogLevel GetLogLevel();
void SetLogFormat(LogFormat format);  // default kText
bool LogEnabled(LogLevel level);

// Formats one log line (without the trailing newline) the way it is written; exposed for tests.
std::string FormatLogLine(LogFormat format, LogLevel level, std::string_view file, int line,
                          std::string_view message);

namespace internal_log {

// Builds one message and writes it in its destructor.
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  ~LogMessage();

  std::ostream& stream() { return message_; }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream message_;
};

}  // namespace internal_log
}  // namespace silo

// `level` is Debug, Info, Warning or Error.
#define SILO_LOG(level)                                  \
  if (!::silo::LogEnabled(::silo::LogLevel::k##level)) { \
  } else                                                 \
    ::silo::internal_log::LogMessage(::silo::LogLevel::k##level, __FILE__, __LINE__).stream()

#endif  // SILO_COMMON_LOGGING_H_

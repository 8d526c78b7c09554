#include "crypto/internal/openssl.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <string>
#include <utility>

#include "common/strings.h"

namespace silo::crypto::internal {
namespace {

// At most this many queued errors are named in one message.
constexpr int kMaxReportedErrors = 4;

}  // namespace

absl::Status OpenSslError(absl::StatusCode code, std::string_view what) {
  std::string reasons;
  std::string previous;
  int reported = 0;
  // ERR_get_error() returns the oldest error first. Only the library and reason strings are
  // used: ERR_get_error_all's data string can echo what the caller passed in.
  for (unsigned long error = ERR_get_error(); error != 0; error = ERR_get_error()) {
    const char* library = ERR_lib_error_string(error);
    const char* reason = ERR_reason_error_string(error);
    std::string text = StrCat(library != nullptr ? library : "OpenSSL", ": ");
    text =
        reason != nullptr ? StrCat(text, reason) : StrCat(text, "reason ", ERR_GET_REASON(error));
    // Name each distinct reason once, and a few at most; the loop still drains the queue.
    if (text == previous || reported == kMaxReportedErrors) continue;
    reasons = StrCat(reasons, reported == 0 ? "" : "; ", text);
    previous = std::move(text);
    ++reported;
  }
  if (reported == 0) return absl::Status(code, StrCat(what));
  return absl::Status(code, StrCat(what, " (", reasons, ")"));
}

void ClearOpenSslErrors() { ERR_clear_error(); }

bool LastOpenSslErrorIs(int library, int reason) {
  const unsigned long error = ERR_peek_last_error();
  return error != 0 && ERR_GET_LIB(error) == library && ERR_GET_REASON(error) == reason;
}

absl::Status CheckSize(std::span<const uint8_t> bytes, size_t expected, std::string_view what) {
  if (bytes.size() == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(
      StrCat(what, " must be ", expected, " bytes, got ", bytes.size()));
}

absl::Status RandomBytes(std::span<uint8_t> out) {
  while (!out.empty()) {
    const size_t n = std::min(out.size(), kMaxOpenSslChunk);
    if (RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
      return OpenSslError(absl::StatusCode::kInternal, "RAND_bytes failed");
    }
    out = out.subspan(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<OpenSslPtr<BIO>> NewMemoryBio(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("PEM input is empty");
  if (text.size() > kMaxOpenSslChunk) {
    return absl::InvalidArgumentError(StrCat("PEM input of ", text.size(), " bytes is too large"));
  }
  OpenSslPtr<BIO> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (bio == nullptr) return OpenSslError(absl::StatusCode::kInternal, "BIO_new_mem_buf failed");
  return bio;
}

int NoPassword(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*user_data*/) { return -1; }

}  // namespace silo::crypto::internal

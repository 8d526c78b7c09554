// silo::StrCat: absl::StrCat that also takes std::string_view.
//
// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which absl::StrCat accepts and std::string_view does not convert to. Our interfaces use
// std::string_view, so concatenate through this. Thread-safe (pure function).
#ifndef SILO_COMMON_STRINGS_H_
#define SILO_COMMON_STRINGS_H_

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace silo {
namespace internal_strings {

inline absl::string_view ToAlphaNum(std::string_view text) { return {text.data(), text.size()}; }
inline absl::string_view ToAlphaNum(const std::string& text) { return text; }
inline absl::string_view ToAlphaNum(const char* text) { return text; }
template <typename T>
const T& ToAlphaNum(const T& value) {
  return value;
}

}  // namespace internal_strings

template <typename... Args>
std::string StrCat(const Args&... args) {
  return absl::StrCat(internal_strings::ToAlphaNum(args)...);
}

}  // namespace silo

#endif  // SILO_COMMON_STRINGS_H_

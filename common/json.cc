#include "common/json.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/numbers.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo {

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  absl::StatusOr<JsonValue> ParseDocument() {
    SkipWhitespace();
    SILO_ASSIGN_OR_RETURN(JsonValue value, ParseValue(0));
    SkipWhitespace();
    if (pos_ != text_.size()) return Error("unexpected text after the JSON value");
    return value;
  }

 private:
  absl::Status Error(std::string_view what) const {
    const size_t line = 1 + std::count(text_.begin(), text_.begin() + pos_, '\n');
    return absl::InvalidArgumentError(
        StrCat("JSON: ", what, " at byte ", pos_, " (line ", line, ")"));
  }

  void SkipWhitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) return false;
    pos_ += literal.size();
    return true;
  }

  absl::StatusOr<JsonValue> ParseValue(int depth) {
    if (depth > kMaxJsonDepth) return Error(StrCat("nesting deeper than ", kMaxJsonDepth));
    if (++values_ > kMaxJsonValues) return Error(StrCat("more than ", kMaxJsonValues, " values"));
    if (pos_ >= text_.size()) return Error("unexpected end of input");
    JsonValue value;
    switch (text_[pos_]) {
      case '{':
        return ParseObject(depth);
      case '[':
        return ParseArray(depth);
      case '"': {
        SILO_ASSIGN_OR_RETURN(std::string text, ParseString());
        value.value_ = std::move(text);
        return value;
      }
      case 't':
        if (!Consume("true")) return Error("invalid literal");
        value.value_ = true;
        return value;
      case 'f':
        if (!Consume("false")) return Error("invalid literal");
        value.value_ = false;
        return value;
      case 'n':
        if (!Consume("null")) return Error("invalid literal");
        return value;
      default:
        return ParseNumber();
    }
  }

  absl::StatusOr<JsonValue> ParseObject(int depth) {
    ++pos_;  // '{'
    JsonValue::Object members;
    SkipWhitespace();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
    } else {
      while (true) {
        SkipWhitespace();
        if (pos_ >= text_.size() || text_[pos_] != '"') return Error("expected a string key");
        SILO_ASSIGN_OR_RETURN(std::string key, ParseString());
        SkipWhitespace();
        if (pos_ >= text_.size() || text_[pos_] != ':') return Error("expected ':'");
        ++pos_;
        SkipWhitespace();
        SILO_ASSIGN_OR_RETURN(JsonValue member, ParseValue(depth + 1));
        members.emplace_back(std::move(key), std::move(member));
        SkipWhitespace();
        if (pos_ < text_.size() && text_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < text_.size() && text_[pos_] == '}') {
          ++pos_;
          break;
        }
        return Error("expected ',' or '}'");
      }
    }
    // Duplicate keys, found by sorting (objects such as a vocabulary have many thousands).
    std::vector<size_t> order(members.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return members[a].first < members[b].first; });
    for (size_t i = 1; i < order.size(); ++i) {
      if (members[order[i]].first == members[order[i - 1]].first) {
        return Error(StrCat("duplicate key \"", members[order[i]].first, "\" in the object"));
      }
    }
    JsonValue value;
    value.value_ = std::move(members);
    return value;
  }

  absl::StatusOr<JsonValue> ParseArray(int depth) {
    ++pos_;  // '['
    JsonValue::Array elements;
    SkipWhitespace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
    } else {
      while (true) {
        SkipWhitespace();
        SILO_ASSIGN_OR_RETURN(JsonValue element, ParseValue(depth + 1));
        elements.push_back(std::move(element));
        SkipWhitespace();
        if (pos_ < text_.size() && text_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < text_.size() && text_[pos_] == ']') {
          ++pos_;
          break;
        }
        return Error("expected ',' or ']'");
      }
    }
    JsonValue value;
    value.value_ = std::move(elements);
    return value;
  }

  static void AppendUtf8(uint32_t code_point, std::string& out) {
    if (code_point < 0x80) {
      out += static_cast<char>(code_point);
    } else if (code_point < 0x800) {
      out += static_cast<char>(0xc0 | (code_point >> 6));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    } else if (code_point < 0x10000) {
      out += static_cast<char>(0xe0 | (code_point >> 12));
      out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code_point >> 18));
      out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    }
  }

  absl::StatusOr<uint32_t> ParseHex4() {
    if (pos_ + 4 > text_.size()) return Error("truncated \\u escape");
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        value |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        value |= c - 'A' + 10;
      } else {
        return Error("invalid hex digit in a \\u escape");
      }
    }
    return value;
  }

  // Strings keep raw UTF-8 bytes as they are; escapes are decoded (surrogate pairs included).
  absl::StatusOr<std::string> ParseString() {
    ++pos_;  // '"'
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) return Error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) return Error("unterminated escape");
      const char escape = text_[pos_++];
      switch (escape) {
        case '"':
        case '\\':
        case '/':
          out += escape;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          SILO_ASSIGN_OR_RETURN(uint32_t code_point, ParseHex4());
          if (code_point >= 0xd800 && code_point < 0xdc00) {
            if (!Consume("\\u")) return Error("unpaired high surrogate");
            SILO_ASSIGN_OR_RETURN(const uint32_t low, ParseHex4());
            if (low < 0xdc00 || low >= 0xe000) return Error("invalid low surrogate");
            code_point = 0x10000 + ((code_point - 0xd800) << 10) + (low - 0xdc00);
          } else if (code_point >= 0xdc00 && code_point < 0xe000) {
            return Error("unpaired low surrogate");
          }
          AppendUtf8(code_point, out);
          break;
        }
        default:
          return Error("invalid escape");
      }
    }
  }

  absl::StatusOr<JsonValue> ParseNumber() {
    const size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') ++pos_;
    auto digits = [&] {
      const size_t first = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - first;
    };
    const size_t integer_start = pos_;
    if (digits() == 0) return Error("invalid value");
    if (text_[integer_start] == '0' && pos_ - integer_start > 1) {
      return Error("leading zero in a number");
    }
    bool integer = true;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      integer = false;
      if (digits() == 0) return Error("digits expected after '.'");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      integer = false;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (digits() == 0) return Error("digits expected in the exponent");
    }
    const std::string token(text_.substr(start, pos_ - start));
    JsonValue::Number number{0, false, 0};
    if (integer && absl::SimpleAtoi(token, &number.integer)) {
      number.is_integer = true;
      number.value = static_cast<double>(number.integer);
    } else {
      if (!absl::SimpleAtod(token, &number.value) || !std::isfinite(number.value)) {
        return Error("number out of range");
      }
    }
    JsonValue value;
    value.value_ = number;
    return value;
  }

  std::string_view text_;
  size_t pos_ = 0;
  int64_t values_ = 0;
};

absl::StatusOr<JsonValue> ParseJson(std::string_view text) {
  return JsonParser(text).ParseDocument();
}

std::string_view JsonValue::TypeName() const {
  if (is_null()) return "null";
  if (is_bool()) return "a bool";
  if (is_number()) return "a number";
  if (is_string()) return "a string";
  if (is_array()) return "an array";
  return "an object";
}

namespace {

absl::Status WrongType(std::string_view expected, std::string_view actual) {
  return absl::InvalidArgumentError(StrCat("JSON: expected ", expected, ", got ", actual));
}

}  // namespace

absl::StatusOr<bool> JsonValue::AsBool() const {
  if (const bool* b = std::get_if<bool>(&value_)) return *b;
  return WrongType("a bool", TypeName());
}

absl::StatusOr<double> JsonValue::AsDouble() const {
  if (const Number* n = std::get_if<Number>(&value_)) return n->value;
  return WrongType("a number", TypeName());
}

absl::StatusOr<int64_t> JsonValue::AsInt() const {
  if (const Number* n = std::get_if<Number>(&value_); n != nullptr && n->is_integer) {
    return n->integer;
  }
  return WrongType("an integer", is_number() ? "a non-integer number" : TypeName());
}

absl::StatusOr<std::string_view> JsonValue::AsString() const {
  if (const std::string* s = std::get_if<std::string>(&value_)) return std::string_view{*s};
  return WrongType("a string", TypeName());
}

absl::StatusOr<const JsonValue::Array*> JsonValue::AsArray() const {
  if (const Array* a = std::get_if<Array>(&value_)) return a;
  return WrongType("an array", TypeName());
}

absl::StatusOr<const JsonValue::Object*> JsonValue::AsObject() const {
  if (const Object* o = std::get_if<Object>(&value_)) return o;
  return WrongType("an object", TypeName());
}

const JsonValue* JsonValue::Find(std::string_view key) const {
  const Object* object = std::get_if<Object>(&value_);
  if (object == nullptr) return nullptr;
  for (const auto& [name, member] : *object) {
    if (name == key) return &member;
  }
  return nullptr;
}

absl::StatusOr<const JsonValue*> JsonValue::Get(std::string_view key) const {
  if (!is_object()) return WrongType("an object", TypeName());
  const JsonValue* member = Find(key);
  if (member == nullptr) return absl::NotFoundError(StrCat("JSON: no key \"", key, "\""));
  return member;
}

namespace {

// Adds the key to an error of a typed member look-up.
template <typename T>
absl::StatusOr<T> WithKey(absl::StatusOr<T> result, std::string_view key) {
  if (result.ok()) return result;
  return absl::Status(result.status().code(),
                      StrCat(result.status().message(), " for key \"", key, "\""));
}

}  // namespace

absl::StatusOr<int64_t> JsonValue::GetInt(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const JsonValue* member, Get(key));
  return WithKey(member->AsInt(), key);
}

absl::StatusOr<double> JsonValue::GetDouble(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const JsonValue* member, Get(key));
  return WithKey(member->AsDouble(), key);
}

absl::StatusOr<std::string_view> JsonValue::GetString(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const JsonValue* member, Get(key));
  return WithKey(member->AsString(), key);
}

absl::StatusOr<bool> JsonValue::GetBool(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const JsonValue* member, Get(key));
  return WithKey(member->AsBool(), key);
}

}  // namespace silo

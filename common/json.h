// A strict JSON reader (RFC 8259) for model metadata: safetensors headers, config.json,
// tokenizer.json. Depends on Abseil alone, so engine/ can use it on the GPU machine.
//
//   SILO_ASSIGN_OR_RETURN(JsonValue config, ParseJson(text));
//   SILO_ASSIGN_OR_RETURN(int64_t layers, config.GetInt("num_hidden_layers"));
//
// Errors are InvalidArgument with the byte offset (and line) of the problem. Nesting deeper than
// kMaxJsonDepth is rejected, so hostile input cannot exhaust the stack. Objects keep their keys
// in file order; a duplicate key is an error. More than kMaxJsonValues values is an error, so
// hostile input cannot exhaust memory either. Thread-safe after parsing (values are immutable).
#ifndef SILO_COMMON_JSON_H_
#define SILO_COMMON_JSON_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace silo {

inline constexpr int kMaxJsonDepth = 128;
// Values in one document (object members and array elements included): a tokenizer.json of a
// 150k vocabulary with its merges has about 600k. Bounds memory at ~70 bytes a value.
inline constexpr int64_t kMaxJsonValues = 4'000'000;

class JsonValue {
 public:
  using Array = std::vector<JsonValue>;
  using Object = std::vector<std::pair<std::string, JsonValue>>;

  JsonValue() = default;  // null

  bool is_null() const { return std::holds_alternative<std::monostate>(value_); }
  bool is_bool() const { return std::holds_alternative<bool>(value_); }
  bool is_number() const { return std::holds_alternative<Number>(value_); }
  bool is_string() const { return std::holds_alternative<std::string>(value_); }
  bool is_array() const { return std::holds_alternative<Array>(value_); }
  bool is_object() const { return std::holds_alternative<Object>(value_); }

  // Typed access: InvalidArgument naming the expected type when the value has another.
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<double> AsDouble() const;
  // An integer written without fraction or exponent that fits int64.
  absl::StatusOr<int64_t> AsInt() const;
  absl::StatusOr<std::string_view> AsString() const;
  absl::StatusOr<const Array*> AsArray() const;
  absl::StatusOr<const Object*> AsObject() const;

  // Member of an object: nullptr when absent or when this is not an object.
  const JsonValue* Find(std::string_view key) const;
  // Required members: NotFound when absent, InvalidArgument for the wrong type.
  absl::StatusOr<const JsonValue*> Get(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetDouble(std::string_view key) const;
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;

 private:
  friend class JsonParser;
  struct Number {
    double value;
    bool is_integer;  // written as an integer that fits int64
    int64_t integer;
  };

  std::string_view TypeName() const;

  std::variant<std::monostate, bool, Number, std::string, Array, Object> value_;
};

// Parses one JSON document (surrounding whitespace allowed).
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

}  // namespace silo

#endif  // SILO_COMMON_JSON_H_

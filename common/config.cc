#include "common/config.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include "absl/strings/numbers.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "yaml-cpp/yaml.h"

namespace silo {

struct ConfigNode::Impl {
  std::shared_ptr<const std::string> source;  // file name for errors
  YAML::Node map;                             // always a mapping
  std::string path;                           // "" or "a.b"
  std::set<std::string, std::less<>> used_keys;
  std::map<std::string, std::shared_ptr<Impl>, std::less<>> children;
  std::map<std::string, std::vector<std::shared_ptr<Impl>>, std::less<>> child_lists;
};

namespace {

std::string_view KindName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string Where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return source;
  return StrCat(source, ":", mark.line + 1, ":", mark.column + 1);
}

std::string JoinPath(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : StrCat(parent, ".", key);
}

// Type names used in "expected ..." messages.
template <typename T>
constexpr std::string_view ExpectedName() {
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  if constexpr (std::is_same_v<T, bool>) return "a bool (true or false)";
  if constexpr (std::is_same_v<T, int32_t>) return "a 32-bit integer";
  if constexpr (std::is_same_v<T, int64_t>) return "a 64-bit integer";
  if constexpr (std::is_same_v<T, uint32_t>) return "a non-negative 32-bit integer";
  if constexpr (std::is_same_v<T, uint64_t>) return "a non-negative 64-bit integer";
  if constexpr (std::is_same_v<T, double>) return "a number";
  if constexpr (std::is_same_v<T, std::vector<std::string>>) return "a sequence of strings";
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "a sequence of integers";
  if constexpr (std::is_same_v<T, std::vector<double>>) return "a sequence of numbers";
}

// Converts a scalar; false when its text does not denote a T.
template <typename T>
bool ConvertScalar(const YAML::Node& node, T* out) {
  if (!node.IsScalar()) return false;
  const std::string& text = node.Scalar();
  if constexpr (std::is_same_v<T, std::string>) {
    *out = text;
    return true;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (text == "true" || text == "True" || text == "TRUE") {
      *out = true;
      return true;
    }
    if (text == "false" || text == "False" || text == "FALSE") {
      *out = false;
      return true;
    }
    return false;
  } else if constexpr (std::is_same_v<T, double>) {
    return absl::SimpleAtod(text, out);
  } else {
    static_assert(std::is_integral_v<T>);
    // Parse wide, then range-check, so "-1" as uint32_t and 2^40 as int32_t are both rejected.
    if constexpr (std::is_signed_v<T>) {
      int64_t wide = 0;
      if (!absl::SimpleAtoi(text, &wide)) return false;
      if (wide < std::numeric_limits<T>::min() || wide > std::numeric_limits<T>::max()) {
        return false;
      }
      *out = static_cast<T>(wide);
    } else {
      if (!text.empty() && text[0] == '-') return false;
      uint64_t wide = 0;
      if (!absl::SimpleAtoi(text, &wide)) return false;
      if (wide > std::numeric_limits<T>::max()) return false;
      *out = static_cast<T>(wide);
    }
    return true;
  }
}

template <typename T>
struct IsVector : std::false_type {};
template <typename E>
struct IsVector<std::vector<E>> : std::true_type {};

template <typename T>
bool Convert(const YAML::Node& node, T* out) {
  if constexpr (IsVector<T>::value) {
    if (!node.IsSequence()) return false;
    T values;
    for (const YAML::Node& element : node) {
      typename T::value_type value;
      if (!ConvertScalar(element, &value)) return false;
      values.push_back(std::move(value));
    }
    *out = std::move(values);
    return true;
  } else {
    return ConvertScalar(node, out);
  }
}

std::string Describe(const YAML::Node& node) {
  if (node.IsScalar()) return StrCat("'", node.Scalar(), "'");
  return std::string(KindName(node));
}

// Finds `key` in a mapping; InvalidArgument when the key appears twice (YAML forbids it, the
// parser does not check).
// std::nullopt when the key is absent.
absl::StatusOr<std::optional<YAML::Node>> FindKey(const ConfigNode::Impl& impl,
                                                  std::string_view key) {
  std::optional<YAML::Node> found;
  for (const auto& entry : impl.map) {
    if (!entry.first.IsScalar() || entry.first.Scalar() != key) continue;
    if (found.has_value()) {
      return absl::InvalidArgumentError(StrCat(Where(*impl.source, entry.first), ": key '",
                                               JoinPath(impl.path, key),
                                               "' appears more than once"));
    }
    found.emplace(entry.second);  // copy-construct: yaml-cpp's operator= would edit the tree
  }
  return found;
}

absl::Status MissingKey(const ConfigNode::Impl& impl, std::string_view key,
                        std::string_view expected) {
  return absl::InvalidArgumentError(StrCat(*impl.source, ": key '", JoinPath(impl.path, key),
                                           "' is required (expected ", expected, ")"));
}

absl::Status WrongType(const ConfigNode::Impl& impl, std::string_view key, const YAML::Node& value,
                       std::string_view expected) {
  return absl::InvalidArgumentError(StrCat(Where(*impl.source, value), ": key '",
                                           JoinPath(impl.path, key), "': expected ", expected,
                                           ", got ", Describe(value)));
}

template <typename T>
absl::StatusOr<T> ConvertValue(const ConfigNode::Impl& impl, std::string_view key,
                               const YAML::Node& value) {
  T out{};
  if (!Convert(value, &out)) return WrongType(impl, key, value, ExpectedName<T>());
  return out;
}

absl::Status CheckTopLevel(const std::string& source, const YAML::Node& root) {
  if (root.IsMap()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      StrCat(source, ": expected a mapping at the top level, got ", KindName(root)));
}

}  // namespace

absl::StatusOr<ConfigNode> ConfigNode::Parse(std::string_view yaml, std::string_view source_name) {
  auto source = std::make_shared<const std::string>(source_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(StrCat(*source, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                             ": YAML syntax error: ", e.msg));
  }
  SILO_RETURN_IF_ERROR(CheckTopLevel(*source, root));
  auto impl = std::make_shared<Impl>();
  impl->source = std::move(source);
  impl->map = root;
  return ConfigNode(std::move(impl));
}

absl::StatusOr<ConfigNode> ConfigNode::LoadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const int error = errno;
    const std::string reason = std::strerror(error);
    if (error == ENOENT) return absl::NotFoundError(StrCat(path, ": no such config file"));
    if (error == EACCES) return absl::PermissionDeniedError(StrCat(path, ": ", reason));
    return absl::InvalidArgumentError(StrCat(path, ": cannot open: ", reason));
  }
  std::string text;
  char buffer[64 << 10];
  while (file.read(buffer, sizeof(buffer)) || file.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(file.gcount()));
    if (text.size() > kMaxFileBytes) {
      return absl::InvalidArgumentError(
          StrCat(path, ": config file is larger than ", kMaxFileBytes, " bytes"));
    }
  }
  if (file.bad()) return absl::InvalidArgumentError(StrCat(path, ": read error"));
  return Parse(text, path);
}

template <typename T>
absl::StatusOr<T> ConfigNode::Get(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> value, FindKey(*impl_, key));
  impl_->used_keys.emplace(key);
  if (!value.has_value()) return MissingKey(*impl_, key, ExpectedName<T>());
  return ConvertValue<T>(*impl_, key, *value);
}

template <typename T>
absl::StatusOr<T> ConfigNode::GetOr(std::string_view key, T default_value) const {
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> value, FindKey(*impl_, key));
  impl_->used_keys.emplace(key);
  if (!value.has_value() || value->IsNull()) return default_value;
  return ConvertValue<T>(*impl_, key, *value);
}

#define SILO_CONFIG_INSTANTIATE(T)                                           \
  template absl::StatusOr<T> ConfigNode::Get<T>(std::string_view key) const; \
  template absl::StatusOr<T> ConfigNode::GetOr<T>(std::string_view key, T default_value) const;
SILO_CONFIG_INSTANTIATE(std::string)
SILO_CONFIG_INSTANTIATE(bool)
SILO_CONFIG_INSTANTIATE(int32_t)
SILO_CONFIG_INSTANTIATE(int64_t)
SILO_CONFIG_INSTANTIATE(uint32_t)
SILO_CONFIG_INSTANTIATE(uint64_t)
SILO_CONFIG_INSTANTIATE(double)
SILO_CONFIG_INSTANTIATE(std::vector<std::string>)
SILO_CONFIG_INSTANTIATE(std::vector<int64_t>)
SILO_CONFIG_INSTANTIATE(std::vector<double>)
#undef SILO_CONFIG_INSTANTIATE

absl::StatusOr<std::string> ConfigNode::GetEnum(
    std::string_view key, std::initializer_list<std::string_view> allowed) const {
  SILO_ASSIGN_OR_RETURN(std::string value, Get<std::string>(key));
  for (const std::string_view candidate : allowed) {
    if (value == candidate) return value;
  }
  std::string expected = "one of ";
  for (const std::string_view candidate : allowed) {
    if (expected.size() > 7) expected += ", ";
    expected += candidate;
  }
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> node, FindKey(*impl_, key));
  return WrongType(*impl_, key, node.value(), expected);
}

absl::StatusOr<ConfigNode> ConfigNode::Child(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> value, FindKey(*impl_, key));
  impl_->used_keys.emplace(key);
  if (!value.has_value()) return MissingKey(*impl_, key, "a mapping");
  if (!value->IsMap()) return WrongType(*impl_, key, *value, "a mapping");
  std::shared_ptr<Impl>& child = impl_->children[std::string(key)];
  if (child == nullptr) {
    child = std::make_shared<Impl>();
    child->source = impl_->source;
    child->map = *value;
    child->path = JoinPath(impl_->path, key);
  }
  return ConfigNode(child);
}

absl::StatusOr<ConfigNode> ConfigNode::ChildOrEmpty(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> value, FindKey(*impl_, key));
  if (value.has_value() && !value->IsNull()) return Child(key);
  impl_->used_keys.emplace(key);
  auto empty = std::make_shared<Impl>();
  empty->source = impl_->source;
  empty->map = YAML::Node(YAML::NodeType::Map);
  empty->path = JoinPath(impl_->path, key);
  return ConfigNode(empty);
}

absl::StatusOr<std::vector<ConfigNode>> ConfigNode::ChildList(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const std::optional<YAML::Node> value, FindKey(*impl_, key));
  impl_->used_keys.emplace(key);
  if (!value.has_value()) return MissingKey(*impl_, key, "a sequence of mappings");
  if (!value->IsSequence()) return WrongType(*impl_, key, *value, "a sequence of mappings");
  auto cached = impl_->child_lists.find(key);
  if (cached == impl_->child_lists.end()) {
    std::vector<std::shared_ptr<Impl>> list;  // cached only once every element is valid
    for (size_t i = 0; i < value->size(); ++i) {
      const YAML::Node element = (*value)[i];
      const std::string element_key = StrCat(key, "[", i, "]");
      if (!element.IsMap()) return WrongType(*impl_, element_key, element, "a mapping");
      auto child = std::make_shared<Impl>();
      child->source = impl_->source;
      child->map = element;
      child->path = JoinPath(impl_->path, element_key);
      list.push_back(std::move(child));
    }
    cached = impl_->child_lists.emplace(std::string(key), std::move(list)).first;
  }
  const std::vector<std::shared_ptr<Impl>>& list = cached->second;
  std::vector<ConfigNode> nodes;
  nodes.reserve(list.size());
  for (const std::shared_ptr<Impl>& child : list) nodes.push_back(ConfigNode(child));
  return nodes;
}

absl::Status ConfigNode::CheckAllKeysUsed() const {
  for (const auto& entry : impl_->map) {
    const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "";
    if (!impl_->used_keys.contains(key)) {
      return absl::InvalidArgumentError(StrCat(Where(*impl_->source, entry.first),
                                               ": unknown key '", JoinPath(impl_->path, key), "'"));
    }
  }
  for (const auto& [key, child] : impl_->children) {
    SILO_RETURN_IF_ERROR(ConfigNode(child).CheckAllKeysUsed());
  }
  for (const auto& [key, list] : impl_->child_lists) {
    for (const std::shared_ptr<Impl>& child : list) {
      SILO_RETURN_IF_ERROR(ConfigNode(child).CheckAllKeysUsed());
    }
  }
  return absl::OkStatus();
}

const std::string& ConfigNode::path() const { return impl_->path; }

ConfigNode::ConfigNode(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConfigNode::ConfigNode(const ConfigNode&) = default;
ConfigNode& ConfigNode::operator=(const ConfigNode&) = default;
ConfigNode::ConfigNode(ConfigNode&&) noexcept = default;
ConfigNode& ConfigNode::operator=(ConfigNode&&) noexcept = default;
ConfigNode::~ConfigNode() = default;

std::string ResolveConfigPath(const std::string& config_file, const std::string& path) {
  if (path.empty()) return path;
  const std::filesystem::path p(path);
  if (p.is_absolute()) return p.lexically_normal().string();
  return (std::filesystem::absolute(config_file).parent_path() / p).lexically_normal().string();
}

}  // namespace silo

// Typed access to YAML configuration files whose errors name the file, the key, the line and
// what was expected:
//
//   SILO_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadFile(path));
//   SILO_ASSIGN_OR_RETURN(std::string listen, root.Get<std::string>("listen_address"));
//   SILO_ASSIGN_OR_RETURN(int32_t workers, root.GetOr<int32_t>("workers", 4));
//   SILO_ASSIGN_OR_RETURN(ConfigNode tls, root.Child("tls"));
//   SILO_RETURN_IF_ERROR(root.CheckAllKeysUsed());  // a misspelt key is an error, not a default
//
// e.g. "node.yaml:7:9: key 'tls.cert_file': expected a string, got a sequence".
//
// Supported value types: std::string, bool, int32_t, int64_t, uint32_t, uint64_t, double, and
// std::vector of std::string, int64_t or double. Integers must be written as integers within the
// type's range; bools as true/false.
//
// Not thread-safe: a ConfigNode and the nodes derived from it record which keys were read. Copies
// share that record. Lives in the library silo::common_config (yaml-cpp), apart from silo::common,
// so that engine/ and attention/ build without yaml-cpp.
#ifndef SILO_COMMON_CONFIG_H_
#define SILO_COMMON_CONFIG_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace silo {

class ConfigNode {
 public:
  // Config files larger than this are rejected (InvalidArgument) before they are parsed.
  static constexpr size_t kMaxFileBytes = 4 << 20;

  // Reads and parses a YAML file whose top level is a mapping. NotFound when the file does not
  // exist, PermissionDenied when it cannot be read, InvalidArgument for a syntax error, a file
  // over kMaxFileBytes or a top level that is not a mapping.
  static absl::StatusOr<ConfigNode> LoadFile(const std::string& path);
  // Same, from text; `source_name` stands for the file name in errors.
  static absl::StatusOr<ConfigNode> Parse(std::string_view yaml, std::string_view source_name);

  // Value of a required key. InvalidArgument when the key is missing or has the wrong type.
  template <typename T>
  absl::StatusOr<T> Get(std::string_view key) const;
  // Value of an optional key, `default_value` when the key is absent or null.
  // InvalidArgument when it is present with the wrong type.
  template <typename T>
  absl::StatusOr<T> GetOr(std::string_view key, T default_value) const;
  // A string that must be one of `allowed` (InvalidArgument lists them otherwise).
  absl::StatusOr<std::string> GetEnum(std::string_view key,
                                      std::initializer_list<std::string_view> allowed) const;
  // A required nested mapping; InvalidArgument when missing or not a mapping.
  absl::StatusOr<ConfigNode> Child(std::string_view key) const;
  // An optional nested mapping: an empty one (whose GetOr give their defaults) when the key is
  // absent or null; InvalidArgument when it is present and not a mapping.
  absl::StatusOr<ConfigNode> ChildOrEmpty(std::string_view key) const;
  // A required sequence of mappings; InvalidArgument when missing or of another shape.
  absl::StatusOr<std::vector<ConfigNode>> ChildList(std::string_view key) const;

  // InvalidArgument naming the first key of this mapping, or of a mapping reached from it
  // through Child/ChildList, that no accessor asked for.
  absl::Status CheckAllKeysUsed() const;

  // Dotted path of this node from the top level ("" for the top level), as used in errors.
  const std::string& path() const;

  ConfigNode(const ConfigNode&);
  ConfigNode& operator=(const ConfigNode&);
  ConfigNode(ConfigNode&&) noexcept;
  ConfigNode& operator=(ConfigNode&&) noexcept;
  ~ConfigNode();

  // Opaque; declared here so that config.cc's helpers can name it.
  struct Impl;

 private:
  explicit ConfigNode(std::shared_ptr<Impl> impl);

  std::shared_ptr<Impl> impl_;
};

// `path` as written in the config file `config_file`, resolved against that file's folder
// (absolute paths stay as they are; an empty path stays empty).
std::string ResolveConfigPath(const std::string& config_file, const std::string& path);

}  // namespace silo

#endif  // SILO_COMMON_CONFIG_H_

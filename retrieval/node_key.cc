#include "retrieval/node_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::retrieval {
namespace {

constexpr size_t kHexSize = 2 * kNodeKeySize;
// A key file is 64 digits and a little white space; anything much larger is not a key file.
constexpr off_t kMaxKeyFileBytes = 1024;
constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "0644" for the permission bits of `mode`.
std::string OctalMode(mode_t mode) {
  std::string text = "0";
  for (int shift : {6, 3, 0}) text.push_back(static_cast<char>('0' + ((mode >> shift) & 7)));
  return text;
}

bool IsSpace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Closes a file descriptor on destruction unless released.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now; the status of close(2).
  absl::Status Close(std::string_view what) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return absl::ErrnoToStatus(errno, StrCat("closing ", what));
    return absl::OkStatus();
  }

 private:
  int fd_;
};

absl::Status SyncFolderOf(const std::string& path) {
  std::filesystem::path folder = std::filesystem::path(path).parent_path();
  if (folder.empty()) folder = ".";
  Fd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, StrCat("opening folder ", folder.string()));
  if (::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, StrCat("syncing folder ", folder.string()));
  }
  return fd.Close(folder.string());
}

absl::Status WriteAll(int fd, std::span<const uint8_t> bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, StrCat("writing node key file ", path));
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status WriteNewKeyFile(const Fd& fd, const crypto::SecretBytes& key,
                             const std::string& path) {
  // umask may have removed owner bits; the mode is exactly 0600 whatever it is.
  if (::fchmod(fd.get(), S_IRUSR | S_IWUSR) != 0) {
    return absl::ErrnoToStatus(errno, StrCat("chmod of node key file ", path));
  }
  crypto::SecretBytes text(kHexSize + 1);
  std::span<uint8_t> out = text.mutable_span();
  for (size_t i = 0; i < kNodeKeySize; ++i) {
    out[2 * i] = static_cast<uint8_t>(kHexDigits[key.span()[i] >> 4]);
    out[2 * i + 1] = static_cast<uint8_t>(kHexDigits[key.span()[i] & 0xf]);
  }
  out[kHexSize] = '\n';
  SILO_RETURN_IF_ERROR(WriteAll(fd.get(), text.span(), path));
  if (::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, StrCat("syncing node key file ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<crypto::SecretBytes> ParseNodeKeyHex(std::string_view hex) {
  if (hex.size() != kHexSize) {
    return absl::InvalidArgumentError(StrCat("a node key is ", kHexSize, " hex digits (",
                                             kNodeKeySize, " bytes); found ", hex.size(),
                                             " characters"));
  }
  crypto::SecretBytes key(kNodeKeySize);
  std::span<uint8_t> out = key.mutable_span();
  for (size_t i = 0; i < kHexSize; ++i) {
    const int value = HexValue(hex[i]);
    if (value < 0) {
      return absl::InvalidArgumentError(
          StrCat("node key: character ", i + 1, " of ", kHexSize, " is not a hex digit"));
    }
    out[i / 2] = static_cast<uint8_t>(i % 2 == 0 ? value << 4 : out[i / 2] | value);
  }
  return key;
}

absl::StatusOr<crypto::SecretBytes> ReadNodeKeyFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(errno, StrCat("cannot open node key file ", path));
  }
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) {
    return absl::ErrnoToStatus(errno, StrCat("cannot stat node key file ", path));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(StrCat("node key file ", path, " is not a regular file"));
  }
  if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::PermissionDeniedError(
        StrCat("node key file ", path, " has mode ", OctalMode(info.st_mode),
               ": it must be readable by its owner only; run: chmod 600 ", path));
  }
  if (info.st_size > kMaxKeyFileBytes) {
    return absl::InvalidArgumentError(StrCat("node key file ", path, " has ", info.st_size,
                                             " bytes; a key file holds ", kHexSize, " hex digits"));
  }
  crypto::SecretBytes contents(static_cast<size_t>(info.st_size));
  size_t size = 0;
  while (size < contents.size()) {
    const ssize_t n =
        ::read(fd.get(), contents.mutable_span().data() + size, contents.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, StrCat("cannot read node key file ", path));
    if (n == 0) break;  // shrank while reading; parsed as it is
    size += static_cast<size_t>(n);
  }
  std::span<const uint8_t> text = contents.span().first(size);
  while (!text.empty() && IsSpace(text.back())) text = text.first(text.size() - 1);
  absl::StatusOr<crypto::SecretBytes> key =
      ParseNodeKeyHex(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
  if (!key.ok()) {
    return absl::InvalidArgumentError(StrCat("node key file ", path, ": ", key.status().message()));
  }
  return key;
}

absl::StatusOr<crypto::SecretBytes> GenerateNodeKeyFile(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(crypto::SecretBytes key, crypto::SecretBytes::Random(kNodeKeySize));
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
               S_IRUSR | S_IWUSR));
  if (fd.get() < 0) {
    const int error = errno;
    if (error == EEXIST) {
      return absl::AlreadyExistsError(
          StrCat("node key file ", path, " already exists; an existing key is never overwritten"));
    }
    return absl::ErrnoToStatus(error, StrCat("cannot create node key file ", path));
  }
  absl::Status status = WriteNewKeyFile(fd, key, path);
  if (status.ok()) status = fd.Close(path);
  if (status.ok()) status = SyncFolderOf(path);
  if (!status.ok()) {
    ::unlink(path.c_str());
    return status;
  }
  return key;
}

absl::StatusOr<crypto::SecretBytes> LoadNodeKey(const std::string& key_file, const char* env_var) {
  if (!key_file.empty()) return ReadNodeKeyFile(key_file);
  const char* value = std::getenv(env_var);
  if (value == nullptr || *value == '\0') {
    return absl::NotFoundError(StrCat("no node key: give a key file or set ", env_var,
                                      " to 64 hex digits (make one with "
                                      "`openssl rand -hex 32 > node.key && chmod 600 node.key`)"));
  }
  absl::StatusOr<crypto::SecretBytes> key = ParseNodeKeyHex(value);
  if (!key.ok()) {
    return absl::InvalidArgumentError(StrCat(env_var, ": ", key.status().message()));
  }
  return key;
}

}  // namespace silo::retrieval

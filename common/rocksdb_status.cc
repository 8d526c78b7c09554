#include "common/rocksdb_status.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"
#include "rocksdb/db.h"

namespace silo {

absl::Status FromRocksDb(const rocksdb::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = StrCat(what, ": ", status.ToString());
  if (status.IsNotFound() || status.IsPathNotFound()) return absl::NotFoundError(message);
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsNoSpace() || status.IsMemoryLimit()) return absl::ResourceExhaustedError(message);
  if (status.IsIOError() || status.IsBusy() || status.IsTimedOut() || status.IsTryAgain()) {
    return absl::UnavailableError(message);
  }
  if (status.IsInvalidArgument() || status.IsNotSupported()) {
    return absl::FailedPreconditionError(message);
  }
  if (status.IsAborted()) return absl::AbortedError(message);
  return absl::InternalError(message);
}

absl::Status CheckColumnFamilies(const rocksdb::DBOptions& options, const std::string& path,
                                 std::span<const char* const> column_families,
                                 std::string_view what_it_is) {
  std::error_code error;
  if (!std::filesystem::exists(std::filesystem::path(path) / "CURRENT", error)) {
    return absl::OkStatus();
  }
  std::vector<std::string> names;
  SILO_RETURN_IF_ERROR(FromRocksDb(rocksdb::DB::ListColumnFamilies(options, path, &names),
                                   StrCat("listing the column families of ", path)));
  for (const std::string& name : names) {
    if (name != rocksdb::kDefaultColumnFamilyName &&
        std::find(column_families.begin(), column_families.end(), name) == column_families.end()) {
      return absl::FailedPreconditionError(StrCat(
          path, " holds a RocksDB database with column family '", name, "': not ", what_it_is));
    }
  }
  return absl::OkStatus();
}

}  // namespace silo

// Adapters for the components that keep a RocksDB database (retrieval's document store, the
// coordinator's state): rocksdb::Status to absl::Status, and the check that a folder holds a
// database of the expected column families before it is opened.
//
// Thread-safe (pure functions).
#ifndef SILO_COMMON_ROCKSDB_STATUS_H_
#define SILO_COMMON_ROCKSDB_STATUS_H_

#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/options.h"
#include "rocksdb/status.h"

namespace silo {

// OK for OK; otherwise the closest canonical code (NotFound, DataLoss for corruption,
// ResourceExhausted, Unavailable for I/O and busy, FailedPrecondition, Aborted, Internal) with
// "<what>: <RocksDB's message>".
absl::Status FromRocksDb(const rocksdb::Status& status, std::string_view what);

// When `path` already holds a RocksDB database: FailedPrecondition, naming `what_it_is` ("a
// document store"), if it has a column family other than the default and `column_families`;
// the errors of listing them. OK when there is no database yet.
absl::Status CheckColumnFamilies(const rocksdb::DBOptions& options, const std::string& path,
                                 std::span<const char* const> column_families,
                                 std::string_view what_it_is);

}  // namespace silo

#endif  // SILO_COMMON_ROCKSDB_STATUS_H_

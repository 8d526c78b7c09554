// Nearest-neighbour search over an institution's chunk embeddings (DESIGN.md §4-5): a FAISS
// inner-product index over unit vectors, so a score is the cosine similarity. Ids are int64
// values chosen by the caller (chunk handles); -1 is reserved (FAISS's "no result").
//
// Kinds (IndexOptions::kind):
//   flat  exact search (IndexFlatIP behind an IndexIDMap2). Removal compacts the vectors.
//   ivf   IndexIVFFlat, spherical k-means over nlist lists, nprobe lists searched per query.
//         Until the index holds kIvfMinPointsPerList * nlist vectors it is an exact flat index;
//         the Add that reaches that count trains the centroids on every vector held (FAISS
//         subsamples to 256 per list) and moves them into the lists. Once trained it stays
//         trained, also when removals take it below the count again.
//   hnsw  IndexHNSWFlat (hnsw_m links per node, ef_construction, ef_search), which cannot remove
//         a vector: a removed or replaced vector becomes a tombstone that stays in the graph for
//         navigation and is filtered out of results (FAISS IDSelector); when tombstones exceed
//         kHnswMaxTombstoneFraction of the graph, that Add or Remove rebuilds the graph from the
//         live vectors. The rebuild costs a full build (slow: with Debian's FAISS, minutes per
//         100k vectors of dim 384; see silo-index-bench) but searches go on meanwhile, on the
//         old graph.
//
// Files (Save / Load): header (magic, format version, kind, dim, options, IVF trained flag,
// vector count, the caller's store version string), HNSW slot table, FAISS index, and a SHA-256
// of all of it. Save writes a temporary file in the same folder, syncs it and renames it over
// the target, so a crash leaves the old file or the new one, never a partial one. The index is
// rebuilt from the chunk store when Load returns NotFound (no file), DataLoss (corrupt or
// truncated) or FailedPrecondition (another format version, dim or structural option), or when
// store_version() differs from the store's; ReadIndexFileInfo reads the header alone to decide
// that before a large load.
//
// Thread-safety: Search, Save, Contains, size and stats may run concurrently from any number of
// threads (shared lock). Add and Remove are serialized among themselves and take the lock
// exclusively while they change the FAISS structures, which pauses searches for as long as the
// FAISS add of the batch takes: add in batches while serving (an HNSW insertion costs
// milliseconds). IVF training and the HNSW rebuild run beside searches (on the flat index, on
// the old graph), and the index switches to their result at the end. A waiting writer holds new
// searches back (absl::Mutex), so a long Save delays searches while an Add waits. FAISS
// parallelizes inside a call with OpenMP (omp_set_num_threads).
#ifndef SILO_RETRIEVAL_VECTOR_INDEX_H_
#define SILO_RETRIEVAL_VECTOR_INDEX_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace silo::retrieval {

enum class IndexKind { kFlat, kIvf, kHnsw };

// "flat", "ivf" or "hnsw" (lower case); InvalidArgument otherwise.
absl::StatusOr<IndexKind> ParseIndexKind(std::string_view name);
std::string_view IndexKindName(IndexKind kind);

struct IndexOptions {
  IndexKind kind = IndexKind::kFlat;
  // ivf: number of lists (k-means centroids) and lists searched per query (<= nlist).
  int32_t nlist = 1024;
  int32_t nprobe = 32;
  // hnsw: links per node (level 0 has 2 * hnsw_m), candidate list size while building and while
  // searching (a search uses max(ef_search, k)).
  int32_t hnsw_m = 32;
  int32_t ef_construction = 80;
  int32_t ef_search = 64;

  // InvalidArgument when a field of the chosen kind is out of range: nlist in [1, 2^20], nprobe
  // in [1, nlist], hnsw_m in [2, 256], ef_construction and ef_search in [1, 2^16]. Fields of
  // the other kinds are not checked.
  absl::Status Validate() const;
};

// One search result: the caller's id and the inner product with the query.
struct Neighbor {
  int64_t id = 0;
  float score = 0;
};

struct IndexStats {
  int64_t n_vectors = 0;     // live vectors (= size())
  bool ivf_trained = false;  // ivf: the lists are in use (false: exact flat search)
  int64_t n_tombstones = 0;  // hnsw: removed vectors still in the graph
};

// What a file's header says, read without loading the index.
struct IndexFileInfo {
  uint32_t format_version = 0;
  int32_t dim = 0;
  IndexOptions options;
  bool ivf_trained = false;
  int64_t n_vectors = 0;
  std::string store_version;
};

// Header of an index file. NotFound when `path` does not exist; DataLoss when it is not an
// index file or its header is truncated; FailedPrecondition for another format version. The
// checksum is not verified (Load does).
absl::StatusOr<IndexFileInfo> ReadIndexFileInfo(const std::string& path);

class VectorIndex {
 public:
  static constexpr int32_t kMaxDim = 1 << 16;
  static constexpr int kMaxK = 10'000;
  static constexpr int64_t kReservedId = -1;
  static constexpr int64_t kIvfMinPointsPerList = 39;  // FAISS's minimum for k-means
  static constexpr double kHnswMaxTombstoneFraction = 0.25;
  static constexpr size_t kMaxStoreVersionBytes = 4096;
  static constexpr uint32_t kFormatVersion = 1;

  // An empty index of `dim`-dimensional vectors. InvalidArgument when dim is outside
  // [1, kMaxDim] or options.Validate() fails.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Create(int32_t dim,
                                                             const IndexOptions& options);

  // Loads a file written by Save. `dim` and `options` are what the caller would Create; the
  // search-time options (nprobe, ef_search) are taken from `options`, the structural ones
  // (kind, dim, nlist for ivf, hnsw_m and ef_construction for hnsw) must equal the file's.
  // InvalidArgument when dim or options are invalid; NotFound when `path` does not exist;
  // DataLoss when the file is corrupt or truncated; FailedPrecondition when it has another
  // format version or a structural option differs; ResourceExhausted when out of memory.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Load(const std::string& path, int32_t dim,
                                                           const IndexOptions& options);

  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;
  ~VectorIndex();

  // Adds `vectors` ([ids.size(), dim] row-major, unit length expected, not checked) under
  // `ids`; an id already in the index gets its new vector (replace). InvalidArgument when
  // vectors.size() != ids.size() * dim, a value is NaN or infinite, an id repeats within the
  // call or equals kReservedId; nothing is changed then. ResourceExhausted when out of memory
  // and Internal when FAISS fails: the index may then hold part of the call.
  absl::Status Add(std::span<const int64_t> ids, std::span<const float> vectors);

  // Removes `ids`; ids not in the index are ignored. Returns how many were removed. Internal
  // (or ResourceExhausted) when FAISS fails.
  absl::StatusOr<int64_t> Remove(std::span<const int64_t> ids);

  // The k best neighbours of each query ([n_queries, dim] row-major), best first; fewer than k
  // when the index holds fewer (or, for ivf and hnsw, when the lists probed or the graph
  // explored hold fewer). InvalidArgument when queries.size() is not a multiple of dim, a value
  // is NaN or infinite, or k is outside [1, kMaxK].
  absl::StatusOr<std::vector<std::vector<Neighbor>>> Search(std::span<const float> queries,
                                                            int k) const;

  // Writes the index and `store_version` (an opaque string of at most kMaxStoreVersionBytes,
  // e.g. the chunk store's sequence number, returned by store_version() after Load) to `path`
  // atomically. InvalidArgument when store_version is too long; the errno code (NotFound,
  // PermissionDenied, ResourceExhausted, ...) when the file cannot be written.
  absl::Status Save(const std::string& path, std::string_view store_version) const;

  bool Contains(int64_t id) const;
  int64_t size() const;
  IndexStats stats() const;
  int32_t dim() const { return dim_; }
  const IndexOptions& options() const { return options_; }
  // The store version of the loaded file; empty for a created index.
  const std::string& store_version() const { return store_version_; }

 private:
  struct State;

  VectorIndex(int32_t dim, const IndexOptions& options, std::unique_ptr<State> state);

  // The *Locked helpers expect State::mutex held (exclusively when they modify); TrainIvf and
  // RebuildHnswIfNeeded expect State::write_mutex held and take State::mutex themselves.
  bool ContainsLocked(int64_t id) const;
  int64_t SizeLocked() const;
  absl::StatusOr<int64_t> RemoveLocked(std::span<const int64_t> ids);
  absl::Status AddNewLocked(std::span<const int64_t> ids, std::span<const float> vectors);
  // Trains the IVF lists on the flat index's vectors and `vectors`, and switches to them.
  absl::Status TrainIvf(std::span<const int64_t> ids, std::span<const float> vectors);
  absl::Status RebuildHnswIfNeeded();

  const int32_t dim_;
  const IndexOptions options_;
  std::string store_version_;
  std::unique_ptr<State> state_;
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_VECTOR_INDEX_H_

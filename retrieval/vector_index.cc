#include "retrieval/vector_index.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/sha256.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexHNSW.h"
#include "faiss/IndexIDMap.h"
#include "faiss/IndexIVFFlat.h"
#include "faiss/impl/IDSelector.h"
#include "faiss/impl/io.h"
#include "faiss/index_io.h"

namespace silo::retrieval {
namespace {

static_assert(std::endian::native == std::endian::little, "index files are little-endian");
static_assert(std::is_same_v<faiss::Index::idx_t, int64_t>);

using FaissId = faiss::Index::idx_t;

constexpr std::array<char, 8> kMagic = {'S', 'I', 'L', 'O', 'V', 'I', 'D', 'X'};
constexpr size_t kDigestBytes = crypto::Sha256Digest{}.size();
constexpr int32_t kMaxNlist = 1 << 20;
constexpr int32_t kMaxHnswM = 256;
constexpr int32_t kMaxEf = 1 << 16;
constexpr size_t kChecksumBufferBytes = 1 << 20;

// Kinds as stored in files; independent of the enum's values.
constexpr uint32_t kFlatCode = 1;
constexpr uint32_t kIvfCode = 2;
constexpr uint32_t kHnswCode = 3;

uint32_t KindCode(IndexKind kind) {
  switch (kind) {
    case IndexKind::kFlat:
      return kFlatCode;
    case IndexKind::kIvf:
      return kIvfCode;
    case IndexKind::kHnsw:
      return kHnswCode;
  }
  return 0;
}

// Runs one FAISS call and converts what it throws, once, to a Status.
template <typename Call>
absl::Status FaissCall(std::string_view what, Call&& call) {
  try {
    call();
    return absl::OkStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(StrCat(what, ": unknown exception"));
  }
}

absl::Status ErrnoStatus(int error, const std::string& message) {
  if (error == 0) return absl::InternalError(message);
  return absl::ErrnoToStatus(error, message);
}

absl::Status CheckFinite(std::span<const float> values, int32_t dim, std::string_view what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          StrCat(what, " ", i / dim, " has a non-finite value at ", i % dim));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDimAndOptions(int32_t dim, const IndexOptions& options) {
  if (dim < 1 || dim > VectorIndex::kMaxDim) {
    return absl::InvalidArgumentError(
        StrCat("dim ", dim, " is outside [1, ", VectorIndex::kMaxDim, "]"));
  }
  return options.Validate();
}

// FAISS objects are made by the helpers below; they throw, so they run inside FaissCall.
std::unique_ptr<faiss::IndexIDMap2> NewFlat(int32_t dim) {
  auto flat = std::make_unique<faiss::IndexFlatIP>(dim);
  auto map = std::make_unique<faiss::IndexIDMap2>(flat.get());
  map->own_fields = true;
  static_cast<void>(flat.release());  // owned by the map now
  return map;
}

std::unique_ptr<faiss::IndexHNSWFlat> NewHnsw(int32_t dim, const IndexOptions& options) {
  auto hnsw =
      std::make_unique<faiss::IndexHNSWFlat>(dim, options.hnsw_m, faiss::METRIC_INNER_PRODUCT);
  hnsw->hnsw.efConstruction = options.ef_construction;
  hnsw->hnsw.efSearch = options.ef_search;
  return hnsw;
}

// Slots of an HNSW graph that hold a live vector, not a tombstone.
class LiveSlots final : public faiss::IDSelector {
 public:
  explicit LiveSlots(const std::vector<int64_t>& slot_ids) : slot_ids_(slot_ids) {}
  bool is_member(FaissId slot) const override {
    return slot >= 0 && static_cast<size_t>(slot) < slot_ids_.size() &&
           slot_ids_[slot] != VectorIndex::kReservedId;
  }

 private:
  const std::vector<int64_t>& slot_ids_;
};

// While alive, FAISS calls of this thread run on it alone, when `active`. FAISS spreads a search
// over its queries: a single query gains nothing from a team of threads, and waking one costs
// more than the search itself on a busy machine (HNSW, 100k vectors, 2 cores: 15 ms instead of
// 0.9). The OpenMP setting is per thread, so other threads are not affected.
class ScopedSingleThread {
 public:
  explicit ScopedSingleThread(bool active) : active_(active), saved_(omp_get_max_threads()) {
    if (active_) omp_set_num_threads(1);
  }
  ScopedSingleThread(const ScopedSingleThread&) = delete;
  ScopedSingleThread& operator=(const ScopedSingleThread&) = delete;
  ~ScopedSingleThread() {
    if (active_) omp_set_num_threads(saved_);
  }

 private:
  const bool active_;
  const int saved_;
};

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// Writes to a file and hashes what it writes. The first error sticks: later writes do nothing
// and report 0 items, which makes FAISS throw.
class HashingFileWriter final : public faiss::IOWriter {
 public:
  HashingFileWriter(std::FILE* file, crypto::Sha256* hash) : file_(file), hash_(hash) {}

  size_t operator()(const void* ptr, size_t size, size_t nitems) override {
    if (!status_.ok()) return 0;
    const size_t bytes = size * nitems;
    if (bytes == 0) return nitems;
    if (std::fwrite(ptr, 1, bytes, file_) != bytes) {
      status_ = ErrnoStatus(errno, std::string("writing the index file"));
      return 0;
    }
    status_ = hash_->Update(std::span(static_cast<const uint8_t*>(ptr), bytes));
    return status_.ok() ? nitems : 0;
  }

  template <typename T>
  void WriteValue(const T& value) {
    (*this)(&value, sizeof(T), 1);
  }

  const absl::Status& status() const { return status_; }

 private:
  std::FILE* file_;
  crypto::Sha256* hash_;
  absl::Status status_;
};

// Reads at most `limit` bytes from a file: the checksummed part, never the digest after it.
class BoundedFileReader final : public faiss::IOReader {
 public:
  BoundedFileReader(std::FILE* file, int64_t limit) : file_(file), remaining_(limit) {}

  size_t operator()(void* ptr, size_t size, size_t nitems) override {
    if (size == 0 || nitems == 0) return nitems;
    const size_t fit = std::min<uint64_t>(nitems, static_cast<uint64_t>(remaining_) / size);
    const size_t got = std::fread(ptr, size, fit, file_);
    remaining_ -= static_cast<int64_t>(got * size);
    return got;
  }

  // DataLoss when fewer than `bytes` bytes are left.
  absl::Status Read(void* ptr, size_t bytes) {
    if ((*this)(ptr, 1, bytes) != bytes) return absl::DataLossError("index file is truncated");
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status ReadValue(T* value) {
    return Read(value, sizeof(T));
  }

  int64_t remaining() const { return remaining_; }

 private:
  std::FILE* file_;
  int64_t remaining_;
};

// Opens an index file for reading and returns it with its size.
absl::StatusOr<std::pair<File, int64_t>> OpenIndexFile(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(StrCat("index file ", path, " does not exist"));
    return ErrnoStatus(error, StrCat("cannot open index file ", path));
  }
  struct stat info;
  if (::fstat(::fileno(file.get()), &info) != 0) {
    return ErrnoStatus(errno, StrCat("cannot stat index file ", path));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(StrCat(path, " is not a regular file"));
  }
  if (info.st_size < static_cast<off_t>(kMagic.size() + kDigestBytes)) {
    return absl::DataLossError(StrCat("index file ", path, " is truncated"));
  }
  return std::make_pair(std::move(file), static_cast<int64_t>(info.st_size));
}

// Reads the header written by VectorIndex::Save (through the store version).
absl::StatusOr<IndexFileInfo> ReadHeader(BoundedFileReader& reader) {
  std::array<char, kMagic.size()> magic;
  SILO_RETURN_IF_ERROR(reader.Read(magic.data(), magic.size()));
  if (magic != kMagic) return absl::DataLossError("not a silo vector index file");
  IndexFileInfo info;
  SILO_RETURN_IF_ERROR(reader.ReadValue(&info.format_version));
  if (info.format_version != VectorIndex::kFormatVersion) {
    return absl::FailedPreconditionError(StrCat("index file format version ", info.format_version,
                                                ", this build reads ",
                                                VectorIndex::kFormatVersion));
  }
  uint32_t kind = 0;
  uint8_t trained = 0;
  uint32_t store_version_bytes = 0;
  IndexOptions& options = info.options;
  SILO_RETURN_IF_ERROR(reader.ReadValue(&kind));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&info.dim));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&options.nlist));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&options.nprobe));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&options.hnsw_m));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&options.ef_construction));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&options.ef_search));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&trained));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&info.n_vectors));
  SILO_RETURN_IF_ERROR(reader.ReadValue(&store_version_bytes));
  switch (kind) {
    case kFlatCode:
      options.kind = IndexKind::kFlat;
      break;
    case kIvfCode:
      options.kind = IndexKind::kIvf;
      break;
    case kHnswCode:
      options.kind = IndexKind::kHnsw;
      break;
    default:
      return absl::DataLossError(StrCat("index file has unknown kind ", kind));
  }
  if (absl::Status status = CheckDimAndOptions(info.dim, options); !status.ok()) {
    return absl::DataLossError(StrCat("index file header is invalid: ", status.message()));
  }
  if (trained > 1 || (trained == 1 && options.kind != IndexKind::kIvf) || info.n_vectors < 0 ||
      store_version_bytes > VectorIndex::kMaxStoreVersionBytes) {
    return absl::DataLossError("index file header is invalid");
  }
  info.ivf_trained = trained == 1;
  info.store_version.resize(store_version_bytes);
  SILO_RETURN_IF_ERROR(reader.Read(info.store_version.data(), store_version_bytes));
  return info;
}

// Hashes the file but its last kDigestBytes and compares with them.
absl::Status VerifyChecksum(std::FILE* file, int64_t file_size) {
  SILO_ASSIGN_OR_RETURN(crypto::Sha256 hash, crypto::Sha256::Create());
  std::vector<uint8_t> buffer(kChecksumBufferBytes);
  int64_t left = file_size - static_cast<int64_t>(kDigestBytes);
  while (left > 0) {
    const size_t piece = static_cast<size_t>(std::min<int64_t>(left, buffer.size()));
    if (std::fread(buffer.data(), 1, piece, file) != piece) {
      return absl::DataLossError("short read of the index file");
    }
    SILO_RETURN_IF_ERROR(hash.Update(std::span<const uint8_t>(buffer.data(), piece)));
    left -= static_cast<int64_t>(piece);
  }
  crypto::Sha256Digest stored;
  if (std::fread(stored.data(), 1, stored.size(), file) != stored.size()) {
    return absl::DataLossError("short read of the index file");
  }
  SILO_ASSIGN_OR_RETURN(const crypto::Sha256Digest digest, hash.Finish());
  if (digest != stored) return absl::DataLossError("index file checksum mismatch (corrupt file)");
  return absl::OkStatus();
}

// Syncs the folder holding `path`, so that a rename in it is durable.
absl::Status SyncFolder(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string folder = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, StrCat("cannot open folder ", folder));
  absl::Status status;
  if (::fsync(fd) != 0) status = ErrnoStatus(errno, StrCat("cannot sync folder ", folder));
  ::close(fd);
  return status;
}

}  // namespace

absl::StatusOr<IndexKind> ParseIndexKind(std::string_view name) {
  if (name == "flat") return IndexKind::kFlat;
  if (name == "ivf") return IndexKind::kIvf;
  if (name == "hnsw") return IndexKind::kHnsw;
  return absl::InvalidArgumentError(
      StrCat("unknown index kind \"", name, "\" (expected flat, ivf or hnsw)"));
}

std::string_view IndexKindName(IndexKind kind) {
  switch (kind) {
    case IndexKind::kFlat:
      return "flat";
    case IndexKind::kIvf:
      return "ivf";
    case IndexKind::kHnsw:
      return "hnsw";
  }
  return "unknown";
}

absl::Status IndexOptions::Validate() const {
  auto check = [](std::string_view name, int32_t value, int32_t min, int32_t max) -> absl::Status {
    if (value < min || value > max) {
      return absl::InvalidArgumentError(
          StrCat("index option ", name, " = ", value, " is outside [", min, ", ", max, "]"));
    }
    return absl::OkStatus();
  };
  switch (kind) {
    case IndexKind::kFlat:
      return absl::OkStatus();
    case IndexKind::kIvf:
      SILO_RETURN_IF_ERROR(check("nlist", nlist, 1, kMaxNlist));
      return check("nprobe", nprobe, 1, nlist);
    case IndexKind::kHnsw:
      SILO_RETURN_IF_ERROR(check("hnsw_m", hnsw_m, 2, kMaxHnswM));
      SILO_RETURN_IF_ERROR(check("ef_construction", ef_construction, 1, kMaxEf));
      return check("ef_search", ef_search, 1, kMaxEf);
  }
  return absl::InvalidArgumentError("unknown index kind");
}

// The FAISS index of each kind; exactly one of flat, ivf and hnsw is set.
struct VectorIndex::State {
  // Serializes Add and Remove, so that their long parts (IVF training, HNSW rebuild) can run
  // without `mutex` and the state stays as they read it.
  absl::Mutex write_mutex;
  // Guards the rest: shared by searches and saves, exclusive while the state changes.
  // absl::Mutex, unlike glibc's reader-preferring std::shared_mutex, lets a writer in under a
  // steady search load.
  absl::Mutex mutex;
  // kFlat, and kIvf until trained: ids kept by the map (rev_map: id → position).
  std::unique_ptr<faiss::IndexIDMap2> flat;
  // kIvf once trained: ids stored in the lists, found through the direct map (hash table).
  std::unique_ptr<faiss::IndexIVFFlat> ivf;
  // kHnsw: FAISS labels are slots (insertion order); slot_ids[slot] is the caller's id or
  // kReservedId for a tombstone; slot_of maps live ids to their slots.
  std::unique_ptr<faiss::IndexHNSWFlat> hnsw;
  std::vector<int64_t> slot_ids;
  absl::flat_hash_map<int64_t, int64_t> slot_of;
  int64_t n_dead = 0;

  const faiss::Index& index() const {
    if (hnsw != nullptr) return *hnsw;
    if (ivf != nullptr) return *ivf;
    return *flat;
  }
};

absl::StatusOr<IndexFileInfo> ReadIndexFileInfo(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(auto opened, OpenIndexFile(path));
  BoundedFileReader reader(opened.first.get(), opened.second - kDigestBytes);
  absl::StatusOr<IndexFileInfo> info = ReadHeader(reader);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        StrCat("index file ", path, ": ", info.status().message()));
  }
  return info;
}

VectorIndex::VectorIndex(int32_t dim, const IndexOptions& options, std::unique_ptr<State> state)
    : dim_(dim), options_(options), state_(std::move(state)) {}

VectorIndex::~VectorIndex() = default;

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Create(int32_t dim,
                                                                 const IndexOptions& options) {
  SILO_RETURN_IF_ERROR(CheckDimAndOptions(dim, options));
  auto state = std::make_unique<State>();
  SILO_RETURN_IF_ERROR(FaissCall("creating the index", [&] {
    if (options.kind == IndexKind::kHnsw) {
      state->hnsw = NewHnsw(dim, options);
    } else {
      state->flat = NewFlat(dim);
    }
  }));
  return std::unique_ptr<VectorIndex>(new VectorIndex(dim, options, std::move(state)));
}

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Load(const std::string& path, int32_t dim,
                                                               const IndexOptions& options) {
  SILO_RETURN_IF_ERROR(CheckDimAndOptions(dim, options));
  SILO_ASSIGN_OR_RETURN(auto opened, OpenIndexFile(path));
  auto& [file, file_size] = opened;
  auto with_path = [&path](const absl::Status& status) {
    return absl::Status(status.code(), StrCat("index file ", path, ": ", status.message()));
  };

  // The checksum first, so that nothing of a corrupt file is interpreted: any damage is
  // DataLoss. (Later format versions keep the magic and the trailing SHA-256.)
  if (absl::Status status = VerifyChecksum(file.get(), file_size); !status.ok()) {
    return with_path(status);
  }
  if (std::fseek(file.get(), 0, SEEK_SET) != 0) {
    return ErrnoStatus(errno, StrCat("cannot seek in index file ", path));
  }
  BoundedFileReader reader(file.get(), file_size - kDigestBytes);
  absl::StatusOr<IndexFileInfo> info = ReadHeader(reader);
  if (!info.ok()) return with_path(info.status());
  const IndexOptions& saved = info->options;
  std::string mismatch;
  if (info->dim != dim) {
    mismatch = StrCat("dim ", info->dim, ", expected ", dim);
  } else if (saved.kind != options.kind) {
    mismatch =
        StrCat("kind ", IndexKindName(saved.kind), ", expected ", IndexKindName(options.kind));
  } else if (options.kind == IndexKind::kIvf && saved.nlist != options.nlist) {
    mismatch = StrCat("nlist ", saved.nlist, ", expected ", options.nlist);
  } else if (options.kind == IndexKind::kHnsw &&
             (saved.hnsw_m != options.hnsw_m || saved.ef_construction != options.ef_construction)) {
    mismatch = StrCat("hnsw_m ", saved.hnsw_m, " and ef_construction ", saved.ef_construction,
                      ", expected ", options.hnsw_m, " and ", options.ef_construction);
  }
  if (!mismatch.empty()) {
    return absl::FailedPreconditionError(StrCat("index file ", path, " has ", mismatch));
  }

  auto state = std::make_unique<State>();
  int64_t n_slots = 0;
  if (absl::Status status = reader.ReadValue(&n_slots); !status.ok()) return with_path(status);
  if (n_slots < 0 || n_slots > reader.remaining() / static_cast<int64_t>(sizeof(int64_t)) ||
      (options.kind != IndexKind::kHnsw && n_slots != 0)) {
    return absl::DataLossError(StrCat("index file ", path, " has a bad slot table"));
  }
  state->slot_ids.resize(n_slots);
  if (absl::Status status = reader.Read(state->slot_ids.data(), n_slots * sizeof(int64_t));
      !status.ok()) {
    return with_path(status);
  }

  std::unique_ptr<faiss::Index> index;
  absl::Status status =
      FaissCall("reading the FAISS index", [&] { index.reset(faiss::read_index(&reader)); });
  if (status.code() == absl::StatusCode::kInternal) {
    return absl::DataLossError(StrCat("index file ", path, ": ", status.message()));
  }
  SILO_RETURN_IF_ERROR(status);
  if (reader.remaining() != 0) {
    return absl::DataLossError(StrCat("index file ", path, " has trailing bytes"));
  }

  // The file is intact; what follows checks that it is what its header says.
  const auto bad = [&path](std::string_view what) {
    return absl::DataLossError(StrCat("index file ", path, ": ", what));
  };
  if (index->d != dim || index->metric_type != faiss::METRIC_INNER_PRODUCT) {
    return bad("FAISS index has another dimension or metric");
  }
  if (options.kind == IndexKind::kHnsw) {
    auto* hnsw = dynamic_cast<faiss::IndexHNSWFlat*>(index.get());
    if (hnsw == nullptr || hnsw->ntotal != n_slots) return bad("not the HNSW index expected");
    state->hnsw.reset(static_cast<faiss::IndexHNSWFlat*>(index.release()));
    state->hnsw->hnsw.efSearch = options.ef_search;
    state->hnsw->hnsw.efConstruction = options.ef_construction;
    for (int64_t slot = 0; slot < n_slots; ++slot) {
      const int64_t id = state->slot_ids[slot];
      if (id == kReservedId) {
        ++state->n_dead;
      } else if (!state->slot_of.emplace(id, slot).second) {
        return bad("an id repeats in the slot table");
      }
    }
  } else if (info->ivf_trained) {
    auto* ivf = dynamic_cast<faiss::IndexIVFFlat*>(index.get());
    if (ivf == nullptr || ivf->nlist != static_cast<size_t>(options.nlist) || !ivf->is_trained ||
        ivf->direct_map.type != faiss::DirectMap::Hashtable) {
      return bad("not the IVF index expected");
    }
    state->ivf.reset(static_cast<faiss::IndexIVFFlat*>(index.release()));
    state->ivf->nprobe = options.nprobe;
  } else {
    auto* flat = dynamic_cast<faiss::IndexIDMap2*>(index.get());
    if (flat == nullptr || dynamic_cast<const faiss::IndexFlatIP*>(flat->index) == nullptr ||
        flat->rev_map.size() != static_cast<size_t>(flat->ntotal)) {
      return bad("not the flat index expected");
    }
    state->flat.reset(static_cast<faiss::IndexIDMap2*>(index.release()));
  }
  auto loaded = std::unique_ptr<VectorIndex>(new VectorIndex(dim, options, std::move(state)));
  if (loaded->SizeLocked() != info->n_vectors) return bad("vector count differs from the header");
  loaded->store_version_ = std::move(info->store_version);
  return loaded;
}

bool VectorIndex::ContainsLocked(int64_t id) const {
  const State& s = *state_;
  if (s.hnsw != nullptr) return s.slot_of.contains(id);
  if (s.ivf != nullptr) return s.ivf->direct_map.hashtable.count(id) != 0;
  return s.flat->rev_map.count(id) != 0;
}

int64_t VectorIndex::SizeLocked() const {
  const State& s = *state_;
  if (s.hnsw != nullptr) return static_cast<int64_t>(s.slot_of.size());
  return s.index().ntotal;
}

bool VectorIndex::Contains(int64_t id) const {
  absl::ReaderMutexLock lock(&state_->mutex);
  return ContainsLocked(id);
}

int64_t VectorIndex::size() const {
  absl::ReaderMutexLock lock(&state_->mutex);
  return SizeLocked();
}

IndexStats VectorIndex::stats() const {
  absl::ReaderMutexLock lock(&state_->mutex);
  return {.n_vectors = SizeLocked(),
          .ivf_trained = state_->ivf != nullptr,
          .n_tombstones = state_->n_dead};
}

absl::Status VectorIndex::Add(std::span<const int64_t> ids, std::span<const float> vectors) {
  if (vectors.size() % dim_ != 0 || vectors.size() / dim_ != ids.size()) {
    return absl::InvalidArgumentError(
        StrCat("Add: ", vectors.size(), " values for ", ids.size(), " ids of dimension ", dim_));
  }
  SILO_RETURN_IF_ERROR(CheckFinite(vectors, dim_, "vector"));
  absl::flat_hash_set<int64_t> seen;
  seen.reserve(ids.size());
  for (const int64_t id : ids) {
    if (id == kReservedId) return absl::InvalidArgumentError("Add: id -1 is reserved");
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(StrCat("Add: id ", id, " repeats"));
    }
  }
  State& s = *state_;
  absl::MutexLock write_lock(&s.write_mutex);
  bool train_ivf = false;
  {
    absl::WriterMutexLock lock(&s.mutex);
    std::vector<int64_t> replaced;
    for (const int64_t id : ids) {
      if (ContainsLocked(id)) replaced.push_back(id);
    }
    if (!replaced.empty()) SILO_RETURN_IF_ERROR(RemoveLocked(replaced).status());
    train_ivf =
        options_.kind == IndexKind::kIvf && s.ivf == nullptr &&
        s.flat->ntotal + static_cast<int64_t>(ids.size()) >= kIvfMinPointsPerList * options_.nlist;
    if (!train_ivf) SILO_RETURN_IF_ERROR(AddNewLocked(ids, vectors));
  }
  if (train_ivf) SILO_RETURN_IF_ERROR(TrainIvf(ids, vectors));
  return RebuildHnswIfNeeded();
}

absl::StatusOr<int64_t> VectorIndex::Remove(std::span<const int64_t> ids) {
  State& s = *state_;
  absl::MutexLock write_lock(&s.write_mutex);
  int64_t removed = 0;
  {
    absl::WriterMutexLock lock(&s.mutex);
    SILO_ASSIGN_OR_RETURN(removed, RemoveLocked(ids));
  }
  SILO_RETURN_IF_ERROR(RebuildHnswIfNeeded());
  return removed;
}

absl::StatusOr<int64_t> VectorIndex::RemoveLocked(std::span<const int64_t> ids) {
  State& s = *state_;
  std::vector<int64_t> present;
  absl::flat_hash_set<int64_t> seen;
  for (const int64_t id : ids) {
    if (ContainsLocked(id) && seen.insert(id).second) present.push_back(id);
  }
  const auto n = static_cast<int64_t>(present.size());
  if (n == 0) return 0;
  if (s.hnsw != nullptr) {
    for (const int64_t id : present) {
      auto it = s.slot_of.find(id);
      s.slot_ids[it->second] = kReservedId;
      s.slot_of.erase(it);
    }
    s.n_dead += n;
    return n;
  }
  size_t removed = 0;
  if (s.ivf != nullptr) {
    // The direct map's hash table removes an IDSelectorArray without scanning the lists.
    const faiss::IDSelectorArray selector(present.size(), present.data());
    SILO_RETURN_IF_ERROR(FaissCall("IVF remove", [&] { removed = s.ivf->remove_ids(selector); }));
  } else {
    const faiss::IDSelectorBatch selector(present.size(), present.data());
    SILO_RETURN_IF_ERROR(FaissCall("flat remove", [&] { removed = s.flat->remove_ids(selector); }));
  }
  if (removed != present.size()) {
    return absl::InternalError(StrCat("FAISS removed ", removed, " of ", n, " vectors"));
  }
  return n;
}

absl::Status VectorIndex::AddNewLocked(std::span<const int64_t> ids,
                                       std::span<const float> vectors) {
  State& s = *state_;
  const auto n = static_cast<int64_t>(ids.size());
  if (n == 0) return absl::OkStatus();
  if (s.hnsw != nullptr) {
    const int64_t first = s.hnsw->ntotal;
    if (first + n > std::numeric_limits<int32_t>::max()) {  // HNSW's storage_idx_t
      return absl::ResourceExhaustedError("HNSW index is limited to 2^31 - 1 vectors");
    }
    SILO_RETURN_IF_ERROR(FaissCall("HNSW add", [&] { s.hnsw->add(n, vectors.data()); }));
    s.slot_ids.insert(s.slot_ids.end(), ids.begin(), ids.end());
    for (int64_t i = 0; i < n; ++i) s.slot_of.emplace(ids[i], first + i);
    return absl::OkStatus();
  }
  if (s.ivf != nullptr) {
    return FaissCall("IVF add", [&] { s.ivf->add_with_ids(n, vectors.data(), ids.data()); });
  }
  return FaissCall("flat add", [&] { s.flat->add_with_ids(n, vectors.data(), ids.data()); });
}

absl::Status VectorIndex::TrainIvf(std::span<const int64_t> ids, std::span<const float> vectors) {
  State& s = *state_;
  // Train on what the flat index holds and the new vectors together. Only Add and Remove
  // change the state, and write_mutex keeps them out: the copy stays valid without the lock.
  std::vector<int64_t> all_ids;
  std::vector<float> all;  // [held + ids.size(), dim]
  {
    absl::ReaderMutexLock lock(&s.mutex);
    const int64_t held = s.flat->ntotal;
    if (held > 0) {
      all_ids.assign(s.flat->id_map.begin(), s.flat->id_map.end());
      all_ids.insert(all_ids.end(), ids.begin(), ids.end());
      all.resize((held + ids.size()) * dim_);
      SILO_RETURN_IF_ERROR(FaissCall("flat reconstruct",
                                     [&] { s.flat->index->reconstruct_n(0, held, all.data()); }));
      std::copy(vectors.begin(), vectors.end(), all.begin() + held * dim_);
      ids = all_ids;
      vectors = all;
    }
  }
  // Searches go on meanwhile, on the flat index.
  std::unique_ptr<faiss::IndexIVFFlat> ivf;
  SILO_RETURN_IF_ERROR(FaissCall("IVF training", [&] {
    auto quantizer = std::make_unique<faiss::IndexFlatIP>(dim_);
    ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer.get(), dim_, options_.nlist,
                                                faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;
    static_cast<void>(quantizer.release());  // owned by the IVF index now
    ivf->cp.spherical = true;  // unit centroids: assignment by inner product is by angle
    ivf->nprobe = options_.nprobe;
    const auto n = static_cast<int64_t>(ids.size());
    ivf->train(n, vectors.data());
    ivf->set_direct_map_type(faiss::DirectMap::Hashtable);
    ivf->add_with_ids(n, vectors.data(), ids.data());
  }));
  absl::WriterMutexLock lock(&s.mutex);
  s.ivf = std::move(ivf);
  s.flat.reset();
  return absl::OkStatus();
}

absl::Status VectorIndex::RebuildHnswIfNeeded() {
  State& s = *state_;
  // As in TrainIvf, write_mutex keeps the state still; searches run during the build.
  std::vector<int64_t> live_ids;
  std::vector<float> live;  // [live_ids.size(), dim]
  {
    absl::ReaderMutexLock lock(&s.mutex);
    if (s.hnsw == nullptr || s.n_dead == 0 ||
        s.n_dead <= kHnswMaxTombstoneFraction * static_cast<double>(s.slot_ids.size())) {
      return absl::OkStatus();
    }
    live_ids.reserve(s.slot_of.size());
    live.resize(s.slot_of.size() * dim_);
    SILO_RETURN_IF_ERROR(FaissCall("HNSW reconstruct", [&] {
      for (size_t slot = 0; slot < s.slot_ids.size(); ++slot) {
        if (s.slot_ids[slot] == kReservedId) continue;
        s.hnsw->reconstruct(static_cast<FaissId>(slot), live.data() + live_ids.size() * dim_);
        live_ids.push_back(s.slot_ids[slot]);
      }
    }));
  }
  const auto n_live = static_cast<int64_t>(live_ids.size());
  std::unique_ptr<faiss::IndexHNSWFlat> hnsw;
  SILO_RETURN_IF_ERROR(FaissCall("HNSW rebuild", [&] {
    hnsw = NewHnsw(dim_, options_);
    hnsw->add(n_live, live.data());
  }));
  absl::WriterMutexLock lock(&s.mutex);
  s.hnsw = std::move(hnsw);
  s.slot_ids = std::move(live_ids);
  s.slot_of.clear();
  for (int64_t slot = 0; slot < n_live; ++slot) s.slot_of.emplace(s.slot_ids[slot], slot);
  s.n_dead = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<Neighbor>>> VectorIndex::Search(
    std::span<const float> queries, int k) const {
  if (k < 1 || k > kMaxK) {
    return absl::InvalidArgumentError(StrCat("Search: k = ", k, " is outside [1, ", kMaxK, "]"));
  }
  if (queries.size() % dim_ != 0) {
    return absl::InvalidArgumentError(
        StrCat("Search: ", queries.size(), " values are not queries of dimension ", dim_));
  }
  SILO_RETURN_IF_ERROR(CheckFinite(queries, dim_, "query"));
  const auto n_queries = static_cast<int64_t>(queries.size() / dim_);
  std::vector<std::vector<Neighbor>> results(n_queries);

  absl::ReaderMutexLock lock(&state_->mutex);
  const State& s = *state_;
  const int64_t n = SizeLocked();
  if (n_queries == 0 || n == 0) return results;
  const int64_t k_search = std::min<int64_t>(k, n);
  std::vector<float> scores(n_queries * k_search);    // [n_queries, k_search]
  std::vector<FaissId> labels(n_queries * k_search);  // [n_queries, k_search]
  const ScopedSingleThread single_thread(n_queries == 1);
  if (s.hnsw != nullptr) {
    // Tombstones are explored but not returned; widen the search by the share they take.
    const double slots_per_live = static_cast<double>(s.slot_ids.size()) / static_cast<double>(n);
    faiss::SearchParametersHNSW params;
    params.efSearch = static_cast<int>(std::min<double>(
        kMaxEf, std::ceil(std::max<int64_t>(options_.ef_search, k_search) * slots_per_live)));
    LiveSlots live(s.slot_ids);
    if (s.n_dead > 0) params.sel = &live;
    SILO_RETURN_IF_ERROR(FaissCall("HNSW search", [&] {
      s.hnsw->search(n_queries, queries.data(), k_search, scores.data(), labels.data(), &params);
    }));
    for (FaissId& label : labels) {
      if (label >= 0) label = s.slot_ids[label];
    }
  } else if (s.ivf != nullptr) {
    faiss::SearchParametersIVF params;
    params.nprobe = options_.nprobe;
    SILO_RETURN_IF_ERROR(FaissCall("IVF search", [&] {
      s.ivf->search(n_queries, queries.data(), k_search, scores.data(), labels.data(), &params);
    }));
  } else {
    SILO_RETURN_IF_ERROR(FaissCall("flat search", [&] {
      s.flat->search(n_queries, queries.data(), k_search, scores.data(), labels.data());
    }));
  }
  for (int64_t q = 0; q < n_queries; ++q) {
    results[q].reserve(k_search);
    for (int64_t j = q * k_search; j < (q + 1) * k_search; ++j) {
      if (labels[j] != kReservedId) results[q].push_back({labels[j], scores[j]});
    }
  }
  return results;
}

absl::Status VectorIndex::Save(const std::string& path, std::string_view store_version) const {
  if (store_version.size() > kMaxStoreVersionBytes) {
    return absl::InvalidArgumentError(StrCat("store version has ", store_version.size(),
                                             " bytes, more than ", kMaxStoreVersionBytes));
  }
  std::string temp_path = StrCat(path, ".tmp.XXXXXX");
  const int fd = ::mkstemp(temp_path.data());
  if (fd < 0) return ErrnoStatus(errno, StrCat("cannot create a temporary file beside ", path));
  File file(::fdopen(fd, "wb"));
  if (file == nullptr) {
    const int error = errno;
    ::close(fd);
    ::unlink(temp_path.c_str());
    return ErrnoStatus(error, StrCat("cannot open ", temp_path));
  }

  absl::Status status = [&]() -> absl::Status {
    SILO_ASSIGN_OR_RETURN(crypto::Sha256 hash, crypto::Sha256::Create());
    HashingFileWriter writer(file.get(), &hash);
    {
      absl::ReaderMutexLock lock(&state_->mutex);
      const State& s = *state_;
      writer(kMagic.data(), 1, kMagic.size());
      writer.WriteValue(kFormatVersion);
      writer.WriteValue(KindCode(options_.kind));
      writer.WriteValue(dim_);
      writer.WriteValue(options_.nlist);
      writer.WriteValue(options_.nprobe);
      writer.WriteValue(options_.hnsw_m);
      writer.WriteValue(options_.ef_construction);
      writer.WriteValue(options_.ef_search);
      writer.WriteValue(static_cast<uint8_t>(s.ivf != nullptr ? 1 : 0));
      writer.WriteValue(SizeLocked());
      writer.WriteValue(static_cast<uint32_t>(store_version.size()));
      writer(store_version.data(), 1, store_version.size());
      writer.WriteValue(static_cast<int64_t>(s.slot_ids.size()));
      writer(s.slot_ids.data(), sizeof(int64_t), s.slot_ids.size());
      SILO_RETURN_IF_ERROR(writer.status());
      absl::Status faiss_status =
          FaissCall("writing the FAISS index", [&] { faiss::write_index(&s.index(), &writer); });
      SILO_RETURN_IF_ERROR(writer.status());  // the cause, when the writer made FAISS throw
      SILO_RETURN_IF_ERROR(faiss_status);
    }
    SILO_ASSIGN_OR_RETURN(const crypto::Sha256Digest digest, hash.Finish());
    if (std::fwrite(digest.data(), 1, digest.size(), file.get()) != digest.size() ||
        std::fflush(file.get()) != 0) {
      return ErrnoStatus(errno, StrCat("cannot write ", temp_path));
    }
    if (::fsync(::fileno(file.get())) != 0) {
      return ErrnoStatus(errno, StrCat("cannot sync ", temp_path));
    }
    return absl::OkStatus();
  }();
  if (std::fclose(file.release()) != 0 && status.ok()) {
    status = ErrnoStatus(errno, StrCat("cannot close ", temp_path));
  }
  if (status.ok() && std::rename(temp_path.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus(errno, StrCat("cannot rename ", temp_path, " to ", path));
  }
  if (!status.ok()) {
    ::unlink(temp_path.c_str());
    return status;
  }
  return SyncFolder(path);
}

}  // namespace silo::retrieval

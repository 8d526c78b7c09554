// Record formats, schema version 2.
//
// Keys hold big-endian integers (so they sort numerically); payloads hold little-endian
// integers, "bytes" is a u32 length followed by that many bytes, f32 is an IEEE-754 float's bits
// as a u32.
//
//   cf      key                                  payload
//   docs    'd' u64 doc_id                       bytes source_path, bytes content_hash,
//                                                bytes title, bytes text, u32 n_chunks,
//                                                u64 first_vector_id, u64 store_version
//   docs    'p' path_id[32]                      u64 doc_id
//   chunks  'c' u64 doc_id u32 chunk_no          u64 vector_id, u64 begin_byte, u64 end_byte,
//                                                u32 n_tokens, bytes source_path, bytes title,
//                                                bytes text, u32 dim, f32[dim] embedding
//   chunks  'v' u64 vector_id                    u64 doc_id, u32 chunk_no
//   kv      u64 doc_id u32 chunk_no              bytes model_fingerprint, bytes shard
//   meta    "config"                             u32 schema_version, bytes store_id,
//                                                bytes model_fingerprint, bytes embedder_id,
//                                                u32 embedding_dim
//   meta    "counters"                           u64 store_version, u64 next_doc_id,
//                                                u64 next_vector_id
//
// Every value is an envelope around its payload:
//   u8 envelope_version (1) || nonce[12] || AES-256-GCM ciphertext || tag[16]
// sealed (crypto::SealWithRandomNonce) with associated data
//   "silo.store" || u8 envelope_version || bytes store_id || bytes cf_name || bytes key
// where store_id is empty for meta "config" (which holds it). A payload must be consumed exactly.
//
// Keys: seal key = HKDF-SHA256(ikm = node key, salt = "silo.document_store", info = "records"),
// path key = the same with info = "source paths", path_id = HKDF-SHA256(ikm = source_path,
// salt = path key, info = "source path id"): a keyed hash (HMAC-SHA256 at heart), so the path
// stays out of the keys. RocksDB's own default column family stays empty.
#include "retrieval/document_store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <utility>

#include "common/logging.h"
#include "common/rocksdb_status.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/aead.h"
#include "crypto/hkdf.h"

namespace silo::retrieval {
namespace {

enum Cf { kDocs = 0, kChunks = 1, kKv = 2, kMeta = 3, kNumCfs = 4 };
constexpr std::array<const char*, kNumCfs> kCfNames = {"docs", "chunks", "kv", "meta"};

constexpr uint8_t kEnvelopeVersion = 1;
constexpr uint32_t kSchemaVersion = 2;
constexpr size_t kStoreIdSize = 16;
constexpr size_t kPathIdSize = 32;
constexpr char kAadLabel[] = "silo.store";
constexpr char kKeySalt[] = "silo.document_store";

constexpr char kConfigKey[] = "config";
constexpr char kCountersKey[] = "counters";
constexpr char kDocPrefix = 'd';
constexpr char kPathPrefix = 'p';
constexpr char kChunkPrefix = 'c';
constexpr char kVectorPrefix = 'v';

constexpr size_t kMaxSourcePathBytes = 4096;
constexpr size_t kMaxContentHashBytes = 256;
constexpr size_t kMaxIdentityBytes = 256;  // model fingerprint, embedder id
constexpr size_t kMaxTitleBytes = 64 << 10;
constexpr size_t kMaxDocumentTextBytes = size_t{256} << 20;
constexpr size_t kMaxChunkTextBytes = size_t{16} << 20;
constexpr size_t kMaxKvShardBytes = size_t{1} << 30;
constexpr int32_t kMaxEmbeddingDim = 1 << 16;
constexpr size_t kMaxChunksPerDocument = size_t{1} << 20;
constexpr uint64_t kMaxId = std::numeric_limits<int64_t>::max();

std::span<const uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}
std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// ---------------------------------------------------------------------------------------------
// Payload encoding.

class Writer {
 public:
  void U8(uint8_t value) { bytes_.push_back(value); }
  void U32(uint32_t value) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  void U64(uint64_t value) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  // Precondition: bytes.size() < 2^32 (inputs are bounded far below).
  void Bytes(std::span<const uint8_t> bytes) {
    U32(static_cast<uint32_t>(bytes.size()));
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
  }
  void Bytes(std::string_view text) { Bytes(AsBytes(text)); }
  void Floats(std::span<const float> values) {
    U32(static_cast<uint32_t>(values.size()));
    for (float value : values) U32(std::bit_cast<uint32_t>(value));
  }

  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Reads a payload; any read past the end makes it fail (and read zeros) from then on, and
// Finish reports it, so decoders read all fields first and check once.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  uint8_t U8() {
    std::span<const uint8_t> b = Take(1);
    return b.empty() ? 0 : b[0];
  }
  uint32_t U32() {
    std::span<const uint8_t> b = Take(4);
    uint32_t value = 0;
    for (size_t i = 0; i < b.size(); ++i) value |= static_cast<uint32_t>(b[i]) << (8 * i);
    return value;
  }
  uint64_t U64() {
    std::span<const uint8_t> b = Take(8);
    uint64_t value = 0;
    for (size_t i = 0; i < b.size(); ++i) value |= static_cast<uint64_t>(b[i]) << (8 * i);
    return value;
  }
  std::span<const uint8_t> BytesView() { return Take(U32()); }
  std::string String() { return std::string(AsText(BytesView())); }
  std::vector<float> Floats() {
    const uint32_t n = U32();
    if (n > remaining() / 4) {
      ok_ = false;
      return {};
    }
    std::vector<float> values(n);
    for (float& value : values) value = std::bit_cast<float>(U32());
    return values;
  }

  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }

  // DataLoss unless every read stayed in bounds and the payload was consumed exactly.
  absl::Status Finish(std::string_view what) const {
    if (!ok_) return absl::DataLossError(StrCat(what, " is truncated"));
    if (remaining() != 0) {
      return absl::DataLossError(StrCat(what, " has ", remaining(), " unexpected trailing bytes"));
    }
    return absl::OkStatus();
  }

 private:
  std::span<const uint8_t> Take(size_t n) {
    if (!ok_ || n > remaining()) {
      ok_ = false;
      return {};
    }
    std::span<const uint8_t> out = bytes_.subspan(offset_, n);
    offset_ += n;
    return out;
  }

  std::span<const uint8_t> bytes_;
  size_t offset_ = 0;
  bool ok_ = true;
};

// ---------------------------------------------------------------------------------------------
// Keys and ids.

void AppendBigEndian(std::string& out, uint64_t value, int n_bytes) {
  for (int i = n_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(value >> (8 * i)));
}
uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

std::string DocKey(uint64_t doc_id) {
  std::string key(1, kDocPrefix);
  AppendBigEndian(key, doc_id, 8);
  return key;
}
std::string ChunkKey(uint64_t doc_id, uint32_t chunk_no) {
  std::string key(1, kChunkPrefix);
  AppendBigEndian(key, doc_id, 8);
  AppendBigEndian(key, chunk_no, 4);
  return key;
}
constexpr size_t kChunkKeySize = 13;
std::string VectorKey(uint64_t vector_id) {
  std::string key(1, kVectorPrefix);
  AppendBigEndian(key, vector_id, 8);
  return key;
}
std::string KvKey(uint64_t doc_id, uint32_t chunk_no) {
  std::string key;
  AppendBigEndian(key, doc_id, 8);
  AppendBigEndian(key, chunk_no, 4);
  return key;
}

std::string ChunkId(uint64_t doc_id, uint32_t chunk_no) { return StrCat(doc_id, ":", chunk_no); }

// A canonical decimal number (no sign, no leading zero) no larger than `max`.
absl::StatusOr<uint64_t> ParseDecimal(std::string_view text, uint64_t max, std::string_view what) {
  const bool canonical =
      !text.empty() && text.size() <= 19 &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      (text.size() == 1 || text[0] != '0');
  uint64_t value = 0;
  if (canonical) {
    for (char c : text) value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (!canonical || value > max) {
    return absl::InvalidArgumentError(StrCat("'", text, "' is not a ", what));
  }
  return value;
}

absl::StatusOr<uint64_t> ParseDocId(std::string_view doc_id) {
  SILO_ASSIGN_OR_RETURN(uint64_t id, ParseDecimal(doc_id, kMaxId, "document id"));
  if (id == 0) return absl::InvalidArgumentError("'0' is not a document id");
  return id;
}

struct ChunkRef {
  uint64_t doc_id;
  uint32_t chunk_no;
};

absl::StatusOr<ChunkRef> ParseChunkId(std::string_view chunk_id) {
  const size_t colon = chunk_id.find(':');
  if (colon == std::string_view::npos) {
    return absl::InvalidArgumentError(
        StrCat("'", chunk_id, "' is not a chunk id (<doc_id>:<chunk_no>)"));
  }
  SILO_ASSIGN_OR_RETURN(uint64_t doc_id, ParseDocId(chunk_id.substr(0, colon)));
  SILO_ASSIGN_OR_RETURN(uint64_t chunk_no, ParseDecimal(chunk_id.substr(colon + 1),
                                                        kMaxChunksPerDocument - 1, "chunk number"));
  return ChunkRef{doc_id, static_cast<uint32_t>(chunk_no)};
}

// What a key names, for messages: never a path or text.
std::string DescribeKey(Cf cf, std::string_view key) {
  const std::string_view name = kCfNames[cf];
  if (cf == kMeta) return StrCat(name, "/", key);
  if (cf == kKv && key.size() == 12) {
    return StrCat("KV shard ", ChunkId(ReadBigEndian(key.substr(0, 8)),
                                       static_cast<uint32_t>(ReadBigEndian(key.substr(8)))));
  }
  if (!key.empty() && key[0] == kDocPrefix && key.size() == 9) {
    return StrCat("document ", ReadBigEndian(key.substr(1)));
  }
  if (!key.empty() && key[0] == kPathPrefix) return "source path index entry";
  if (!key.empty() && key[0] == kChunkPrefix && key.size() == kChunkKeySize) {
    return StrCat("chunk ", ChunkId(ReadBigEndian(key.substr(1, 8)),
                                    static_cast<uint32_t>(ReadBigEndian(key.substr(9)))));
  }
  if (!key.empty() && key[0] == kVectorPrefix && key.size() == 9) {
    return StrCat("vector id entry ", ReadBigEndian(key.substr(1)));
  }
  return StrCat(name, " record with a ", key.size(), "-byte key");
}

// ---------------------------------------------------------------------------------------------
// RocksDB adapter: the one place rocksdb::Status becomes absl::Status.

rocksdb::WriteOptions SyncWrite() {
  rocksdb::WriteOptions options;
  options.sync = true;  // the WAL is fsynced before Write returns
  return options;
}

// ---------------------------------------------------------------------------------------------
// Records.

struct Config {
  uint32_t schema_version = kSchemaVersion;
  std::string store_id;
  std::string model_fingerprint;
  std::string embedder_id;
  int32_t embedding_dim = 0;
};

std::vector<uint8_t> EncodeConfig(const Config& config) {
  Writer w;
  w.U32(config.schema_version);
  w.Bytes(config.store_id);
  w.Bytes(config.model_fingerprint);
  w.Bytes(config.embedder_id);
  w.U32(static_cast<uint32_t>(config.embedding_dim));
  return w.bytes();
}

absl::StatusOr<Config> DecodeConfig(std::span<const uint8_t> payload) {
  Reader r(payload);
  Config config;
  config.schema_version = r.U32();
  if (payload.size() >= 4 && config.schema_version != kSchemaVersion) {
    return absl::FailedPreconditionError(StrCat("the store has schema version ",
                                                config.schema_version, "; this build reads ",
                                                kSchemaVersion));
  }
  config.store_id = r.String();
  config.model_fingerprint = r.String();
  config.embedder_id = r.String();
  const uint32_t dim = r.U32();
  SILO_RETURN_IF_ERROR(r.Finish("store config"));
  if (config.store_id.size() != kStoreIdSize || config.model_fingerprint.empty() ||
      config.embedder_id.empty() || dim == 0 || dim > static_cast<uint32_t>(kMaxEmbeddingDim)) {
    return absl::DataLossError("store config holds out-of-range values");
  }
  config.embedding_dim = static_cast<int32_t>(dim);
  return config;
}

struct CountersRecord {
  int64_t store_version = 0;
  int64_t next_doc_id = 1;
  int64_t next_vector_id = 0;
};

std::vector<uint8_t> EncodeCounters(const CountersRecord& counters) {
  Writer w;
  w.U64(static_cast<uint64_t>(counters.store_version));
  w.U64(static_cast<uint64_t>(counters.next_doc_id));
  w.U64(static_cast<uint64_t>(counters.next_vector_id));
  return w.bytes();
}

absl::StatusOr<CountersRecord> DecodeCounters(std::span<const uint8_t> payload) {
  Reader r(payload);
  const uint64_t store_version = r.U64();
  const uint64_t next_doc_id = r.U64();
  const uint64_t next_vector_id = r.U64();
  SILO_RETURN_IF_ERROR(r.Finish("store counters"));
  if (store_version > kMaxId || next_doc_id == 0 || next_doc_id > kMaxId ||
      next_vector_id > kMaxId) {
    return absl::DataLossError("store counters hold out-of-range values");
  }
  return CountersRecord{static_cast<int64_t>(store_version), static_cast<int64_t>(next_doc_id),
                        static_cast<int64_t>(next_vector_id)};
}

std::vector<uint8_t> EncodeDocument(const NewDocument& document, uint32_t n_chunks,
                                    int64_t first_vector_id, int64_t store_version) {
  Writer w;
  w.Bytes(document.source_path);
  w.Bytes(document.content_hash);
  w.Bytes(document.title);
  w.Bytes(document.text);
  w.U32(n_chunks);
  w.U64(static_cast<uint64_t>(first_vector_id));
  w.U64(static_cast<uint64_t>(store_version));
  return w.bytes();
}

absl::StatusOr<DocumentRecord> DecodeDocument(std::span<const uint8_t> payload, uint64_t doc_id) {
  Reader r(payload);
  DocumentRecord record;
  record.doc_id = StrCat(doc_id);
  record.source_path = r.String();
  record.content_hash = r.String();
  record.title = r.String();
  record.text = r.String();
  const uint32_t n_chunks = r.U32();
  const uint64_t first_vector_id = r.U64();
  const uint64_t store_version = r.U64();
  const std::string what = StrCat("document ", doc_id);
  SILO_RETURN_IF_ERROR(r.Finish(what));
  if (record.source_path.empty() || n_chunks > kMaxChunksPerDocument ||
      first_vector_id > kMaxId - n_chunks || store_version > kMaxId) {
    return absl::DataLossError(StrCat(what, " holds out-of-range values"));
  }
  record.n_chunks = static_cast<int32_t>(n_chunks);
  record.first_vector_id = static_cast<int64_t>(first_vector_id);
  record.store_version = static_cast<int64_t>(store_version);
  return record;
}

std::vector<uint8_t> EncodeChunk(const NewChunk& chunk, int64_t vector_id,
                                 std::string_view source_path) {
  Writer w;
  w.U64(static_cast<uint64_t>(vector_id));
  w.U64(static_cast<uint64_t>(chunk.begin_byte));
  w.U64(static_cast<uint64_t>(chunk.end_byte));
  w.U32(static_cast<uint32_t>(chunk.n_tokens));
  w.Bytes(source_path);
  w.Bytes(chunk.title);
  w.Bytes(chunk.text);
  w.Floats(chunk.embedding);
  return w.bytes();
}

absl::StatusOr<ChunkRecord> DecodeChunk(std::span<const uint8_t> payload, ChunkRef ref,
                                        int32_t embedding_dim) {
  Reader r(payload);
  ChunkRecord record;
  record.chunk_id = ChunkId(ref.doc_id, ref.chunk_no);
  record.doc_id = StrCat(ref.doc_id);
  record.chunk_no = static_cast<int32_t>(ref.chunk_no);
  const uint64_t vector_id = r.U64();
  const uint64_t begin_byte = r.U64();
  const uint64_t end_byte = r.U64();
  const uint32_t n_tokens = r.U32();
  record.source_path = r.String();
  record.title = r.String();
  record.text = r.String();
  record.embedding = r.Floats();
  const std::string what = StrCat("chunk ", record.chunk_id);
  SILO_RETURN_IF_ERROR(r.Finish(what));
  if (vector_id > kMaxId || begin_byte > end_byte || end_byte > kMaxDocumentTextBytes ||
      n_tokens > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()) ||
      record.embedding.size() != static_cast<size_t>(embedding_dim)) {
    return absl::DataLossError(StrCat(what, " holds out-of-range values"));
  }
  record.vector_id = static_cast<int64_t>(vector_id);
  record.begin_byte = static_cast<int64_t>(begin_byte);
  record.end_byte = static_cast<int64_t>(end_byte);
  record.n_tokens = static_cast<int32_t>(n_tokens);
  return record;
}

std::vector<uint8_t> EncodeChunkRef(ChunkRef ref) {
  Writer w;
  w.U64(ref.doc_id);
  w.U32(ref.chunk_no);
  return w.bytes();
}

absl::StatusOr<ChunkRef> DecodeChunkRef(std::span<const uint8_t> payload, int64_t vector_id) {
  Reader r(payload);
  ChunkRef ref;
  ref.doc_id = r.U64();
  ref.chunk_no = r.U32();
  const std::string what = StrCat("vector id entry ", vector_id);
  SILO_RETURN_IF_ERROR(r.Finish(what));
  if (ref.doc_id == 0 || ref.doc_id > kMaxId || ref.chunk_no >= kMaxChunksPerDocument) {
    return absl::DataLossError(StrCat(what, " holds out-of-range values"));
  }
  return ref;
}

std::vector<uint8_t> EncodeDocId(uint64_t doc_id) {
  Writer w;
  w.U64(doc_id);
  return w.bytes();
}

absl::StatusOr<uint64_t> DecodeDocId(std::span<const uint8_t> payload) {
  Reader r(payload);
  const uint64_t doc_id = r.U64();
  SILO_RETURN_IF_ERROR(r.Finish("source path index entry"));
  if (doc_id == 0 || doc_id > kMaxId) {
    return absl::DataLossError("source path index entry holds an out-of-range document id");
  }
  return doc_id;
}

std::vector<uint8_t> EncodeKvShard(std::string_view model_fingerprint,
                                   std::span<const uint8_t> shard) {
  Writer w;
  w.Bytes(model_fingerprint);
  w.Bytes(shard);
  return w.bytes();
}

// ---------------------------------------------------------------------------------------------
// Input checks.

absl::Status CheckSize(std::string_view what, size_t size, size_t max) {
  if (size > max) {
    return absl::InvalidArgumentError(
        StrCat(what, " has ", size, " bytes, more than the ", max, " allowed"));
  }
  return absl::OkStatus();
}

absl::Status CheckIdentity(std::string_view what, std::string_view value) {
  return CheckSize(what, value.size(), kMaxIdentityBytes);
}

absl::Status CheckNewDocument(const NewDocument& document, std::span<const NewChunk> chunks,
                              int32_t embedding_dim) {
  if (document.source_path.empty()) return absl::InvalidArgumentError("empty source path");
  SILO_RETURN_IF_ERROR(CheckSize("source path", document.source_path.size(), kMaxSourcePathBytes));
  SILO_RETURN_IF_ERROR(
      CheckSize("content hash", document.content_hash.size(), kMaxContentHashBytes));
  SILO_RETURN_IF_ERROR(CheckSize("document title", document.title.size(), kMaxTitleBytes));
  SILO_RETURN_IF_ERROR(CheckSize("document text", document.text.size(), kMaxDocumentTextBytes));
  if (chunks.size() > kMaxChunksPerDocument) {
    return absl::InvalidArgumentError(
        StrCat("a document has at most ", kMaxChunksPerDocument, " chunks; got ", chunks.size()));
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    const NewChunk& chunk = chunks[i];
    const std::string what = StrCat("chunk ", i);
    if (chunk.begin_byte < 0 || chunk.end_byte < chunk.begin_byte ||
        static_cast<uint64_t>(chunk.end_byte) > document.text.size()) {
      return absl::InvalidArgumentError(StrCat(what, ": byte range [", chunk.begin_byte, ", ",
                                               chunk.end_byte, ") is not within the document's ",
                                               document.text.size(), " bytes of text"));
    }
    if (chunk.n_tokens < 0) {
      return absl::InvalidArgumentError(StrCat(what, ": negative token count"));
    }
    SILO_RETURN_IF_ERROR(CheckSize(StrCat(what, " title"), chunk.title.size(), kMaxTitleBytes));
    SILO_RETURN_IF_ERROR(CheckSize(StrCat(what, " text"), chunk.text.size(), kMaxChunkTextBytes));
    SILO_RETURN_IF_ERROR(
        CheckSize(StrCat(what, " KV shard"), chunk.kv_shard.size(), kMaxKvShardBytes));
    if (chunk.embedding.size() != static_cast<size_t>(embedding_dim)) {
      return absl::InvalidArgumentError(StrCat(what, ": embedding has ", chunk.embedding.size(),
                                               " values; the store's size is ", embedding_dim));
    }
    for (float value : chunk.embedding) {
      if (!std::isfinite(value)) {
        return absl::InvalidArgumentError(StrCat(what, ": embedding has a non-finite value"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOptionMatches(std::string_view what, std::string_view stored,
                                std::string_view given) {
  if (given.empty() || given == stored) return absl::OkStatus();
  return absl::FailedPreconditionError(
      StrCat("the store was made with ", what, " '", stored, "' and is opened with '", given,
             "': re-ingest the documents into a new store, or open it with the same ", what));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// State.

struct DocumentStore::State {
  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    const absl::Status status = Close();
    if (!status.ok()) {
      SILO_LOG(Warning) << "closing the document store: " << status;
    }
  }

  absl::Status Close() {
    if (db == nullptr) return absl::OkStatus();
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
    }
    handles.clear();
    cfs.fill(nullptr);
    absl::Status status = FromRocksDb(db->Close(), "closing the document store");
    db.reset();
    return status;
  }

  absl::Status CheckOpen() const {
    if (db == nullptr) return absl::FailedPreconditionError("the document store is closed");
    return absl::OkStatus();
  }

  std::vector<uint8_t> Aad(Cf cf, std::string_view key) const {
    Writer w;
    for (const char* c = kAadLabel; *c != '\0'; ++c) w.U8(static_cast<uint8_t>(*c));
    w.U8(kEnvelopeVersion);
    const bool is_config = cf == kMeta && key == kConfigKey;
    w.Bytes(is_config ? std::string_view() : store_id);
    w.Bytes(kCfNames[cf]);
    w.Bytes(key);
    return w.bytes();
  }

  // The envelope of `payload` stored at `key` of `cf`.
  absl::StatusOr<std::string> Seal(Cf cf, std::string_view key,
                                   std::span<const uint8_t> payload) const {
    SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed,
                          crypto::SealWithRandomNonce(seal_key, payload, Aad(cf, key)));
    std::string value;
    value.reserve(1 + sealed.size());
    value.push_back(static_cast<char>(kEnvelopeVersion));
    value.append(AsText(sealed));
    return value;
  }

  // The payload of the envelope `value` found at `key` of `cf`. DataLoss when it is not an
  // envelope or fails authentication.
  absl::StatusOr<std::vector<uint8_t>> Unseal(Cf cf, std::string_view key,
                                              std::string_view value) const {
    if (value.size() < 1 + crypto::kAes256GcmNonceSize + crypto::kAes256GcmTagSize ||
        static_cast<uint8_t>(value[0]) != kEnvelopeVersion) {
      return absl::DataLossError(
          StrCat(DescribeKey(cf, key), " is not a sealed record (truncated or unknown format)"));
    }
    absl::StatusOr<std::vector<uint8_t>> payload =
        crypto::OpenWithNonce(seal_key, AsBytes(value.substr(1)), Aad(cf, key));
    if (payload.status().code() == absl::StatusCode::kDataLoss) {
      return absl::DataLossError(
          StrCat(DescribeKey(cf, key),
                 " failed authentication: altered, moved from another key, or sealed under "
                 "another node key"));
    }
    return payload;
  }

  // The payload at `key` of `cf` as of `snapshot` (nullptr: now). NotFound when absent.
  absl::StatusOr<std::vector<uint8_t>> Read(Cf cf, std::string_view key,
                                            const rocksdb::Snapshot* snapshot) const {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot;
    options.verify_checksums = true;
    rocksdb::PinnableSlice value;
    SILO_RETURN_IF_ERROR(FromRocksDb(db->Get(options, cfs[cf], key, &value),
                                     StrCat("reading ", DescribeKey(cf, key))));
    return Unseal(cf, key, value.ToStringView());
  }

  absl::Status Put(rocksdb::WriteBatch& batch, Cf cf, std::string_view key,
                   std::span<const uint8_t> payload) const {
    SILO_ASSIGN_OR_RETURN(std::string value, Seal(cf, key, payload));
    return FromRocksDb(batch.Put(cfs[cf], key, value), "building a write batch");
  }

  absl::Status Delete(rocksdb::WriteBatch& batch, Cf cf, std::string_view key) const {
    return FromRocksDb(batch.Delete(cfs[cf], key), "building a write batch");
  }

  absl::Status Write(rocksdb::WriteBatch& batch) {
    return FromRocksDb(db->Write(SyncWrite(), &batch), "writing to the document store");
  }

  absl::StatusOr<std::string> PathIndexKey(std::string_view source_path) const {
    SILO_ASSIGN_OR_RETURN(crypto::SecretBytes id,
                          crypto::HkdfSha256(AsBytes(source_path), path_key.span(),
                                             AsBytes("source path id"), kPathIdSize));
    std::string key(1, kPathPrefix);
    key.append(AsText(id.span()));
    return key;
  }

  absl::StatusOr<DocumentRecord> ReadDocument(uint64_t doc_id,
                                              const rocksdb::Snapshot* snapshot) const {
    const std::string key = DocKey(doc_id);
    SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, Read(kDocs, key, snapshot));
    return DecodeDocument(payload, doc_id);
  }

  // The document at `source_path`; NotFound when there is none.
  absl::StatusOr<DocumentRecord> FindBySourcePath(std::string_view source_path,
                                                  const rocksdb::Snapshot* snapshot) const {
    SILO_ASSIGN_OR_RETURN(std::string key, PathIndexKey(source_path));
    absl::StatusOr<std::vector<uint8_t>> payload = Read(kDocs, key, snapshot);
    if (absl::IsNotFound(payload.status())) {
      return absl::NotFoundError(StrCat("no document at source path ", source_path));
    }
    if (!payload.ok()) return payload.status();
    SILO_ASSIGN_OR_RETURN(uint64_t doc_id, DecodeDocId(*payload));
    absl::StatusOr<DocumentRecord> document = ReadDocument(doc_id, snapshot);
    if (absl::IsNotFound(document.status())) {
      return absl::DataLossError(
          StrCat("source path index names document ", doc_id, ", which does not exist"));
    }
    if (document.ok() && document->source_path != source_path) {
      return absl::DataLossError(
          StrCat("source path index names document ", doc_id, ", which has another path"));
    }
    return document;
  }

  absl::StatusOr<ChunkRecord> ReadChunk(ChunkRef ref, const rocksdb::Snapshot* snapshot) const {
    SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> payload,
                          Read(kChunks, ChunkKey(ref.doc_id, ref.chunk_no), snapshot));
    return DecodeChunk(payload, ref, embedding_dim);
  }

  // Deletes every record of `document` (whose id is `doc_id`) but its source path index entry.
  absl::Status DeleteDocument(rocksdb::WriteBatch& batch, uint64_t doc_id,
                              const DocumentRecord& document) const {
    SILO_RETURN_IF_ERROR(Delete(batch, kDocs, DocKey(doc_id)));
    for (int32_t i = 0; i < document.n_chunks; ++i) {
      const uint32_t chunk_no = static_cast<uint32_t>(i);
      SILO_RETURN_IF_ERROR(Delete(batch, kChunks, ChunkKey(doc_id, chunk_no)));
      SILO_RETURN_IF_ERROR(
          Delete(batch, kChunks, VectorKey(static_cast<uint64_t>(document.first_vector_id + i))));
      SILO_RETURN_IF_ERROR(Delete(batch, kKv, KvKey(doc_id, chunk_no)));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // all of them, RocksDB's default included
  std::array<rocksdb::ColumnFamilyHandle*, kNumCfs> cfs{};
  crypto::SecretBytes seal_key;  // AES-256-GCM key of every value
  crypto::SecretBytes path_key;  // keyed hash of source paths
  std::string store_id;
  std::string model_fingerprint;
  std::string embedder_id;
  int32_t embedding_dim = 0;

  std::mutex write_mutex;  // serializes writes; guards counters
  CountersRecord counters;
};

namespace {

absl::StatusOr<crypto::SecretBytes> DeriveKey(const crypto::SecretBytes& node_key,
                                              std::string_view info) {
  return crypto::HkdfSha256(node_key.span(), AsBytes(kKeySalt), AsBytes(info),
                            crypto::kAes256GcmKeySize);
}

// Whether any of the record column families holds a key.
absl::StatusOr<bool> HasRecords(rocksdb::DB& db,
                                const std::array<rocksdb::ColumnFamilyHandle*, kNumCfs>& cfs) {
  for (Cf cf : {kDocs, kChunks, kKv}) {
    std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(rocksdb::ReadOptions(), cfs[cf]));
    it->SeekToFirst();
    if (it->Valid()) return true;
    SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "scanning the document store"));
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DocumentStore.

DocumentStore::DocumentStore(std::unique_ptr<State> state) : state_(std::move(state)) {}
DocumentStore::~DocumentStore() = default;

absl::StatusOr<std::unique_ptr<DocumentStore>> DocumentStore::Open(
    const std::string& path, const crypto::SecretBytes& node_key,
    const DocumentStoreOptions& options) {
  if (node_key.size() != crypto::kAes256GcmKeySize) {
    return absl::InvalidArgumentError(StrCat("the node key has ", node_key.size(),
                                             " bytes; it must have ", crypto::kAes256GcmKeySize));
  }
  SILO_RETURN_IF_ERROR(CheckIdentity("model fingerprint", options.model_fingerprint));
  SILO_RETURN_IF_ERROR(CheckIdentity("embedder id", options.embedder_id));
  if (options.embedding_dim < 0 || options.embedding_dim > kMaxEmbeddingDim) {
    return absl::InvalidArgumentError(
        StrCat("embedding size ", options.embedding_dim, " is not in [0, ", kMaxEmbeddingDim, "]"));
  }
  const bool complete = !options.model_fingerprint.empty() && !options.embedder_id.empty() &&
                        options.embedding_dim > 0;
  constexpr std::string_view kIncomplete =
      "a new document store needs a model fingerprint, an embedder id and an embedding size";

  std::error_code error;
  const bool exists = std::filesystem::exists(std::filesystem::path(path) / "CURRENT", error);
  if (!exists) {
    if (!options.create_if_missing) {
      return absl::NotFoundError(StrCat("no document store at ", path));
    }
    if (!complete) return absl::InvalidArgumentError(StrCat(kIncomplete, " (creating ", path, ")"));
  }

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  SILO_RETURN_IF_ERROR(CheckColumnFamilies(db_options, path, kCfNames, "a document store"));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const char* name : kCfNames) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());

  auto state = std::make_unique<State>();
  rocksdb::DB* db = nullptr;
  SILO_RETURN_IF_ERROR(
      FromRocksDb(rocksdb::DB::Open(db_options, path, descriptors, &state->handles, &db),
                  StrCat("opening the document store ", path)));
  state->db.reset(db);
  for (int cf = 0; cf < kNumCfs; ++cf) state->cfs[cf] = state->handles[cf + 1];

  SILO_ASSIGN_OR_RETURN(state->seal_key, DeriveKey(node_key, "records"));
  SILO_ASSIGN_OR_RETURN(state->path_key, DeriveKey(node_key, "source paths"));

  absl::StatusOr<std::vector<uint8_t>> config_payload = state->Read(kMeta, kConfigKey, nullptr);
  if (absl::IsNotFound(config_payload.status())) {
    // A new store, or one whose first Open died before its metadata was written.
    SILO_ASSIGN_OR_RETURN(bool has_records, HasRecords(*state->db, state->cfs));
    if (has_records) {
      return absl::DataLossError(
          StrCat("the document store ", path, " holds records but no metadata"));
    }
    if (!complete) return absl::InvalidArgumentError(StrCat(kIncomplete, " (creating ", path, ")"));
    SILO_ASSIGN_OR_RETURN(crypto::SecretBytes store_id, crypto::SecretBytes::Random(kStoreIdSize));
    Config config;
    config.store_id = std::string(AsText(store_id.span()));
    config.model_fingerprint = options.model_fingerprint;
    config.embedder_id = options.embedder_id;
    config.embedding_dim = options.embedding_dim;
    state->store_id = config.store_id;
    rocksdb::WriteBatch batch;
    SILO_RETURN_IF_ERROR(state->Put(batch, kMeta, kConfigKey, EncodeConfig(config)));
    SILO_RETURN_IF_ERROR(state->Put(batch, kMeta, kCountersKey, EncodeCounters({})));
    SILO_RETURN_IF_ERROR(state->Write(batch));
    config_payload = EncodeConfig(config);
  } else if (absl::IsDataLoss(config_payload.status())) {
    return absl::DataLossError(StrCat("cannot authenticate the metadata of the document store ",
                                      path, ": wrong node key, or the store is corrupted (",
                                      config_payload.status().message(), ")"));
  }
  if (!config_payload.ok()) return config_payload.status();

  SILO_ASSIGN_OR_RETURN(Config config, DecodeConfig(*config_payload));
  SILO_RETURN_IF_ERROR(
      CheckOptionMatches("model fingerprint", config.model_fingerprint, options.model_fingerprint));
  SILO_RETURN_IF_ERROR(CheckOptionMatches("embedder", config.embedder_id, options.embedder_id));
  if (options.embedding_dim != 0 && options.embedding_dim != config.embedding_dim) {
    return absl::FailedPreconditionError(StrCat("the store holds embeddings of size ",
                                                config.embedding_dim, " and is opened with size ",
                                                options.embedding_dim));
  }
  state->store_id = config.store_id;
  state->model_fingerprint = config.model_fingerprint;
  state->embedder_id = config.embedder_id;
  state->embedding_dim = config.embedding_dim;

  absl::StatusOr<std::vector<uint8_t>> counters = state->Read(kMeta, kCountersKey, nullptr);
  if (absl::IsNotFound(counters.status())) {
    return absl::DataLossError(StrCat("the document store ", path, " has no counters record"));
  }
  if (!counters.ok()) return counters.status();
  SILO_ASSIGN_OR_RETURN(state->counters, DecodeCounters(*counters));
  return std::unique_ptr<DocumentStore>(new DocumentStore(std::move(state)));
}

absl::Status DocumentStore::Close() { return state_->Close(); }

absl::StatusOr<PutDocumentResult> DocumentStore::PutDocument(const NewDocument& document,
                                                             std::span<const NewChunk> chunks) {
  SILO_RETURN_IF_ERROR(CheckNewDocument(document, chunks, state_->embedding_dim));
  const std::lock_guard<std::mutex> lock(state_->write_mutex);
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  State& s = *state_;

  PutDocumentResult result;
  rocksdb::WriteBatch batch;
  absl::StatusOr<DocumentRecord> old = s.FindBySourcePath(document.source_path, nullptr);
  if (old.ok()) {
    SILO_ASSIGN_OR_RETURN(uint64_t old_id, ParseDocId(old->doc_id));
    SILO_RETURN_IF_ERROR(s.DeleteDocument(batch, old_id, *old));
    result.replaced_doc_id = old->doc_id;
  } else if (!absl::IsNotFound(old.status())) {
    return old.status();
  }

  CountersRecord next = s.counters;
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
  if (next.next_doc_id >= static_cast<int64_t>(kMaxId) ||
      next.next_vector_id > static_cast<int64_t>(kMaxId) - n_chunks ||
      next.store_version >= static_cast<int64_t>(kMaxId)) {
    return absl::ResourceExhaustedError("the document store has run out of ids");
  }
  const uint64_t doc_id = static_cast<uint64_t>(next.next_doc_id++);
  const int64_t first_vector_id = next.next_vector_id;
  next.next_vector_id += n_chunks;
  ++next.store_version;

  SILO_RETURN_IF_ERROR(s.Put(batch, kDocs, DocKey(doc_id),
                             EncodeDocument(document, static_cast<uint32_t>(n_chunks),
                                            first_vector_id, next.store_version)));
  SILO_ASSIGN_OR_RETURN(std::string path_key, s.PathIndexKey(document.source_path));
  SILO_RETURN_IF_ERROR(s.Put(batch, kDocs, path_key, EncodeDocId(doc_id)));
  result.chunk_ids.reserve(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    const uint32_t chunk_no = static_cast<uint32_t>(i);
    const int64_t vector_id = first_vector_id + static_cast<int64_t>(i);
    SILO_RETURN_IF_ERROR(s.Put(batch, kChunks, ChunkKey(doc_id, chunk_no),
                               EncodeChunk(chunks[i], vector_id, document.source_path)));
    SILO_RETURN_IF_ERROR(s.Put(batch, kChunks, VectorKey(static_cast<uint64_t>(vector_id)),
                               EncodeChunkRef({doc_id, chunk_no})));
    if (!chunks[i].kv_shard.empty()) {
      SILO_RETURN_IF_ERROR(s.Put(batch, kKv, KvKey(doc_id, chunk_no),
                                 EncodeKvShard(s.model_fingerprint, chunks[i].kv_shard)));
    }
    result.chunk_ids.push_back(ChunkId(doc_id, chunk_no));
  }
  SILO_RETURN_IF_ERROR(s.Put(batch, kMeta, kCountersKey, EncodeCounters(next)));
  SILO_RETURN_IF_ERROR(s.Write(batch));
  s.counters = next;

  result.doc_id = StrCat(doc_id);
  result.first_vector_id = first_vector_id;
  result.store_version = next.store_version;
  return result;
}

absl::Status DocumentStore::RemoveDocument(std::string_view source_path) {
  const std::lock_guard<std::mutex> lock(state_->write_mutex);
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  State& s = *state_;
  SILO_ASSIGN_OR_RETURN(DocumentRecord old, s.FindBySourcePath(source_path, nullptr));
  SILO_ASSIGN_OR_RETURN(uint64_t old_id, ParseDocId(old.doc_id));
  if (s.counters.store_version >= static_cast<int64_t>(kMaxId)) {
    return absl::ResourceExhaustedError("the document store's version counter is exhausted");
  }
  CountersRecord next = s.counters;
  ++next.store_version;

  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(s.DeleteDocument(batch, old_id, old));
  SILO_ASSIGN_OR_RETURN(std::string path_key, s.PathIndexKey(source_path));
  SILO_RETURN_IF_ERROR(s.Delete(batch, kDocs, path_key));
  SILO_RETURN_IF_ERROR(s.Put(batch, kMeta, kCountersKey, EncodeCounters(next)));
  SILO_RETURN_IF_ERROR(s.Write(batch));
  s.counters = next;
  return absl::OkStatus();
}

absl::StatusOr<DocumentRecord> DocumentStore::GetDocument(std::string_view doc_id) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  SILO_ASSIGN_OR_RETURN(uint64_t id, ParseDocId(doc_id));
  return state_->ReadDocument(id, nullptr);
}

absl::StatusOr<DocumentRecord> DocumentStore::GetDocumentBySourcePath(
    std::string_view source_path) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  // One snapshot, so that a concurrent replacement is seen whole or not at all.
  rocksdb::ManagedSnapshot snapshot(state_->db.get());
  return state_->FindBySourcePath(source_path, snapshot.snapshot());
}

absl::StatusOr<ChunkRecord> DocumentStore::GetChunk(std::string_view chunk_id) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  SILO_ASSIGN_OR_RETURN(ChunkRef ref, ParseChunkId(chunk_id));
  return state_->ReadChunk(ref, nullptr);
}

absl::StatusOr<ChunkRecord> DocumentStore::GetChunkByVectorId(int64_t vector_id) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  if (vector_id < 0) {
    return absl::InvalidArgumentError(StrCat("vector id ", vector_id, " is negative"));
  }
  rocksdb::ManagedSnapshot snapshot(state_->db.get());
  absl::StatusOr<std::vector<uint8_t>> payload =
      state_->Read(kChunks, VectorKey(static_cast<uint64_t>(vector_id)), snapshot.snapshot());
  if (absl::IsNotFound(payload.status())) {
    return absl::NotFoundError(StrCat("no chunk has vector id ", vector_id));
  }
  if (!payload.ok()) return payload.status();
  SILO_ASSIGN_OR_RETURN(ChunkRef ref, DecodeChunkRef(*payload, vector_id));
  absl::StatusOr<ChunkRecord> chunk = state_->ReadChunk(ref, snapshot.snapshot());
  if (absl::IsNotFound(chunk.status())) {
    return absl::DataLossError(StrCat("vector id ", vector_id, " names chunk ",
                                      ChunkId(ref.doc_id, ref.chunk_no), ", which does not exist"));
  }
  if (chunk.ok() && chunk->vector_id != vector_id) {
    return absl::DataLossError(StrCat("vector id ", vector_id, " names chunk ", chunk->chunk_id,
                                      ", which has vector id ", chunk->vector_id));
  }
  return chunk;
}

absl::StatusOr<int64_t> DocumentStore::ForEachChunk(
    const std::function<absl::Status(const ChunkRecord&)>& visit) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  const State& s = *state_;
  rocksdb::ManagedSnapshot snapshot(s.db.get());
  SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> counters_payload,
                        s.Read(kMeta, kCountersKey, snapshot.snapshot()));
  SILO_ASSIGN_OR_RETURN(CountersRecord counters, DecodeCounters(counters_payload));

  const std::string lower(1, kChunkPrefix);
  const std::string upper(1, kChunkPrefix + 1);
  const rocksdb::Slice upper_bound(upper);
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  options.iterate_upper_bound = &upper_bound;
  options.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(s.db->NewIterator(options, s.cfs[kChunks]));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() != kChunkKeySize) {
      return absl::DataLossError(
          StrCat("the chunks column family holds a malformed ", key.size(), "-byte chunk key"));
    }
    const ChunkRef ref{ReadBigEndian(key.substr(1, 8)),
                       static_cast<uint32_t>(ReadBigEndian(key.substr(9)))};
    SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> payload,
                          s.Unseal(kChunks, key, it->value().ToStringView()));
    SILO_ASSIGN_OR_RETURN(ChunkRecord chunk, DecodeChunk(payload, ref, s.embedding_dim));
    SILO_RETURN_IF_ERROR(visit(chunk));
  }
  SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "iterating over the chunks"));
  return counters.store_version;
}

absl::Status DocumentStore::PutKvShard(std::string_view chunk_id,
                                       std::string_view model_fingerprint,
                                       std::span<const uint8_t> shard) {
  SILO_ASSIGN_OR_RETURN(ChunkRef ref, ParseChunkId(chunk_id));
  if (shard.empty()) return absl::InvalidArgumentError("empty KV shard");
  SILO_RETURN_IF_ERROR(CheckSize("KV shard", shard.size(), kMaxKvShardBytes));
  const std::lock_guard<std::mutex> lock(state_->write_mutex);
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  State& s = *state_;
  if (model_fingerprint != s.model_fingerprint) {
    return absl::FailedPreconditionError(
        StrCat("KV shard of chunk ", chunk_id, " computed under model fingerprint '",
               model_fingerprint, "'; the store keeps shards of '", s.model_fingerprint, "'"));
  }
  // The chunk must exist; writes are serialized, so it cannot vanish before the batch lands.
  const std::string chunk_key = ChunkKey(ref.doc_id, ref.chunk_no);
  rocksdb::PinnableSlice ignored;
  const rocksdb::Status found =
      s.db->Get(rocksdb::ReadOptions(), s.cfs[kChunks], chunk_key, &ignored);
  if (found.IsNotFound()) return absl::NotFoundError(StrCat("no chunk ", chunk_id));
  SILO_RETURN_IF_ERROR(FromRocksDb(found, StrCat("reading chunk ", chunk_id)));

  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(
      s.Put(batch, kKv, KvKey(ref.doc_id, ref.chunk_no), EncodeKvShard(model_fingerprint, shard)));
  return s.Write(batch);
}

absl::StatusOr<std::vector<uint8_t>> DocumentStore::GetKvShard(
    std::string_view chunk_id, std::string_view model_fingerprint) const {
  SILO_RETURN_IF_ERROR(state_->CheckOpen());
  SILO_ASSIGN_OR_RETURN(ChunkRef ref, ParseChunkId(chunk_id));
  absl::StatusOr<std::vector<uint8_t>> payload =
      state_->Read(kKv, KvKey(ref.doc_id, ref.chunk_no), nullptr);
  if (absl::IsNotFound(payload.status())) {
    return absl::NotFoundError(StrCat("chunk ", chunk_id, " has no KV shard"));
  }
  if (!payload.ok()) return payload.status();
  Reader r(*payload);
  const std::string fingerprint = r.String();
  const size_t shard_offset = r.offset() + 4;  // after the shard's length
  r.BytesView();  // checked here, cut out of the payload below rather than copied
  SILO_RETURN_IF_ERROR(r.Finish(StrCat("KV shard of chunk ", chunk_id)));
  if (fingerprint != model_fingerprint) {
    return absl::FailedPreconditionError(StrCat("the KV shard of chunk ", chunk_id,
                                                " was computed under model fingerprint '",
                                                fingerprint, "', not '", model_fingerprint, "'"));
  }
  std::vector<uint8_t> shard = *std::move(payload);
  shard.erase(shard.begin(), shard.begin() + static_cast<std::ptrdiff_t>(shard_offset));
  return shard;
}

int64_t DocumentStore::store_version() const {
  const std::lock_guard<std::mutex> lock(state_->write_mutex);
  return state_->counters.store_version;
}

const std::string& DocumentStore::model_fingerprint() const { return state_->model_fingerprint; }
const std::string& DocumentStore::embedder_id() const { return state_->embedder_id; }
int32_t DocumentStore::embedding_dim() const { return state_->embedding_dim; }

}  // namespace silo::retrieval

// The institution's persistent store (DESIGN.md §4): documents, their chunks with embeddings,
// the chunks' KV shards and the store's metadata, in one RocksDB database sealed at rest with
// AES-256-GCM under keys derived from the node key (node_key.h).
//
// Column families: `docs` (document records and the source-path index), `chunks` (chunk records
// with their embedding, and the vector-id index), `kv` (KV shards, opaque bytes with the model
// fingerprint they were computed under) and `meta` (schema version, store id, model fingerprint,
// embedder id, embedding size; the store version and id counters). The record formats are
// described at the top of document_store.cc.
//
// Every value is sealed: encrypted and authenticated with its column family, key and the store's
// id as associated data. A value that was altered, truncated or moved to another key or store,
// or that is read under another node key, reads as DataLoss; so does a record that is
// well-sealed but malformed. Keys hold only numbers and a keyed hash of the source path:
// no document text, title or path is stored in the clear.
//
// Atomicity and durability: each mutation is ONE synced RocksDB WriteBatch (WAL fsynced before
// the call returns). PutDocument writes the document, all its chunks with their embeddings and
// vector-id entries, the KV shards given with them and the bumped counters together; after a
// crash at any point a document is entirely present (text, every chunk, embedding, index entry)
// or entirely absent, and a replacement is entirely old or entirely new. A KV shard added later
// (PutKvShard) is its own batch; a chunk without a shard is valid.
//
// Ids: the store assigns document ids (decimal numbers, never reused) and int64 vector ids
// (never reused: a stale FAISS index finds NotFound, not another chunk). A chunk id is
// "<doc_id>:<chunk_no>", chunk_no counted from 0. Replacing a document gives it a new doc id, so a
// chunk id always names the same text.
//
// Thread-safety: all methods may be called concurrently, except Close and the destructor.
// Writes are serialized inside the store; reads run in parallel. One process opens a store at a
// time (RocksDB's lock; a second Open is Unavailable).
#ifndef SILO_RETRIEVAL_DOCUMENT_STORE_H_
#define SILO_RETRIEVAL_DOCUMENT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::retrieval {

struct DocumentStoreOptions {
  // Identity of the decoder the KV shards belong to ("sha256:<hex>", model_fingerprint.h).
  // A new store records it; an existing store must have been made with the same one
  // (FailedPrecondition otherwise). Empty: take the stored one (a new store needs one).
  std::string model_fingerprint;
  // Identity of the embedder that made the chunk embeddings; recorded and checked the same way.
  std::string embedder_id;
  // Floats per embedding; recorded and checked the same way. 0: take the stored one.
  int32_t embedding_dim = 0;
  // When false, a missing store is NotFound instead of being created.
  bool create_if_missing = true;
};

// A document to write.
struct NewDocument {
  std::string source_path;   // where it came from; the document's stable key (1 to 4096 bytes)
  std::string content_hash;  // of the source bytes (opaque, e.g. "sha256:<hex>"), at most 256
  std::string title;         // at most 64 KiB
  std::string text;          // at most 256 MiB
};

// One chunk of a document to write.
struct NewChunk {
  int64_t begin_byte = 0;  // [begin_byte, end_byte) of the document's text
  int64_t end_byte = 0;
  int32_t n_tokens = 0;          // tokens of the chunk (>= 0)
  std::string title;             // at most 64 KiB
  std::string text;              // at most 16 MiB
  std::vector<float> embedding;  // [embedding_dim], finite
  // The chunk's KV shard (opaque bytes, at most 1 GiB) under the store's model fingerprint, or
  // empty for none (added later with PutKvShard).
  std::vector<uint8_t> kv_shard;
};

struct DocumentRecord {
  std::string doc_id;
  std::string source_path;
  std::string content_hash;
  std::string title;
  std::string text;
  int32_t n_chunks = 0;
  int64_t first_vector_id = 0;  // chunk i has vector id first_vector_id + i
  int64_t store_version = 0;    // the store version this document was written at
};

struct ChunkRecord {
  std::string chunk_id;  // "<doc_id>:<chunk_no>"
  std::string doc_id;
  int32_t chunk_no = 0;
  int64_t vector_id = 0;
  int64_t begin_byte = 0;
  int64_t end_byte = 0;
  int32_t n_tokens = 0;
  std::string source_path;  // the document's, kept with each chunk so a search hit needs no
                            // read of the whole document
  std::string title;
  std::string text;
  std::vector<float> embedding;  // [embedding_dim]
};

struct PutDocumentResult {
  std::string doc_id;
  std::vector<std::string> chunk_ids;  // [chunks.size()]
  int64_t first_vector_id = 0;         // chunk i has vector id first_vector_id + i
  int64_t store_version = 0;           // the store version after the write
  std::string replaced_doc_id;         // the previous document at this source path, or empty
};

class DocumentStore {
 public:
  // Opens (or creates) the store in the folder `path`, sealed under `node_key` (32 bytes; only
  // keys derived from it are kept). InvalidArgument when the key is not 32 bytes or the options
  // are out of range, or when a new store is to be created without model_fingerprint,
  // embedder_id and embedding_dim; NotFound when it does not exist and !create_if_missing;
  // DataLoss when the metadata cannot be authenticated (wrong node key, or corruption);
  // FailedPrecondition when the store was made for another model fingerprint, embedder or
  // embedding size, or by another schema version, or the folder holds another RocksDB database;
  // Unavailable when another process has it open or the disk fails.
  static absl::StatusOr<std::unique_ptr<DocumentStore>> Open(const std::string& path,
                                                             const crypto::SecretBytes& node_key,
                                                             const DocumentStoreOptions& options);

  DocumentStore(const DocumentStore&) = delete;
  DocumentStore& operator=(const DocumentStore&) = delete;
  // Closes the store if Close was not called.
  ~DocumentStore();

  // Closes the database; later calls are FailedPrecondition. Every completed write is already
  // durable. The status of RocksDB's close (Unavailable on a disk error).
  absl::Status Close();

  // Writes `document` with `chunks` in one batch, replacing any document at the same source
  // path (its chunks, index entries and KV shards go in the same batch) and bumping the store
  // version. InvalidArgument when a field is out of range, an embedding has the wrong size or a
  // non-finite value, or a chunk has end_byte < begin_byte; DataLoss when the replaced document
  // cannot be read; Unavailable or ResourceExhausted when the write fails (nothing was written).
  absl::StatusOr<PutDocumentResult> PutDocument(const NewDocument& document,
                                                std::span<const NewChunk> chunks);

  // Removes the document at `source_path` with its chunks, index entries and KV shards in one
  // batch and bumps the store version. NotFound when there is none; DataLoss when it cannot be
  // read; Unavailable when the write fails.
  absl::Status RemoveDocument(std::string_view source_path);

  // NotFound when there is no such document; InvalidArgument when `doc_id` is not a document
  // id; DataLoss when its record fails authentication or is malformed.
  absl::StatusOr<DocumentRecord> GetDocument(std::string_view doc_id) const;
  absl::StatusOr<DocumentRecord> GetDocumentBySourcePath(std::string_view source_path) const;

  // NotFound when there is no such chunk; InvalidArgument when `chunk_id` is not
  // "<doc_id>:<chunk_no>" or `vector_id` is negative; DataLoss as GetDocument.
  absl::StatusOr<ChunkRecord> GetChunk(std::string_view chunk_id) const;
  absl::StatusOr<ChunkRecord> GetChunkByVectorId(int64_t vector_id) const;

  // Calls `visit` once for every chunk, in (doc id, chunk no) order, as of one snapshot, and
  // returns the store version of that snapshot (what a FAISS index rebuilt from these chunks
  // corresponds to). Stops at the first error of `visit` and returns it; DataLoss when a record
  // fails authentication or is malformed.
  absl::StatusOr<int64_t> ForEachChunk(
      const std::function<absl::Status(const ChunkRecord&)>& visit) const;

  // Stores (or overwrites) the KV shard of `chunk_id`, computed under `model_fingerprint`, in
  // its own batch. FailedPrecondition when `model_fingerprint` is not the store's;
  // InvalidArgument when `shard` is empty or over 1 GiB or `chunk_id` is malformed; NotFound
  // when the chunk does not exist; Unavailable when the write fails.
  absl::Status PutKvShard(std::string_view chunk_id, std::string_view model_fingerprint,
                          std::span<const uint8_t> shard);

  // The KV shard of `chunk_id`, for a caller running `model_fingerprint`. FailedPrecondition
  // when the fingerprint is not the one the shard was computed under (never silent reuse);
  // NotFound when the chunk has no shard (yet); InvalidArgument and DataLoss as GetChunk.
  absl::StatusOr<std::vector<uint8_t>> GetKvShard(std::string_view chunk_id,
                                                  std::string_view model_fingerprint) const;

  // Bumped by every PutDocument and RemoveDocument (not by KV shards); starts at 0. A FAISS
  // index built at another version is stale.
  int64_t store_version() const;

  const std::string& model_fingerprint() const;
  const std::string& embedder_id() const;
  int32_t embedding_dim() const;

 private:
  struct State;  // the database, its column families, the derived keys and the counters

  explicit DocumentStore(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_DOCUMENT_STORE_H_

// What an institution or device holds and how it is used (DESIGN.md §4): its documents, cut into
// chunks, embedded, indexed and (optionally) prefilled into KV shards, all under one data folder:
//
//   <data_dir>/store/        the sealed RocksDB document store (document_store.h)
//   <data_dir>/index.faiss   the FAISS index of the chunk embeddings (vector_index.h), rebuilt
//                            from the store when it is missing, corrupt, of other options, or
//                            older than the store
//
// Ingest walks files and folders, skips files whose content (and the chunking options it was cut
// with) is unchanged, and writes each
// document with all its chunks and embeddings (and, with kv_shards eager, their KV shards) in one
// atomic store write: an interrupted ingest loses at most the document in flight, and rerunning
// it resumes where it stopped. Search embeds a question and returns the best chunks.
//
// Thread-safety: Search, SearchByEmbedding and KvShardOf may run concurrently with each other;
// Ingest must not run concurrently with anything.
#ifndef SILO_RETRIEVAL_KNOWLEDGE_BASE_H_
#define SILO_RETRIEVAL_KNOWLEDGE_BASE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "engine/kv_cache.h"
#include "engine/language_model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "retrieval/chunker.h"
#include "retrieval/document_store.h"
#include "retrieval/embedder.h"
#include "retrieval/vector_index.h"

namespace silo::retrieval {

// When a chunk's KV shard is computed: at ingest (eager), the first time the chunk is asked for
// (lazy: prefilling a large corpus on two cores takes long), or never (off).
enum class KvShardMode { kEager, kLazy, kOff };
// "eager", "lazy" or "off"; InvalidArgument otherwise.
absl::StatusOr<KvShardMode> ParseKvShardMode(std::string_view name);
std::string_view KvShardModeName(KvShardMode mode);

struct KnowledgeBaseOptions {
  std::string data_dir;
  std::string decoder_model;   // its tokenizer measures chunks; it computes the KV shards
  std::string embedder_model;  // folder of the sentence embedder
  ChunkerOptions chunking;
  IndexOptions index;
  KvShardMode kv_shards = KvShardMode::kLazy;
  int32_t threads = 0;  // 0: every core
};

struct IngestProgress {
  int64_t files_total = 0;
  int64_t files_done = 0;     // written, skipped or failed
  int64_t files_skipped = 0;  // unchanged since the last ingest
  int64_t files_failed = 0;
  int64_t chunks_written = 0;
  double elapsed_seconds = 0;
  std::string current_path;  // the file being read, or empty at the end
};

struct IngestReport {
  IngestProgress progress;
  // "<path>: <error>" for every file that could not be read or cut (the rest went on).
  std::vector<std::string> failures;
  double embed_seconds = 0;     // spent in the embedder
  double kv_shard_seconds = 0;  // spent prefilling KV shards (eager)
};

struct SearchHit {
  std::string chunk_id;
  int64_t vector_id = 0;  // the chunk's id in the index (DocumentStore::GetChunkByVectorId)
  float score = 0;        // cosine similarity with the question
  std::string source_path;
  std::string title;
  std::string text;
  int64_t begin_byte = 0;  // of the source file
  int64_t end_byte = 0;
  int32_t n_tokens = 0;
};

class KnowledgeBase {
 public:
  // Opens the models and the store (creating the data folder on first use) and loads or rebuilds
  // the index. InvalidArgument for bad options; the errors of the models' loaders,
  // DocumentStore::Open (FailedPrecondition when the store belongs to another decoder or
  // embedder) and VectorIndex.
  static absl::StatusOr<std::unique_ptr<KnowledgeBase>> Open(const KnowledgeBaseOptions& options,
                                                             const crypto::SecretBytes& node_key);

  // Ingests the files under `paths` (files, or folders walked recursively for the formats the
  // chunker reads; other files in folders are left out, a named file of another format fails).
  // A file that cannot be read or cut is reported in the result and the rest goes on; a store
  // or index error stops the ingest and is returned. `on_progress` is called after every file.
  absl::StatusOr<IngestReport> Ingest(
      std::span<const std::string> paths,
      const std::function<void(const IngestProgress&)>& on_progress = nullptr);

  // The question's unit embedding, [embedding_dim()]. InvalidArgument for an empty question.
  absl::StatusOr<std::vector<float>> EmbedQuestion(std::string_view question) const;

  // The k best chunks for `question` (or for an embedding of embedding_dim() unit floats), best
  // first. InvalidArgument for an empty question, a bad embedding or k outside [1, 1000].
  absl::StatusOr<std::vector<SearchHit>> Search(std::string_view question, int k) const;
  absl::StatusOr<std::vector<SearchHit>> SearchByEmbedding(std::span<const float> embedding,
                                                           int k) const;

  // The chunk's KV shard: the stored one, or with kv_shards lazy, computed now and stored.
  // NotFound for an unknown chunk, or when kv_shards is off and none is stored;
  // FailedPrecondition when a stored shard belongs to another model.
  absl::StatusOr<engine::KvShard> KvShardOf(std::string_view chunk_id);
  // The chunk's KV shard prefilled now, whatever is stored (FedRAG's kv_mode prefill), and not
  // stored. NotFound for an unknown chunk.
  absl::StatusOr<engine::KvShard> PrefillKvShard(std::string_view chunk_id);

  int32_t embedding_dim() const;
  // "sha256:<hex>" of the decoder (its tokenizer counts n_tokens) and of the embedder; peers
  // compare them before they compare scores or token counts.
  const std::string& decoder_fingerprint() const { return decoder_fingerprint_; }
  const std::string& embedder_fingerprint() const { return embedder_fingerprint_; }
  const DocumentStore& store() const { return *store_; }
  const VectorIndex& index() const { return *index_; }
  const engine::LanguageModel& decoder() const { return decoder_; }
  const KnowledgeBaseOptions& options() const { return options_; }

 private:
  KnowledgeBase(const KnowledgeBaseOptions& options, engine::LanguageModel decoder,
                std::string decoder_fingerprint);

  absl::Status LoadOrRebuildIndex();
  // Prefills the chunk alone at positions 0..n-1 and returns its encoded shard.
  absl::StatusOr<std::vector<uint8_t>> ComputeKvShard(std::string_view text);

  KnowledgeBaseOptions options_;
  engine::LanguageModel decoder_;
  std::string decoder_fingerprint_;
  std::string embedder_fingerprint_;
  std::unique_ptr<Embedder> embedder_;
  std::unique_ptr<DocumentStore> store_;
  std::unique_ptr<VectorIndex> index_;
  std::unique_ptr<Chunker> chunker_;
  engine::ThreadPool pool_;
  std::mutex transformer_mutex_;  // guards transformer_ (one forward pass at a time)
  engine::Transformer transformer_;
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_KNOWLEDGE_BASE_H_

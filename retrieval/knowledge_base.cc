#include "retrieval/knowledge_base.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <set>
#include <utility>

#include "common/logging.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/sha256.h"
#include "retrieval/internal/read_file.h"
#include "retrieval/kv_shard_codec.h"
#include "retrieval/model_fingerprint.h"

namespace silo::retrieval {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxSearchK = 1000;
constexpr int64_t kMaxFileBytes = int64_t{64} << 20;
// Embeddings are computed this many chunks at a time (bounds the embedder's scratch memory).
constexpr size_t kEmbedBatch = 32;
constexpr int64_t kRebuildBatch = 4096;

class Stopwatch {
 public:
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// The files an ingest of `paths` reads, sorted and without repeats. A folder contributes the
// files of a format the chunker reads; a file named directly must be of such a format.
absl::StatusOr<std::vector<std::string>> ListFiles(std::span<const std::string> paths) {
  std::set<std::string> files;
  for (const std::string& path : paths) {
    std::error_code error;
    const fs::path canonical = fs::weakly_canonical(fs::absolute(path, error), error);
    if (error || !fs::exists(canonical, error)) {
      return absl::NotFoundError(StrCat(path, ": no such file or folder"));
    }
    if (fs::is_directory(canonical, error)) {
      fs::recursive_directory_iterator it(canonical, fs::directory_options::skip_permission_denied,
                                          error);
      for (; !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
        if (it->is_regular_file(error) && DocumentFormatFromPath(it->path().string()).ok()) {
          files.insert(it->path().string());
        }
      }
      if (error) return absl::PermissionDeniedError(StrCat(path, ": ", error.message()));
    } else {
      SILO_RETURN_IF_ERROR(DocumentFormatFromPath(canonical.string()).status());
      files.insert(canonical.string());
    }
  }
  return std::vector<std::string>(files.begin(), files.end());
}

bool IsFileError(const absl::Status& status) {
  return absl::IsNotFound(status) || absl::IsPermissionDenied(status) ||
         absl::IsInvalidArgument(status) || absl::IsDataLoss(status);
}

}  // namespace

absl::StatusOr<KvShardMode> ParseKvShardMode(std::string_view name) {
  if (name == "eager") return KvShardMode::kEager;
  if (name == "lazy") return KvShardMode::kLazy;
  if (name == "off") return KvShardMode::kOff;
  return absl::InvalidArgumentError(
      StrCat("kv_shards must be eager, lazy or off, not \"", name, "\""));
}

std::string_view KvShardModeName(KvShardMode mode) {
  switch (mode) {
    case KvShardMode::kEager:
      return "eager";
    case KvShardMode::kLazy:
      return "lazy";
    case KvShardMode::kOff:
      return "off";
  }
  return "?";
}

KnowledgeBase::KnowledgeBase(const KnowledgeBaseOptions& options, engine::LanguageModel decoder,
                             std::string decoder_fingerprint)
    : options_(options),
      decoder_(std::move(decoder)),
      decoder_fingerprint_(std::move(decoder_fingerprint)),
      pool_(options.threads),
      transformer_(decoder_.model(), pool_) {}

absl::StatusOr<std::unique_ptr<KnowledgeBase>> KnowledgeBase::Open(
    const KnowledgeBaseOptions& options, const crypto::SecretBytes& node_key) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  if (options.threads < 0) {
    return absl::InvalidArgumentError(StrCat("threads must be >= 0, not ", options.threads));
  }
  SILO_RETURN_IF_ERROR(ValidateChunkerOptions(options.chunking));
  SILO_RETURN_IF_ERROR(options.index.Validate());
  SILO_ASSIGN_OR_RETURN(engine::LanguageModel decoder,
                        engine::LanguageModel::Open(options.decoder_model));
  SILO_ASSIGN_OR_RETURN(std::string decoder_fingerprint, ModelFingerprint(options.decoder_model));
  std::unique_ptr<KnowledgeBase> base(
      new KnowledgeBase(options, std::move(decoder), std::move(decoder_fingerprint)));
  SILO_ASSIGN_OR_RETURN(base->embedder_,
                        Embedder::Open(options.embedder_model, {.n_threads = options.threads}));
  SILO_ASSIGN_OR_RETURN(base->embedder_fingerprint_, ModelFingerprint(options.embedder_model));
  SILO_ASSIGN_OR_RETURN(Chunker chunker,
                        Chunker::Create(base->decoder_.tokenizer(), options.chunking));
  base->chunker_ = std::make_unique<Chunker>(chunker);

  std::error_code error;
  fs::create_directories(options.data_dir, error);
  if (error) {
    return absl::PermissionDeniedError(
        StrCat(options.data_dir, ": cannot create the data folder: ", error.message()));
  }
  SILO_ASSIGN_OR_RETURN(
      base->store_, DocumentStore::Open((fs::path(options.data_dir) / "store").string(), node_key,
                                        {.model_fingerprint = base->decoder_fingerprint_,
                                         .embedder_id = base->embedder_fingerprint_,
                                         .embedding_dim = base->embedder_->dim(),
                                         .create_if_missing = true}));
  SILO_RETURN_IF_ERROR(base->LoadOrRebuildIndex());
  return base;
}

int32_t KnowledgeBase::embedding_dim() const { return embedder_->dim(); }

absl::Status KnowledgeBase::LoadOrRebuildIndex() {
  const std::string path = (fs::path(options_.data_dir) / "index.faiss").string();
  const std::string store_version = StrCat(store_->store_version());
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded =
      VectorIndex::Load(path, embedder_->dim(), options_.index);
  if (loaded.ok() && (*loaded)->store_version() == store_version) {
    index_ = *std::move(loaded);
    return absl::OkStatus();
  }
  SILO_LOG(Info) << "rebuilding the index " << path << " from the store ("
                 << (loaded.ok() ? StrCat("it is of store version ", (*loaded)->store_version(),
                                          ", the store is at ", store_version)
                                 : StrCat(loaded.status().message()))
                 << ")";
  SILO_ASSIGN_OR_RETURN(index_, VectorIndex::Create(embedder_->dim(), options_.index));
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  const auto flush = [&]() -> absl::Status {
    SILO_RETURN_IF_ERROR(index_->Add(ids, vectors));
    ids.clear();
    vectors.clear();
    return absl::OkStatus();
  };
  SILO_ASSIGN_OR_RETURN(const int64_t version, store_->ForEachChunk([&](const ChunkRecord& chunk) {
    ids.push_back(chunk.vector_id);
    vectors.insert(vectors.end(), chunk.embedding.begin(), chunk.embedding.end());
    return static_cast<int64_t>(ids.size()) >= kRebuildBatch ? flush() : absl::OkStatus();
  }));
  SILO_RETURN_IF_ERROR(flush());
  return index_->Save(path, StrCat(version));
}

absl::StatusOr<std::vector<uint8_t>> KnowledgeBase::ComputeKvShard(std::string_view text) {
  const std::vector<int32_t> tokens = decoder_.tokenizer().Encode(text, /*parse_special=*/false);
  if (tokens.empty()) return absl::InvalidArgumentError("KV shard of an empty chunk");
  std::lock_guard lock(transformer_mutex_);
  SILO_ASSIGN_OR_RETURN(const engine::KvShard shard, engine::PrefillKvShard(transformer_, tokens));
  return EncodeKvShard(shard);
}

absl::StatusOr<IngestReport> KnowledgeBase::Ingest(
    std::span<const std::string> paths,
    const std::function<void(const IngestProgress&)>& on_progress) {
  SILO_ASSIGN_OR_RETURN(const std::vector<std::string> files, ListFiles(paths));
  IngestReport report;
  IngestProgress& progress = report.progress;
  progress.files_total = static_cast<int64_t>(files.size());
  const Stopwatch clock;
  const auto step = [&] {
    ++progress.files_done;
    progress.elapsed_seconds = clock.Seconds();
    if (on_progress) on_progress(progress);
  };
  const auto fail = [&](const std::string& file, const absl::Status& status) {
    ++progress.files_failed;
    report.failures.push_back(StrCat(file, ": ", status.message()));
  };
  const std::string index_path = (fs::path(options_.data_dir) / "index.faiss").string();

  for (const std::string& file : files) {
    progress.current_path = file;
    absl::StatusOr<std::string> bytes = internal::ReadSmallFile(file, kMaxFileBytes);
    if (!bytes.ok()) {
      fail(file, bytes.status());
      step();
      continue;
    }
    SILO_ASSIGN_OR_RETURN(const crypto::Sha256Digest digest, crypto::Sha256Of(*bytes));
    // The chunking options are part of the hash: changing them re-cuts every file.
    const std::string content_hash =
        StrCat("sha256:", crypto::DigestHex(digest), ";chunks ", options_.chunking.max_tokens, "/",
               options_.chunking.overlap_tokens);
    absl::StatusOr<DocumentRecord> previous = store_->GetDocumentBySourcePath(file);
    if (!previous.ok() && !absl::IsNotFound(previous.status())) return previous.status();
    if (previous.ok() && previous->content_hash == content_hash) {
      ++progress.files_skipped;
      step();
      continue;
    }
    absl::StatusOr<std::vector<Chunk>> chunks = chunker_->ChunkDocument(file, file, *bytes);
    if (!chunks.ok()) {
      if (!IsFileError(chunks.status())) return chunks.status();
      fail(file, chunks.status());
      step();
      continue;
    }

    std::vector<NewChunk> new_chunks(chunks->size());
    const Stopwatch embed_clock;
    for (size_t begin = 0; begin < chunks->size(); begin += kEmbedBatch) {
      const size_t end = std::min(chunks->size(), begin + kEmbedBatch);
      std::vector<std::string> texts;
      for (size_t i = begin; i < end; ++i) texts.push_back((*chunks)[i].text);
      SILO_ASSIGN_OR_RETURN(const std::vector<float> embeddings, embedder_->Embed(texts));
      const size_t dim = static_cast<size_t>(embedder_->dim());
      for (size_t i = begin; i < end; ++i) {
        new_chunks[i].embedding.assign(embeddings.begin() + (i - begin) * dim,
                                       embeddings.begin() + (i - begin + 1) * dim);
      }
    }
    report.embed_seconds += embed_clock.Seconds();
    const Stopwatch kv_clock;
    for (size_t i = 0; i < chunks->size(); ++i) {
      const Chunk& chunk = (*chunks)[i];
      NewChunk& out = new_chunks[i];
      out.begin_byte = chunk.begin;
      out.end_byte = chunk.end;
      out.n_tokens = chunk.n_tokens;
      out.title = chunk.title;
      out.text = chunk.text;
      if (options_.kv_shards == KvShardMode::kEager) {
        SILO_ASSIGN_OR_RETURN(out.kv_shard, ComputeKvShard(chunk.text));
      }
    }
    report.kv_shard_seconds += kv_clock.Seconds();

    const std::string title = chunks->empty() || chunks->front().title.empty()
                                  ? fs::path(file).filename().string()
                                  : chunks->front().title;
    SILO_ASSIGN_OR_RETURN(const PutDocumentResult written,
                          store_->PutDocument({.source_path = file,
                                               .content_hash = content_hash,
                                               .title = title,
                                               .text = *std::move(bytes)},
                                              new_chunks));
    // The index follows the store; if this process dies before the index is saved, the next
    // Open finds it older than the store and rebuilds it.
    if (previous.ok()) {
      std::vector<int64_t> old_ids(previous->n_chunks);
      std::iota(old_ids.begin(), old_ids.end(), previous->first_vector_id);
      SILO_RETURN_IF_ERROR(index_->Remove(old_ids).status());
    }
    std::vector<int64_t> ids(new_chunks.size());
    std::iota(ids.begin(), ids.end(), written.first_vector_id);
    std::vector<float> vectors;
    for (const NewChunk& chunk : new_chunks) {
      vectors.insert(vectors.end(), chunk.embedding.begin(), chunk.embedding.end());
    }
    if (!ids.empty()) SILO_RETURN_IF_ERROR(index_->Add(ids, vectors));
    progress.chunks_written += static_cast<int64_t>(new_chunks.size());
    step();
  }
  progress.current_path.clear();
  SILO_RETURN_IF_ERROR(index_->Save(index_path, StrCat(store_->store_version())));
  return report;
}

absl::StatusOr<std::vector<float>> KnowledgeBase::EmbedQuestion(std::string_view question) const {
  if (question.empty()) return absl::InvalidArgumentError("the question is empty");
  const std::string text(question);
  return embedder_->Embed({&text, 1});
}

absl::StatusOr<std::vector<SearchHit>> KnowledgeBase::Search(std::string_view question,
                                                             int k) const {
  SILO_ASSIGN_OR_RETURN(const std::vector<float> embedding, EmbedQuestion(question));
  return SearchByEmbedding(embedding, k);
}

absl::StatusOr<std::vector<SearchHit>> KnowledgeBase::SearchByEmbedding(
    std::span<const float> embedding, int k) const {
  if (k < 1 || k > kMaxSearchK) {
    return absl::InvalidArgumentError(StrCat("k must be in [1, ", kMaxSearchK, "], not ", k));
  }
  if (static_cast<int64_t>(embedding.size()) != embedder_->dim()) {
    return absl::InvalidArgumentError(
        StrCat("an embedding has ", embedder_->dim(), " values, not ", embedding.size()));
  }
  SILO_ASSIGN_OR_RETURN(const std::vector<std::vector<Neighbor>> results,
                        index_->Search(embedding, k));
  std::vector<SearchHit> hits;
  for (const Neighbor& neighbor : results.front()) {
    SILO_ASSIGN_OR_RETURN(ChunkRecord chunk, store_->GetChunkByVectorId(neighbor.id));
    hits.push_back({.chunk_id = std::move(chunk.chunk_id),
                    .vector_id = chunk.vector_id,
                    .score = neighbor.score,
                    .source_path = std::move(chunk.source_path),
                    .title = std::move(chunk.title),
                    .text = std::move(chunk.text),
                    .begin_byte = chunk.begin_byte,
                    .end_byte = chunk.end_byte,
                    .n_tokens = chunk.n_tokens});
  }
  return hits;
}

absl::StatusOr<engine::KvShard> KnowledgeBase::KvShardOf(std::string_view chunk_id) {
  absl::StatusOr<std::vector<uint8_t>> bytes = store_->GetKvShard(chunk_id, decoder_fingerprint_);
  if (absl::IsNotFound(bytes.status()) && options_.kv_shards == KvShardMode::kLazy) {
    SILO_ASSIGN_OR_RETURN(const ChunkRecord chunk, store_->GetChunk(chunk_id));
    SILO_ASSIGN_OR_RETURN(bytes, ComputeKvShard(chunk.text));
    SILO_RETURN_IF_ERROR(store_->PutKvShard(chunk_id, decoder_fingerprint_, *bytes));
  }
  if (!bytes.ok()) return bytes.status();
  return DecodeKvShard(*bytes, decoder_.model().config());
}

absl::StatusOr<engine::KvShard> KnowledgeBase::PrefillKvShard(std::string_view chunk_id) {
  SILO_ASSIGN_OR_RETURN(const ChunkRecord chunk, store_->GetChunk(chunk_id));
  SILO_ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, ComputeKvShard(chunk.text));
  return DecodeKvShard(bytes, decoder_.model().config());
}

}  // namespace silo::retrieval

// The document store: round trips of documents, chunks and KV shards, reopening, replace and
// remove, iteration, the checks of Open (node key, fingerprints), sealing at rest (tampered,
// truncated or moved values read as DataLoss; no plaintext on disk), and whole documents after a
// writer is SIGKILLed mid-ingest.
#include "retrieval/document_store.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

extern char** environ;

namespace silo::retrieval {
namespace {

using ::silo::testing::IsOkAndHolds;
using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int32_t kDim = 4;
constexpr char kFingerprint[] =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
constexpr char kOtherFingerprint[] =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
constexpr char kEmbedder[] = "test-embedder";

crypto::SecretBytes Key(uint8_t seed) {
  std::vector<uint8_t> bytes(32);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(seed + 7 * i);
  return crypto::SecretBytes::FromBytes(bytes);
}

DocumentStoreOptions Options() {
  DocumentStoreOptions options;
  options.model_fingerprint = kFingerprint;
  options.embedder_id = kEmbedder;
  options.embedding_dim = kDim;
  return options;
}

struct TestDocument {
  NewDocument document;
  std::vector<NewChunk> chunks;
};

std::vector<uint8_t> Shard(int seed, int chunk_no) {
  std::vector<uint8_t> shard(48);
  for (size_t i = 0; i < shard.size(); ++i) {
    shard[i] = static_cast<uint8_t>(seed * 31 + chunk_no * 7 + static_cast<int>(i));
  }
  return shard;
}

// A document at `path` whose text and embeddings depend on `seed`, cut into `n_chunks` chunks;
// with `shards`, every chunk carries a KV shard.
TestDocument MakeDocument(const std::string& path, int seed, int n_chunks, bool shards = false) {
  TestDocument out;
  out.document.source_path = path;
  out.document.content_hash = absl::StrCat("sha256:content-", seed);
  out.document.title = absl::StrCat("title ", seed);
  for (int i = 0; i < n_chunks; ++i) {
    absl::StrAppend(&out.document.text, "Sentence ", i, " of document ", seed, ". ");
  }
  const int64_t size = static_cast<int64_t>(out.document.text.size());
  for (int i = 0; i < n_chunks; ++i) {
    NewChunk chunk;
    chunk.begin_byte = size * i / n_chunks;
    chunk.end_byte = size * (i + 1) / n_chunks;
    chunk.n_tokens = 10 + i;
    chunk.title = out.document.title;
    chunk.text = out.document.text.substr(chunk.begin_byte, chunk.end_byte - chunk.begin_byte);
    for (int d = 0; d < kDim; ++d) chunk.embedding.push_back(seed + 0.25f * i + 0.5f * d);
    if (shards) chunk.kv_shard = Shard(seed, i);
    out.chunks.push_back(std::move(chunk));
  }
  return out;
}

absl::StatusOr<PutDocumentResult> Put(DocumentStore& store, const TestDocument& document) {
  return store.PutDocument(document.document, document.chunks);
}

std::string StorePath(const TempDir& dir) { return (dir.path() / "store").string(); }

absl::StatusOr<std::unique_ptr<DocumentStore>> OpenStore(
    const std::string& path, uint8_t key_seed = 1,
    const DocumentStoreOptions& options = Options()) {
  return DocumentStore::Open(path, Key(key_seed), options);
}

void ExpectChunkEquals(const ChunkRecord& chunk, const NewChunk& want) {
  EXPECT_EQ(chunk.begin_byte, want.begin_byte);
  EXPECT_EQ(chunk.end_byte, want.end_byte);
  EXPECT_EQ(chunk.n_tokens, want.n_tokens);
  EXPECT_EQ(chunk.title, want.title);
  EXPECT_EQ(chunk.text, want.text);
  EXPECT_THAT(chunk.embedding, ElementsAreArray(want.embedding));
}

// Every chunk is listed once, resolves through its vector id, and belongs to a document whose
// chunk count it matches; every document reachable by `paths` has all its chunks.
void ExpectConsistent(const DocumentStore& store, const std::vector<std::string>& paths) {
  std::map<std::string, int> chunks_per_doc;
  std::set<int64_t> vector_ids;
  std::set<std::string> chunk_ids;
  ASSERT_OK_AND_ASSIGN(
      int64_t version, store.ForEachChunk([&](const ChunkRecord& chunk) -> absl::Status {
        ++chunks_per_doc[chunk.doc_id];
        EXPECT_TRUE(vector_ids.insert(chunk.vector_id).second) << chunk.vector_id;
        EXPECT_TRUE(chunk_ids.insert(chunk.chunk_id).second) << chunk.chunk_id;
        absl::StatusOr<ChunkRecord> by_vector = store.GetChunkByVectorId(chunk.vector_id);
        EXPECT_OK(by_vector);
        if (by_vector.ok()) {
          EXPECT_EQ(by_vector->chunk_id, chunk.chunk_id);
        }
        return absl::OkStatus();
      }));
  EXPECT_EQ(version, store.store_version());
  size_t reachable_chunks = 0;
  for (const std::string& path : paths) {
    absl::StatusOr<DocumentRecord> document = store.GetDocumentBySourcePath(path);
    if (absl::IsNotFound(document.status())) continue;
    ASSERT_OK(document);
    reachable_chunks += document->n_chunks;
    EXPECT_EQ(chunks_per_doc[document->doc_id], document->n_chunks) << path;
  }
  EXPECT_EQ(chunk_ids.size(), reachable_chunks) << "chunks of no document";
}

// Opens the database of a closed store with plain RocksDB and runs `edit` with the handle of each
// column family by name.
void EditRaw(
    const std::string& path,
    const std::function<void(rocksdb::DB&, std::map<std::string, rocksdb::ColumnFamilyHandle*>&)>&
        edit) {
  rocksdb::DBOptions options;
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(options, path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(names.size());
  for (const std::string& name : names)
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, path, descriptors, &handles, &db).ok());
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name;
  for (size_t i = 0; i < names.size(); ++i) by_name[names[i]] = handles[i];
  edit(*db, by_name);
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    EXPECT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  EXPECT_TRUE(db->Close().ok());
  delete db;
}

// Keys as document_store.cc lays them out.
std::string BigEndian(uint64_t value, int n_bytes) {
  std::string out;
  for (int i = n_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(value >> (8 * i)));
  return out;
}
std::string RawDocKey(uint64_t doc_id) { return "d" + BigEndian(doc_id, 8); }
std::string RawChunkKey(uint64_t doc_id, uint32_t chunk_no) {
  return "c" + BigEndian(doc_id, 8) + BigEndian(chunk_no, 4);
}
std::string RawKvKey(uint64_t doc_id, uint32_t chunk_no) {
  return BigEndian(doc_id, 8) + BigEndian(chunk_no, 4);
}

std::string GetRaw(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, const std::string& key) {
  std::string value;
  EXPECT_TRUE(db.Get(rocksdb::ReadOptions(), cf, key, &value).ok()) << "raw key missing";
  return value;
}
void PutRaw(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, const std::string& key,
            const std::string& value) {
  EXPECT_TRUE(db.Put(rocksdb::WriteOptions(), cf, key, value).ok());
}

TEST(DocumentStoreTest, RoundTripsDocumentsChunksAndShards) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  EXPECT_EQ(store->store_version(), 0);
  EXPECT_EQ(store->model_fingerprint(), kFingerprint);
  EXPECT_EQ(store->embedder_id(), kEmbedder);
  EXPECT_EQ(store->embedding_dim(), kDim);

  TestDocument a = MakeDocument("/corpus/a.txt", 1, 3);
  a.chunks[0].kv_shard = Shard(1, 0);
  ASSERT_OK_AND_ASSIGN(PutDocumentResult put, Put(*store, a));
  EXPECT_EQ(put.doc_id, "1");
  EXPECT_THAT(put.chunk_ids, ElementsAre("1:0", "1:1", "1:2"));
  EXPECT_EQ(put.first_vector_id, 0);
  EXPECT_EQ(put.store_version, 1);
  EXPECT_EQ(put.replaced_doc_id, "");
  EXPECT_EQ(store->store_version(), 1);

  ASSERT_OK_AND_ASSIGN(DocumentRecord document, store->GetDocument("1"));
  EXPECT_EQ(document.doc_id, "1");
  EXPECT_EQ(document.source_path, a.document.source_path);
  EXPECT_EQ(document.content_hash, a.document.content_hash);
  EXPECT_EQ(document.title, a.document.title);
  EXPECT_EQ(document.text, a.document.text);
  EXPECT_EQ(document.n_chunks, 3);
  EXPECT_EQ(document.first_vector_id, 0);
  EXPECT_EQ(document.store_version, 1);
  ASSERT_OK_AND_ASSIGN(DocumentRecord by_path, store->GetDocumentBySourcePath("/corpus/a.txt"));
  EXPECT_EQ(by_path.doc_id, "1");
  EXPECT_EQ(by_path.text, a.document.text);

  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(ChunkRecord chunk, store->GetChunk(put.chunk_ids[i]));
    EXPECT_EQ(chunk.chunk_id, put.chunk_ids[i]);
    EXPECT_EQ(chunk.doc_id, "1");
    EXPECT_EQ(chunk.chunk_no, i);
    EXPECT_EQ(chunk.vector_id, i);
    ExpectChunkEquals(chunk, a.chunks[i]);
    ASSERT_OK_AND_ASSIGN(ChunkRecord by_vector, store->GetChunkByVectorId(i));
    EXPECT_EQ(by_vector.chunk_id, put.chunk_ids[i]);
    ExpectChunkEquals(by_vector, a.chunks[i]);
  }
  EXPECT_THAT(store->GetKvShard("1:0", kFingerprint), IsOkAndHolds(ElementsAreArray(Shard(1, 0))));
  EXPECT_THAT(store->GetKvShard("1:1", kFingerprint),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no KV shard")));

  // A second document continues the ids.
  ASSERT_OK_AND_ASSIGN(PutDocumentResult put_b, Put(*store, MakeDocument("/corpus/b.txt", 2, 2)));
  EXPECT_EQ(put_b.doc_id, "2");
  EXPECT_EQ(put_b.first_vector_id, 3);
  EXPECT_EQ(put_b.store_version, 2);

  EXPECT_THAT(store->GetDocument("3"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->GetDocumentBySourcePath("/corpus/c.txt"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->GetChunk("1:3"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->GetChunkByVectorId(5), StatusIs(absl::StatusCode::kNotFound));
}

TEST(DocumentStoreTest, DocumentWithoutChunksAndEmptyText) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  NewDocument empty;
  empty.source_path = "/corpus/empty.txt";
  ASSERT_OK_AND_ASSIGN(PutDocumentResult put, store->PutDocument(empty, {}));
  EXPECT_TRUE(put.chunk_ids.empty());
  ASSERT_OK_AND_ASSIGN(DocumentRecord document, store->GetDocumentBySourcePath(empty.source_path));
  EXPECT_EQ(document.n_chunks, 0);
  EXPECT_EQ(document.text, "");
}

TEST(DocumentStoreTest, ReopenKeepsEverythingAndContinuesIds) {
  TempDir dir;
  const std::string path = StorePath(dir);
  const TestDocument a = MakeDocument("/a", 1, 2, /*shards=*/true);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
    ASSERT_OK(Put(*store, a));
    ASSERT_OK(store->Close());
    EXPECT_THAT(store->GetDocument("1"), StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  {
    // Empty options take what the store holds.
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store,
                         OpenStore(path, 1, DocumentStoreOptions()));
    EXPECT_EQ(store->model_fingerprint(), kFingerprint);
    EXPECT_EQ(store->embedder_id(), kEmbedder);
    EXPECT_EQ(store->embedding_dim(), kDim);
    EXPECT_EQ(store->store_version(), 1);
    ASSERT_OK_AND_ASSIGN(DocumentRecord document, store->GetDocumentBySourcePath("/a"));
    EXPECT_EQ(document.text, a.document.text);
    ASSERT_OK_AND_ASSIGN(ChunkRecord chunk, store->GetChunk("1:1"));
    ExpectChunkEquals(chunk, a.chunks[1]);
    EXPECT_THAT(store->GetKvShard("1:1", kFingerprint),
                IsOkAndHolds(ElementsAreArray(Shard(1, 1))));
    ASSERT_OK_AND_ASSIGN(PutDocumentResult put, Put(*store, MakeDocument("/b", 2, 1)));
    EXPECT_EQ(put.doc_id, "2");
    EXPECT_EQ(put.first_vector_id, 2);
    EXPECT_EQ(put.store_version, 2);
  }  // closed by the destructor
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
  EXPECT_EQ(store->store_version(), 2);
  EXPECT_OK(store->GetChunk("2:0"));
}

TEST(DocumentStoreTest, ReplaceSwapsEverythingOfTheDocument) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  ASSERT_OK(Put(*store, MakeDocument("/other", 9, 2)));
  ASSERT_OK_AND_ASSIGN(PutDocumentResult old, Put(*store, MakeDocument("/a", 1, 3, true)));
  const TestDocument replacement = MakeDocument("/a", 2, 2);
  ASSERT_OK_AND_ASSIGN(PutDocumentResult put, Put(*store, replacement));
  EXPECT_EQ(put.replaced_doc_id, old.doc_id);
  EXPECT_NE(put.doc_id, old.doc_id);
  EXPECT_EQ(put.first_vector_id, old.first_vector_id + 3);  // vector ids are never reused
  EXPECT_EQ(store->store_version(), 3);

  EXPECT_THAT(store->GetDocument(old.doc_id), StatusIs(absl::StatusCode::kNotFound));
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(store->GetChunk(old.chunk_ids[i]), StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(store->GetChunkByVectorId(old.first_vector_id + i),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(store->GetKvShard(old.chunk_ids[i], kFingerprint),
                StatusIs(absl::StatusCode::kNotFound));
  }
  ASSERT_OK_AND_ASSIGN(DocumentRecord document, store->GetDocumentBySourcePath("/a"));
  EXPECT_EQ(document.doc_id, put.doc_id);
  EXPECT_EQ(document.text, replacement.document.text);
  EXPECT_EQ(document.n_chunks, 2);
  ASSERT_OK_AND_ASSIGN(ChunkRecord chunk, store->GetChunkByVectorId(put.first_vector_id + 1));
  ExpectChunkEquals(chunk, replacement.chunks[1]);
  EXPECT_OK(store->GetDocumentBySourcePath("/other"));
  ExpectConsistent(*store, {"/a", "/other"});
}

TEST(DocumentStoreTest, RemoveDeletesEverythingOfTheDocumentOnly) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  ASSERT_OK_AND_ASSIGN(PutDocumentResult a, Put(*store, MakeDocument("/a", 1, 3, true)));
  ASSERT_OK_AND_ASSIGN(PutDocumentResult b, Put(*store, MakeDocument("/b", 2, 2, true)));
  ASSERT_OK(store->RemoveDocument("/a"));
  EXPECT_EQ(store->store_version(), 3);
  EXPECT_THAT(store->GetDocumentBySourcePath("/a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->GetDocument(a.doc_id), StatusIs(absl::StatusCode::kNotFound));
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(store->GetChunk(a.chunk_ids[i]), StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(store->GetChunkByVectorId(a.first_vector_id + i),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(store->GetKvShard(a.chunk_ids[i], kFingerprint),
                StatusIs(absl::StatusCode::kNotFound));
  }
  EXPECT_THAT(store->RemoveDocument("/a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(store->store_version(), 3);
  EXPECT_OK(store->GetKvShard(b.chunk_ids[1], kFingerprint));
  EXPECT_OK(store->GetDocumentBySourcePath("/b"));
  ExpectConsistent(*store, {"/a", "/b"});

  // The path can be used again.
  ASSERT_OK_AND_ASSIGN(PutDocumentResult again, Put(*store, MakeDocument("/a", 3, 1)));
  EXPECT_EQ(again.replaced_doc_id, "");
}

TEST(DocumentStoreTest, ForEachChunkListsEveryChunkExactlyOnce) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  std::vector<std::string> paths;
  for (int d = 0; d < 12; ++d) {
    paths.push_back(absl::StrCat("/doc", d));
    ASSERT_OK(Put(*store, MakeDocument(paths.back(), d, d % 4 + 1)));  // 1..4 chunks
  }
  ASSERT_OK(Put(*store, MakeDocument("/doc3", 100, 2)));  // replaces 4 chunks with 2
  ASSERT_OK(store->RemoveDocument("/doc5"));
  std::multiset<std::string> want;
  for (const std::string& path : paths) {
    absl::StatusOr<DocumentRecord> document = store->GetDocumentBySourcePath(path);
    if (!document.ok()) continue;
    for (int i = 0; i < document->n_chunks; ++i)
      want.insert(absl::StrCat(document->doc_id, ":", i));
  }
  EXPECT_EQ(want.size(), 30u - 4 + 2 - 2);

  std::multiset<std::string> seen;
  std::vector<int64_t> vector_ids;
  ASSERT_OK_AND_ASSIGN(int64_t version, store->ForEachChunk([&](const ChunkRecord& chunk) {
    seen.insert(chunk.chunk_id);
    vector_ids.push_back(chunk.vector_id);
    EXPECT_EQ(chunk.embedding.size(), static_cast<size_t>(kDim));
    return absl::OkStatus();
  }));
  EXPECT_EQ(seen, want);
  EXPECT_EQ(std::set<int64_t>(vector_ids.begin(), vector_ids.end()).size(), vector_ids.size());
  EXPECT_EQ(version, 14);
  ExpectConsistent(*store, paths);

  // The visitor's error stops the iteration and comes back unchanged.
  int visited = 0;
  EXPECT_THAT(store->ForEachChunk([&](const ChunkRecord&) {
    return ++visited == 3 ? absl::CancelledError("enough") : absl::OkStatus();
  }),
              StatusIs(absl::StatusCode::kCancelled, "enough"));
  EXPECT_EQ(visited, 3);
}

TEST(DocumentStoreTest, KvShardsAreLazyAndBoundToTheFingerprint) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  ASSERT_OK(Put(*store, MakeDocument("/a", 1, 2)));
  const int64_t version = store->store_version();
  EXPECT_THAT(store->GetKvShard("1:0", kFingerprint), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(store->PutKvShard("1:0", kFingerprint, Shard(5, 0)));
  EXPECT_THAT(store->GetKvShard("1:0", kFingerprint), IsOkAndHolds(ElementsAreArray(Shard(5, 0))));
  EXPECT_EQ(store->store_version(), version);  // shards do not make the index stale

  ASSERT_OK(store->PutKvShard("1:0", kFingerprint, Shard(6, 0)));  // overwrite
  EXPECT_THAT(store->GetKvShard("1:0", kFingerprint), IsOkAndHolds(ElementsAreArray(Shard(6, 0))));

  EXPECT_THAT(store->GetKvShard("1:0", kOtherFingerprint),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(kFingerprint)));
  EXPECT_THAT(store->PutKvShard("1:1", kOtherFingerprint, Shard(5, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store->GetKvShard("1:1", kFingerprint), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->PutKvShard("1:2", kFingerprint, Shard(5, 2)),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->PutKvShard("1:1", kFingerprint, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->PutKvShard("1-1", kFingerprint, Shard(5, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DocumentStoreTest, RejectsBadInput) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(StorePath(dir)));
  TestDocument good = MakeDocument("/a", 1, 2);

  TestDocument bad = good;
  bad.chunks[1].embedding.push_back(1.0f);
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunk 1")));
  bad = good;
  bad.chunks[0].embedding[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = good;
  bad.chunks[0].end_byte = static_cast<int64_t>(bad.document.text.size()) + 1;
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = good;
  bad.chunks[0].begin_byte = bad.chunks[0].end_byte + 1;
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = good;
  bad.chunks[0].n_tokens = -1;
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = good;
  bad.document.source_path = "";
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = good;
  bad.document.source_path = std::string(5000, 'p');
  EXPECT_THAT(Put(*store, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(store->store_version(), 0);  // nothing was written
  EXPECT_THAT(store->GetDocumentBySourcePath("/a"), StatusIs(absl::StatusCode::kNotFound));

  ASSERT_OK(Put(*store, good));
  for (const char* id : {"", "x", "1", "01:0", "1:01", "1:-1", "0:0", ":", "1:", ":0", "1:0:0",
                         "+1:0", "99999999999999999999:0", "1:99999999"}) {
    EXPECT_THAT(store->GetChunk(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
  }
  for (const char* id : {"", "0", "01", "-1", "1a", "9223372036854775808"}) {
    EXPECT_THAT(store->GetDocument(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
  }
  EXPECT_THAT(store->GetChunkByVectorId(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(store->GetChunk("1:1"));
}

TEST(DocumentStoreTest, OpenChecksOptionsAndFingerprint) {
  TempDir dir;
  const std::string path = StorePath(dir);
  EXPECT_THAT(DocumentStore::Open(path, crypto::SecretBytes::FromBytes(std::vector<uint8_t>(16)),
                                  Options()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(OpenStore(path, 1, DocumentStoreOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model fingerprint")));
  DocumentStoreOptions no_create = Options();
  no_create.create_if_missing = false;
  EXPECT_THAT(OpenStore(path, 1, no_create), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(std::filesystem::exists(path));

  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
    ASSERT_OK(Put(*store, MakeDocument("/a", 1, 1)));
    // One process holds the store at a time.
    EXPECT_THAT(OpenStore(path), StatusIs(absl::StatusCode::kUnavailable));
  }
  DocumentStoreOptions other = Options();
  other.model_fingerprint = kOtherFingerprint;
  EXPECT_THAT(OpenStore(path, 1, other),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(kFingerprint), HasSubstr(kOtherFingerprint))));
  other = Options();
  other.embedder_id = "another-embedder";
  EXPECT_THAT(OpenStore(path, 1, other),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("embedder")));
  other = Options();
  other.embedding_dim = kDim + 1;
  EXPECT_THAT(OpenStore(path, 1, other), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_OK(OpenStore(path, 1, no_create));
}

TEST(DocumentStoreTest, WrongNodeKeyIsDataLoss) {
  TempDir dir;
  const std::string path = StorePath(dir);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path, 1));
    ASSERT_OK(Put(*store, MakeDocument("/a", 1, 1)));
  }
  EXPECT_THAT(OpenStore(path, 2),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("wrong node key")));
  EXPECT_OK(OpenStore(path, 1));
}

TEST(DocumentStoreTest, NoPlaintextOnDisk) {
  TempDir dir;
  const std::string path = StorePath(dir);
  TestDocument document = MakeDocument("/secret/MARKER-PATH.txt", 1, 2, true);
  document.document.title = "MARKER-TITLE";
  document.document.text += "MARKER-TEXT";
  document.chunks[1].text += "MARKER-CHUNK";
  document.chunks[1].title = "MARKER-TITLE";
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
    ASSERT_OK(Put(*store, document));
  }
  size_t bytes = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream contents;
    contents << in.rdbuf();
    bytes += contents.str().size();
    EXPECT_THAT(contents.str(), ::testing::Not(HasSubstr("MARKER"))) << entry.path();
    EXPECT_THAT(contents.str(), ::testing::Not(HasSubstr("Sentence 0 of document")))
        << entry.path();
  }
  EXPECT_GT(bytes, document.document.text.size());  // the records are somewhere
}

TEST(DocumentStoreTest, AlteredOrTruncatedValuesAreDataLoss) {
  TempDir dir;
  const std::string path = StorePath(dir);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
    ASSERT_OK(Put(*store, MakeDocument("/a", 1, 3, true)));
    ASSERT_OK(Put(*store, MakeDocument("/b", 2, 1)));
  }
  EditRaw(path, [](rocksdb::DB& db, std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs) {
    std::string chunk = GetRaw(db, cfs["chunks"], RawChunkKey(1, 1));
    chunk[chunk.size() / 2] ^= 0x01;
    PutRaw(db, cfs["chunks"], RawChunkKey(1, 1), chunk);
    std::string document = GetRaw(db, cfs["docs"], RawDocKey(2));
    document[document.size() - 1] ^= 0x80;  // the tag
    PutRaw(db, cfs["docs"], RawDocKey(2), document);
    std::string shard = GetRaw(db, cfs["kv"], RawKvKey(1, 2));
    PutRaw(db, cfs["kv"], RawKvKey(1, 2), shard.substr(0, shard.size() - 1));
    PutRaw(db, cfs["kv"], RawKvKey(1, 0), "");
  });
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
  EXPECT_THAT(store->GetChunk("1:1"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 1:1")));
  EXPECT_THAT(store->GetChunkByVectorId(1), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->ForEachChunk([](const ChunkRecord&) { return absl::OkStatus(); }),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetDocument("2"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetDocumentBySourcePath("/b"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetKvShard("1:2", kFingerprint), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetKvShard("1:0", kFingerprint), StatusIs(absl::StatusCode::kDataLoss));
  // Untouched records still read.
  EXPECT_OK(store->GetChunk("1:0"));
  EXPECT_OK(store->GetKvShard("1:1", kFingerprint));
  EXPECT_OK(store->GetDocumentBySourcePath("/a"));
  // Replacing a damaged document still fails whole rather than half-writing.
  EXPECT_THAT(Put(*store, MakeDocument("/b", 3, 1)), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(store->store_version(), 2);
}

TEST(DocumentStoreTest, ValuesMovedToAnotherKeyOrStoreAreDataLoss) {
  TempDir dir;
  const std::string path = StorePath(dir);
  const std::string other_path = (dir.path() / "other").string();
  for (const std::string& p : {path, other_path}) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(p));  // same node key
    ASSERT_OK(Put(*store, MakeDocument("/a", 1, 2, true)));
    ASSERT_OK(Put(*store, MakeDocument("/b", 2, 2, true)));
  }
  std::string foreign_chunk;
  EditRaw(other_path,
          [&](rocksdb::DB& db, std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs) {
            foreign_chunk = GetRaw(db, cfs["chunks"], RawChunkKey(2, 0));
          });
  EditRaw(path, [&](rocksdb::DB& db, std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs) {
    PutRaw(db, cfs["chunks"], RawChunkKey(1, 1), GetRaw(db, cfs["chunks"], RawChunkKey(1, 0)));
    PutRaw(db, cfs["docs"], RawDocKey(2), GetRaw(db, cfs["docs"], RawDocKey(1)));
    PutRaw(db, cfs["kv"], RawKvKey(2, 0), GetRaw(db, cfs["kv"], RawKvKey(1, 0)));
    // The same key of another store sealed under the same node key.
    PutRaw(db, cfs["chunks"], RawChunkKey(2, 0), foreign_chunk);
  });
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
  EXPECT_OK(store->GetChunk("1:0"));
  EXPECT_THAT(store->GetChunk("1:1"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetDocument("2"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetKvShard("2:0", kFingerprint), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store->GetChunk("2:0"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_OK(store->GetChunk("2:1"));
}

// ---------------------------------------------------------------------------------------------
// Crash: a writer process ingests documents in a loop and is SIGKILLed at varying moments; the
// store reopens with every document whole, and every acknowledged write present.

constexpr char kWriterDirEnv[] = "SILO_DOCUMENT_STORE_TEST_WRITER_DIR";
constexpr char kWriterFdEnv[] = "SILO_DOCUMENT_STORE_TEST_WRITER_FD";
constexpr int kCrashPaths = 5;

std::string CrashPath(int i) { return absl::StrCat("/crash/doc", i % kCrashPaths); }

// Runs only as the child of CrashTest: writes until killed, reporting each completed write's
// number on the pipe.
TEST(DocumentStoreCrashTest, Writer) {
  const char* dir = std::getenv(kWriterDirEnv);
  const char* fd_text = std::getenv(kWriterFdEnv);
  if (dir == nullptr || fd_text == nullptr)
    GTEST_SKIP() << "only run by SigkillLeavesWholeDocuments";
  const int fd = std::atoi(fd_text);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(dir));
  for (int32_t i = 0;; ++i) {
    ASSERT_OK(Put(*store, MakeDocument(CrashPath(i), i, 1 + i % 4, /*shards=*/true)));
    ASSERT_EQ(::write(fd, &i, sizeof(i)), static_cast<ssize_t>(sizeof(i)));
  }
}

TEST(DocumentStoreCrashTest, SigkillLeavesWholeDocuments) {
  const std::vector<int> extra_delays_us = {0, 700, 2500, 9000};
  for (int delay_us : extra_delays_us) {
    TempDir dir;
    const std::string path = StorePath(dir);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const std::string dir_env = absl::StrCat(kWriterDirEnv, "=", path);
    const std::string fd_env = absl::StrCat(kWriterFdEnv, "=", fds[1]);
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    env.push_back(const_cast<char*>(dir_env.c_str()));
    env.push_back(const_cast<char*>(fd_env.c_str()));
    env.push_back(nullptr);
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::string filter = "--gtest_filter=DocumentStoreCrashTest.Writer";
    char* argv[] = {self.data(), filter.data(), nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, self.c_str(), &actions, nullptr, argv, env.data()), 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);

    // Let a few writes land, then kill at a varying moment (mid-write, most likely).
    int32_t last = -1;
    for (int n = 0; n < 3; ++n) {
      ASSERT_EQ(::read(fds[0], &last, sizeof(last)), static_cast<ssize_t>(sizeof(last)))
          << "the writer died early";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "writer status " << status;
    int32_t value;
    while (::read(fds[0], &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value))) {
      last = value;
    }
    ::close(fds[0]);

    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStore> store, OpenStore(path));
    std::vector<std::string> paths;
    paths.reserve(kCrashPaths);
    for (int i = 0; i < kCrashPaths; ++i) paths.push_back(CrashPath(i));
    ExpectConsistent(*store, paths);
    // The last acknowledged write is durable: its path holds it (a write that completed without
    // being acknowledged is the next one, to another path).
    ASSERT_OK_AND_ASSIGN(DocumentRecord document, store->GetDocumentBySourcePath(CrashPath(last)));
    EXPECT_EQ(document.title, absl::StrCat("title ", last));
    // Every document present is whole, shards included.
    for (const std::string& p : paths) {
      absl::StatusOr<DocumentRecord> d = store->GetDocumentBySourcePath(p);
      if (absl::IsNotFound(d.status())) continue;
      ASSERT_OK(d);
      const int seed = std::stoi(d->title.substr(6));
      const TestDocument want = MakeDocument(p, seed, 1 + seed % 4, true);
      EXPECT_EQ(d->text, want.document.text);
      ASSERT_EQ(d->n_chunks, static_cast<int32_t>(want.chunks.size()));
      for (int i = 0; i < d->n_chunks; ++i) {
        const std::string chunk_id = absl::StrCat(d->doc_id, ":", i);
        ASSERT_OK_AND_ASSIGN(ChunkRecord chunk, store->GetChunk(chunk_id));
        ExpectChunkEquals(chunk, want.chunks[i]);
        EXPECT_THAT(store->GetKvShard(chunk_id, kFingerprint),
                    IsOkAndHolds(ElementsAreArray(Shard(seed, i))));
      }
    }
    EXPECT_GE(store->store_version(), last + 1);
    EXPECT_LE(store->store_version(), last + 2);
  }
}

}  // namespace
}  // namespace silo::retrieval

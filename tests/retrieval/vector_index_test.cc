// VectorIndex: flat search equal to brute force; add / replace / remove and save / load for every
// kind (ivf before and after training); stale, missing, truncated and corrupted files; bad
// inputs; HNSW tombstones and rebuild; concurrent searches; recall@10 of ivf and hnsw against
// flat on random unit vectors.
#include "retrieval/vector_index.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::IsOkAndHolds;
using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int32_t kDim = 16;
constexpr int64_t kFirstId = 1000;

// n random unit vectors, [n, dim] row-major (normalized Gaussians: uniform on the sphere).
std::vector<float> RandomUnitVectors(int64_t n, int32_t dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(n * dim);
  for (int64_t i = 0; i < n; ++i) {
    float* row = vectors.data() + i * dim;
    double norm = 0;
    for (int32_t j = 0; j < dim; ++j) {
      row[j] = normal(rng);
      norm += row[j] * row[j];
    }
    for (int32_t j = 0; j < dim; ++j) row[j] = static_cast<float>(row[j] / std::sqrt(norm));
  }
  return vectors;
}

std::vector<int64_t> Ids(int64_t first, int64_t n) {
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = first + i;
  return ids;
}

std::span<const float> Row(const std::vector<float>& vectors, int64_t i, int32_t dim = kDim) {
  return std::span(vectors).subspan(i * dim, dim);
}

// The k best of `vectors` ([ids.size(), dim]) for `query` by a plain loop, best first.
std::vector<Neighbor> BruteForce(const std::vector<float>& vectors, const std::vector<int64_t>& ids,
                                 std::span<const float> query, int k) {
  const int32_t dim = static_cast<int32_t>(query.size());
  std::vector<Neighbor> all;
  for (size_t i = 0; i < ids.size(); ++i) {
    double dot = 0;
    for (int32_t j = 0; j < dim; ++j) dot += vectors[i * dim + j] * query[j];
    all.push_back({ids[i], static_cast<float>(dot)});
  }
  std::sort(all.begin(), all.end(),
            [](const Neighbor& a, const Neighbor& b) { return a.score > b.score; });
  all.resize(std::min<size_t>(k, all.size()));
  return all;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A kind with options small enough for the tests. The trained ivf case has 4 lists, all probed
// (exact), and trains at 4 * 39 = 156 vectors; the untrained one needs 16 * 39 = 624.
struct KindCase {
  std::string name;
  IndexOptions options;
  bool ivf_trained_at_300 = false;
};

std::vector<KindCase> AllKinds() {
  return {
      {"flat", {.kind = IndexKind::kFlat}, false},
      {"ivf_untrained", {.kind = IndexKind::kIvf, .nlist = 16, .nprobe = 16}, false},
      {"ivf", {.kind = IndexKind::kIvf, .nlist = 4, .nprobe = 4}, true},
      {"hnsw",
       {.kind = IndexKind::kHnsw, .hnsw_m = 16, .ef_construction = 64, .ef_search = 64},
       false},
  };
}

class VectorIndexKindTest : public ::testing::TestWithParam<KindCase> {
 protected:
  static constexpr int64_t kN = 300;

  void SetUp() override {
    vectors_ = RandomUnitVectors(kN, kDim, 1);
    ids_ = Ids(kFirstId, kN);
    ASSERT_OK_AND_ASSIGN(index_, VectorIndex::Create(kDim, GetParam().options));
    ASSERT_OK(index_->Add(ids_, vectors_));
  }

  // The id found first for vector i of `vectors`.
  int64_t Top1(const std::vector<float>& vectors, int64_t i) const {
    absl::StatusOr<std::vector<std::vector<Neighbor>>> result = index_->Search(Row(vectors, i), 1);
    EXPECT_OK(result);
    if (!result.ok() || result->size() != 1 || (*result)[0].empty()) return -2;
    return (*result)[0][0].id;
  }

  std::vector<float> vectors_;  // [kN, kDim]
  std::vector<int64_t> ids_;
  std::unique_ptr<VectorIndex> index_;
};

TEST_P(VectorIndexKindTest, AddReplaceRemove) {
  EXPECT_EQ(index_->size(), kN);
  EXPECT_EQ(index_->stats().ivf_trained, GetParam().ivf_trained_at_300);
  EXPECT_TRUE(index_->Contains(kFirstId));
  EXPECT_FALSE(index_->Contains(5));
  for (int64_t i = 0; i < kN; i += 15) {
    ASSERT_OK_AND_ASSIGN(auto result, index_->Search(Row(vectors_, i), 3));
    ASSERT_THAT(result, SizeIs(1));
    ASSERT_THAT(result[0], SizeIs(3));
    EXPECT_EQ(result[0][0].id, kFirstId + i);
    EXPECT_NEAR(result[0][0].score, 1.0f, 1e-5);
    EXPECT_GE(result[0][0].score, result[0][1].score);
  }

  // Replace the first 10: the id follows its new vector, the old one no longer finds it.
  const std::vector<float> replacement = RandomUnitVectors(10, kDim, 2);
  ASSERT_OK(index_->Add(Ids(kFirstId, 10), replacement));
  EXPECT_EQ(index_->size(), kN);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(Top1(replacement, i), kFirstId + i);
    ASSERT_OK_AND_ASSIGN(auto result, index_->Search(Row(vectors_, i), 5));
    for (const Neighbor& neighbor : result[0]) {
      EXPECT_FALSE(neighbor.id == kFirstId + i && neighbor.score > 0.999f) << i;
    }
  }

  // Remove 10..19; absent and repeated ids are ignored.
  std::vector<int64_t> removed = Ids(kFirstId + 10, 10);
  std::vector<int64_t> to_remove = removed;
  to_remove.push_back(5);
  to_remove.push_back(kFirstId + 10);
  EXPECT_THAT(index_->Remove(to_remove), IsOkAndHolds(10));
  EXPECT_THAT(index_->Remove(removed), IsOkAndHolds(0));
  EXPECT_EQ(index_->size(), kN - 10);
  EXPECT_FALSE(index_->Contains(kFirstId + 10));
  ASSERT_OK_AND_ASSIGN(auto all, index_->Search(vectors_, static_cast<int>(kN)));
  for (const std::vector<Neighbor>& neighbors : all) {
    std::set<int64_t> seen;
    for (const Neighbor& neighbor : neighbors) {
      EXPECT_TRUE(seen.insert(neighbor.id).second) << "id " << neighbor.id << " twice";
      EXPECT_FALSE(neighbor.id >= kFirstId + 10 && neighbor.id < kFirstId + 20) << neighbor.id;
    }
    // Flat, and ivf probing every list, return every live vector.
    if (GetParam().options.kind != IndexKind::kHnsw) {
      EXPECT_EQ(neighbors.size(), kN - 10u);
    }
  }

  // A removed id can come back.
  ASSERT_OK(index_->Add(Ids(kFirstId + 10, 1), Row(vectors_, 10)));
  EXPECT_TRUE(index_->Contains(kFirstId + 10));
  EXPECT_EQ(Top1(vectors_, 10), kFirstId + 10);
  EXPECT_EQ(index_->size(), kN - 9);
}

TEST_P(VectorIndexKindTest, SaveLoadRoundTrip) {
  ASSERT_THAT(index_->Remove(Ids(kFirstId + 20, 5)), IsOkAndHolds(5));
  const IndexStats stats = index_->stats();
  if (GetParam().options.kind == IndexKind::kHnsw) {
    EXPECT_EQ(stats.n_tombstones, 5);
  }

  TempDir dir;
  const std::string path = (dir.path() / "index.faiss").string();
  ASSERT_OK(index_->Save(path, "old"));
  ASSERT_OK(index_->Save(path, "store-42"));  // overwrites
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1)
      << "temporary file left behind";

  ASSERT_OK_AND_ASSIGN(const IndexFileInfo info, ReadIndexFileInfo(path));
  EXPECT_EQ(info.format_version, VectorIndex::kFormatVersion);
  EXPECT_EQ(info.dim, kDim);
  EXPECT_EQ(info.options.kind, GetParam().options.kind);
  EXPECT_EQ(info.ivf_trained, stats.ivf_trained);
  EXPECT_EQ(info.n_vectors, kN - 5);
  EXPECT_EQ(info.store_version, "store-42");

  ASSERT_OK_AND_ASSIGN(auto loaded, VectorIndex::Load(path, kDim, GetParam().options));
  EXPECT_EQ(loaded->store_version(), "store-42");
  EXPECT_EQ(loaded->size(), kN - 5);
  EXPECT_EQ(loaded->stats().ivf_trained, stats.ivf_trained);
  EXPECT_EQ(loaded->stats().n_tombstones, stats.n_tombstones);
  EXPECT_FALSE(loaded->Contains(kFirstId + 20));
  EXPECT_TRUE(loaded->Contains(kFirstId + 25));

  const std::vector<float> queries = RandomUnitVectors(10, kDim, 3);
  ASSERT_OK_AND_ASSIGN(auto before, index_->Search(queries, 10));
  ASSERT_OK_AND_ASSIGN(auto after, loaded->Search(queries, 10));
  ASSERT_EQ(before.size(), after.size());
  for (size_t q = 0; q < before.size(); ++q) {
    ASSERT_EQ(before[q].size(), after[q].size());
    for (size_t j = 0; j < before[q].size(); ++j) {
      EXPECT_EQ(before[q][j].id, after[q][j].id);
      EXPECT_EQ(before[q][j].score, after[q][j].score);
    }
  }

  // The loaded index keeps working: replace, add, remove.
  ASSERT_OK(loaded->Add(std::vector<int64_t>{kFirstId, 7}, RandomUnitVectors(2, kDim, 4)));
  EXPECT_EQ(loaded->size(), kN - 4);
  EXPECT_THAT(loaded->Remove(std::vector<int64_t>{7, kFirstId + 1}), IsOkAndHolds(2));
  EXPECT_FALSE(loaded->Contains(7));
}

TEST_P(VectorIndexKindTest, TruncatedOrCorruptedFileIsDataLoss) {
  TempDir dir;
  const std::string path = (dir.path() / "index.faiss").string();
  ASSERT_OK(index_->Save(path, "v1"));
  const std::string bytes = ReadBytes(path);
  ASSERT_GT(bytes.size(), 100u);
  const IndexOptions& options = GetParam().options;

  std::vector<size_t> lengths = {
      0, 1, 8, 12, 40, bytes.size() - 33, bytes.size() - 32, bytes.size() - 1};
  for (size_t length = 0; length < bytes.size(); length += bytes.size() / 41 + 1) {
    lengths.push_back(length);
  }
  for (const size_t length : lengths) {
    const std::string truncated = dir.WriteFile("truncated", bytes.substr(0, length));
    EXPECT_THAT(VectorIndex::Load(truncated, kDim, options), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << length;
  }

  std::vector<size_t> positions;
  for (size_t i = 0; i < 64; ++i) positions.push_back(i);  // the header
  for (size_t i = 64; i < bytes.size(); i += bytes.size() / 101 + 1) positions.push_back(i);
  positions.push_back(bytes.size() - 1);  // the checksum itself
  for (const size_t position : positions) {
    std::string corrupted = bytes;
    corrupted[position] = static_cast<char>(corrupted[position] ^ 0x5a);
    const std::string file = dir.WriteFile("corrupted", corrupted);
    EXPECT_THAT(VectorIndex::Load(file, kDim, options), StatusIs(absl::StatusCode::kDataLoss))
        << "byte " << position;
  }

  std::mt19937 rng(5);
  std::string garbage(bytes.size(), '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  EXPECT_THAT(VectorIndex::Load(dir.WriteFile("garbage", garbage), kDim, options),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ReadIndexFileInfo(dir.WriteFile("garbage", garbage)),
              StatusIs(absl::StatusCode::kDataLoss));
  // The intact file still loads.
  EXPECT_OK(VectorIndex::Load(path, kDim, options));
}

INSTANTIATE_TEST_SUITE_P(AllKinds, VectorIndexKindTest, ::testing::ValuesIn(AllKinds()),
                         [](const auto& info) { return info.param.name; });

TEST(VectorIndex, FlatEqualsBruteForce) {
  constexpr int64_t kN = 1000;
  constexpr int kK = 10;
  const std::vector<float> vectors = RandomUnitVectors(kN, 32, 11);
  const std::vector<float> queries = RandomUnitVectors(20, 32, 12);
  // Ids far apart and negative ones too: only -1 is reserved.
  std::vector<int64_t> ids(kN);
  for (int64_t i = 0; i < kN; ++i) ids[i] = (i - 500) * 1'000'003;
  ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(32, {}));
  ASSERT_OK(index->Add(ids, vectors));
  ASSERT_OK_AND_ASSIGN(auto result, index->Search(queries, kK));
  ASSERT_THAT(result, SizeIs(20));
  for (int q = 0; q < 20; ++q) {
    const std::vector<Neighbor> expected = BruteForce(vectors, ids, Row(queries, q, 32), kK);
    ASSERT_THAT(result[q], SizeIs(kK));
    for (int j = 0; j < kK; ++j) {
      EXPECT_EQ(result[q][j].id, expected[j].id) << "query " << q << " rank " << j;
      EXPECT_NEAR(result[q][j].score, expected[j].score, 1e-5);
    }
  }
  // k above the size returns everything.
  ASSERT_OK_AND_ASSIGN(auto everything, index->Search(Row(queries, 0, 32), VectorIndex::kMaxK));
  EXPECT_THAT(everything[0], SizeIs(kN));
}

TEST(VectorIndex, EmptyIndexAndNoQueries) {
  for (const KindCase& kind : AllKinds()) {
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, kind.options));
    ASSERT_OK_AND_ASSIGN(auto result, index->Search(RandomUnitVectors(2, kDim, 1), 5));
    ASSERT_THAT(result, SizeIs(2));
    EXPECT_THAT(result[0], IsEmpty());
    ASSERT_OK_AND_ASSIGN(auto none, index->Search({}, 5));
    EXPECT_THAT(none, IsEmpty());
    EXPECT_THAT(index->Remove(std::vector<int64_t>{1, 2}), IsOkAndHolds(0));
    ASSERT_OK(index->Add({}, {}));
    EXPECT_EQ(index->size(), 0);
  }
}

TEST(VectorIndex, IvfTrainsWhenItHoldsEnoughVectors) {
  const IndexOptions options = {.kind = IndexKind::kIvf, .nlist = 4, .nprobe = 4};
  const int64_t threshold = VectorIndex::kIvfMinPointsPerList * options.nlist;  // 156
  const std::vector<float> vectors = RandomUnitVectors(threshold, kDim, 21);
  ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, options));
  // Below the threshold the index is flat; the Add that reaches it trains on all vectors.
  ASSERT_OK(index->Add(Ids(0, threshold - 1), std::span(vectors).first((threshold - 1) * kDim)));
  EXPECT_FALSE(index->stats().ivf_trained);
  ASSERT_OK(index->Add(Ids(threshold - 1, 1), Row(vectors, threshold - 1)));
  EXPECT_TRUE(index->stats().ivf_trained);
  EXPECT_EQ(index->size(), threshold);
  for (int64_t i = 0; i < threshold; i += 13) {
    ASSERT_OK_AND_ASSIGN(auto result, index->Search(Row(vectors, i), 1));
    EXPECT_EQ(result[0][0].id, i);
  }
  // Removing below the threshold keeps the lists.
  std::vector<int64_t> half = Ids(0, threshold / 2);
  EXPECT_THAT(index->Remove(half), IsOkAndHolds(threshold / 2));
  EXPECT_TRUE(index->stats().ivf_trained);
  EXPECT_EQ(index->size(), threshold - threshold / 2);
}

TEST(VectorIndex, HnswRebuildsWhenTombstonesPileUp) {
  const IndexOptions options = {.kind = IndexKind::kHnsw, .hnsw_m = 8, .ef_construction = 40};
  const std::vector<float> vectors = RandomUnitVectors(100, kDim, 31);
  ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, options));
  ASSERT_OK(index->Add(Ids(0, 100), vectors));
  EXPECT_THAT(index->Remove(Ids(0, 25)), IsOkAndHolds(25));  // 25% of the slots: kept
  EXPECT_EQ(index->stats().n_tombstones, 25);
  // A replace makes a tombstone too, which crosses the limit: the graph is rebuilt.
  ASSERT_OK(index->Add(Ids(50, 1), Row(vectors, 50)));
  EXPECT_EQ(index->stats().n_tombstones, 0);
  EXPECT_EQ(index->size(), 75);
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(index->Contains(i), i >= 25);
    if (i < 25) continue;
    ASSERT_OK_AND_ASSIGN(auto result, index->Search(Row(vectors, i), 1));
    EXPECT_EQ(result[0][0].id, i);
  }
  EXPECT_THAT(index->Remove(Ids(0, 100)), IsOkAndHolds(75));
  EXPECT_EQ(index->size(), 0);
  ASSERT_OK_AND_ASSIGN(auto result, index->Search(Row(vectors, 0), 3));
  EXPECT_THAT(result[0], IsEmpty());
}

TEST(VectorIndex, ParseAndValidateOptions) {
  EXPECT_THAT(ParseIndexKind("flat"), IsOkAndHolds(IndexKind::kFlat));
  EXPECT_THAT(ParseIndexKind("ivf"), IsOkAndHolds(IndexKind::kIvf));
  EXPECT_THAT(ParseIndexKind("hnsw"), IsOkAndHolds(IndexKind::kHnsw));
  EXPECT_THAT(ParseIndexKind("HNSW"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseIndexKind(""), StatusIs(absl::StatusCode::kInvalidArgument));
  for (IndexKind kind : {IndexKind::kFlat, IndexKind::kIvf, IndexKind::kHnsw}) {
    EXPECT_THAT(ParseIndexKind(IndexKindName(kind)), IsOkAndHolds(kind));
    EXPECT_OK(IndexOptions{.kind = kind}.Validate());  // the defaults are valid
  }
  // Fields of other kinds are not checked.
  EXPECT_OK((IndexOptions{.kind = IndexKind::kFlat, .nlist = 0, .hnsw_m = 0}.Validate()));
  const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kIvf, .nlist = 0}.Validate()),
              StatusIs(kInvalid, HasSubstr("nlist")));
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kIvf, .nlist = 8, .nprobe = 9}.Validate()),
              StatusIs(kInvalid, HasSubstr("nprobe")));
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kIvf, .nlist = 8, .nprobe = 0}.Validate()),
              StatusIs(kInvalid));
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kHnsw, .hnsw_m = 1}.Validate()),
              StatusIs(kInvalid, HasSubstr("hnsw_m")));
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kHnsw, .ef_construction = 0}.Validate()),
              StatusIs(kInvalid, HasSubstr("ef_construction")));
  EXPECT_THAT((IndexOptions{.kind = IndexKind::kHnsw, .ef_search = 1 << 20}.Validate()),
              StatusIs(kInvalid, HasSubstr("ef_search")));
  EXPECT_THAT(VectorIndex::Create(kDim, {.kind = IndexKind::kIvf, .nlist = -3}),
              StatusIs(kInvalid));
}

TEST(VectorIndex, BadInputsAreInvalidArgument) {
  const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(VectorIndex::Create(0, {}), StatusIs(kInvalid));
  EXPECT_THAT(VectorIndex::Create(-384, {}), StatusIs(kInvalid));
  EXPECT_THAT(VectorIndex::Create(VectorIndex::kMaxDim + 1, {}), StatusIs(kInvalid));

  for (const KindCase& kind : AllKinds()) {
    SCOPED_TRACE(kind.name);
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, kind.options));
    const std::vector<float> two = RandomUnitVectors(2, kDim, 41);
    ASSERT_OK(index->Add(std::vector<int64_t>{1, 2}, two));

    // Wrong dimension.
    EXPECT_THAT(index->Add(std::vector<int64_t>{3}, std::vector<float>(kDim + 1, 0.1f)),
                StatusIs(kInvalid));
    EXPECT_THAT(index->Add(std::vector<int64_t>{3, 4}, Row(two, 0)), StatusIs(kInvalid));
    EXPECT_THAT(index->Search(std::vector<float>(kDim - 1, 0.1f), 1), StatusIs(kInvalid));
    // NaN and infinity.
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()}) {
      std::vector<float> vectors = two;
      vectors[kDim + 3] = bad;
      EXPECT_THAT(index->Add(std::vector<int64_t>{3, 4}, vectors),
                  StatusIs(kInvalid, HasSubstr("vector 1")));
      EXPECT_THAT(index->Search(vectors, 1), StatusIs(kInvalid, HasSubstr("query 1")));
    }
    // Duplicate and reserved ids.
    EXPECT_THAT(index->Add(std::vector<int64_t>{3, 3}, two),
                StatusIs(kInvalid, HasSubstr("repeats")));
    EXPECT_THAT(index->Add(std::vector<int64_t>{1, 1}, two),
                StatusIs(kInvalid, HasSubstr("repeats")));
    EXPECT_THAT(index->Add(std::vector<int64_t>{VectorIndex::kReservedId, 3}, two),
                StatusIs(kInvalid, HasSubstr("reserved")));
    // k.
    for (int k : {0, -1, VectorIndex::kMaxK + 1, std::numeric_limits<int>::max()}) {
      EXPECT_THAT(index->Search(Row(two, 0), k), StatusIs(kInvalid)) << "k " << k;
    }
    // Nothing was changed by the rejected calls.
    EXPECT_EQ(index->size(), 2);
    EXPECT_FALSE(index->Contains(3));
    ASSERT_OK_AND_ASSIGN(auto result, index->Search(Row(two, 1), 1));
    EXPECT_EQ(result[0][0].id, 2);

    TempDir dir;
    EXPECT_THAT(index->Save((dir.path() / "i").string(),
                            std::string(VectorIndex::kMaxStoreVersionBytes + 1, 'v')),
                StatusIs(kInvalid));
    EXPECT_THAT(index->Save((dir.path() / "missing" / "i").string(), "v"),
                StatusIs(absl::StatusCode::kNotFound));
  }
}

TEST(VectorIndex, LoadDetectsMissingAndStaleFiles) {
  TempDir dir;
  const std::string missing = (dir.path() / "missing.faiss").string();
  EXPECT_THAT(VectorIndex::Load(missing, kDim, {}), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReadIndexFileInfo(missing), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(VectorIndex::Load(dir.path().string(), kDim, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));

  const std::vector<float> vectors = RandomUnitVectors(200, kDim, 51);
  const absl::StatusCode kStale = absl::StatusCode::kFailedPrecondition;
  // flat
  const std::string flat_path = (dir.path() / "flat.faiss").string();
  {
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, {}));
    ASSERT_OK(index->Add(Ids(0, 200), vectors));
    ASSERT_OK(index->Save(flat_path, "7"));
  }
  EXPECT_THAT(VectorIndex::Load(flat_path, kDim + 1, {}), StatusIs(kStale, HasSubstr("dim")));
  EXPECT_THAT(VectorIndex::Load(flat_path, kDim, {.kind = IndexKind::kHnsw}),
              StatusIs(kStale, HasSubstr("kind")));
  EXPECT_OK(VectorIndex::Load(flat_path, kDim, {.kind = IndexKind::kFlat, .nlist = 7}));
  // ivf: nlist is structural, nprobe is not.
  const IndexOptions ivf = {.kind = IndexKind::kIvf, .nlist = 4, .nprobe = 2};
  const std::string ivf_path = (dir.path() / "ivf.faiss").string();
  {
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, ivf));
    ASSERT_OK(index->Add(Ids(0, 200), vectors));
    ASSERT_OK(index->Save(ivf_path, "7"));
  }
  EXPECT_THAT(VectorIndex::Load(ivf_path, kDim, {.kind = IndexKind::kIvf, .nlist = 8, .nprobe = 2}),
              StatusIs(kStale, HasSubstr("nlist")));
  ASSERT_OK_AND_ASSIGN(
      auto ivf_loaded,
      VectorIndex::Load(ivf_path, kDim, {.kind = IndexKind::kIvf, .nlist = 4, .nprobe = 3}));
  EXPECT_EQ(ivf_loaded->options().nprobe, 3);
  // hnsw: hnsw_m and ef_construction are structural, ef_search is not.
  const IndexOptions hnsw = {.kind = IndexKind::kHnsw, .hnsw_m = 8, .ef_construction = 20};
  const std::string hnsw_path = (dir.path() / "hnsw.faiss").string();
  {
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, hnsw));
    ASSERT_OK(index->Add(Ids(0, 200), vectors));
    ASSERT_OK(index->Save(hnsw_path, "7"));
  }
  IndexOptions other = hnsw;
  other.hnsw_m = 16;
  EXPECT_THAT(VectorIndex::Load(hnsw_path, kDim, other), StatusIs(kStale));
  other = hnsw;
  other.ef_construction = 40;
  EXPECT_THAT(VectorIndex::Load(hnsw_path, kDim, other), StatusIs(kStale));
  other = hnsw;
  other.ef_search = 200;
  EXPECT_OK(VectorIndex::Load(hnsw_path, kDim, other));
  // Invalid options are rejected before the file is read.
  EXPECT_THAT(VectorIndex::Load(missing, 0, {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(VectorIndex, ConcurrentSearchesDuringWrites) {
  const std::vector<float> vectors = RandomUnitVectors(400, kDim, 61);
  for (const KindCase& kind : AllKinds()) {
    SCOPED_TRACE(kind.name);
    ASSERT_OK_AND_ASSIGN(auto index, VectorIndex::Create(kDim, kind.options));
    ASSERT_OK(index->Add(Ids(0, 100), std::span(vectors).first(100 * kDim)));
    std::atomic<bool> done = false;
    std::atomic<int> failures = 0;
    std::vector<std::thread> readers;
    readers.reserve(3);
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&, t] {
        int64_t i = t;
        while (!done.load()) {
          absl::StatusOr<std::vector<std::vector<Neighbor>>> result =
              index->Search(Row(vectors, i % 100), 5);
          // Vectors 0..99 stay in the index throughout: each finds itself.
          if (!result.ok() || (*result)[0].empty() || (*result)[0][0].id != i % 100) ++failures;
          i += 7;
        }
      });
    }
    for (int64_t i = 100; i < 400; i += 20) {
      // EXPECT, not ASSERT: the readers must be joined.
      EXPECT_OK(index->Add(Ids(i, 20), std::span(vectors).subspan(i * kDim, 20 * kDim)));
      EXPECT_OK(index->Remove(Ids(i, 10)).status());  // hnsw: rebuilds along the way
    }
    done = true;
    for (std::thread& reader : readers) reader.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(index->size(), 100 + 15 * 10);
    EXPECT_LT(index->stats().n_tombstones, 100);
  }
}

// Recall@10 of the approximate kinds against flat on uniform random unit vectors, which have no
// cluster structure and are the hard case. Measured: ivf 0.73, hnsw 0.99 (bounds leave room).
TEST(VectorIndex, RecallAgainstFlat) {
  constexpr int64_t kN = 4000;
  constexpr int32_t kRecallDim = 32;
  constexpr int kQueries = 100;
  constexpr int kK = 10;
  const std::vector<float> vectors = RandomUnitVectors(kN, kRecallDim, 71);
  const std::vector<float> queries = RandomUnitVectors(kQueries, kRecallDim, 72);
  const std::vector<int64_t> ids = Ids(0, kN);

  auto search = [&](const IndexOptions& options) -> std::vector<std::vector<Neighbor>> {
    absl::StatusOr<std::unique_ptr<VectorIndex>> index = VectorIndex::Create(kRecallDim, options);
    EXPECT_OK(index);
    EXPECT_OK((*index)->Add(ids, vectors));
    absl::StatusOr<std::vector<std::vector<Neighbor>>> result = (*index)->Search(queries, kK);
    EXPECT_OK(result);
    return *std::move(result);
  };
  const auto truth = search({.kind = IndexKind::kFlat});
  auto recall = [&](const std::vector<std::vector<Neighbor>>& result) {
    int64_t found = 0;
    for (int q = 0; q < kQueries; ++q) {
      std::set<int64_t> expected;
      for (const Neighbor& neighbor : truth[q]) expected.insert(neighbor.id);
      for (const Neighbor& neighbor : result[q]) found += expected.count(neighbor.id);
    }
    return static_cast<double>(found) / (kQueries * kK);
  };
  const double ivf =
      recall(search({.kind = IndexKind::kIvf, .nlist = 32, .nprobe = 8}));  // trains at 1248
  const double hnsw = recall(
      search({.kind = IndexKind::kHnsw, .hnsw_m = 16, .ef_construction = 64, .ef_search = 64}));
  RecordProperty("ivf_recall_at_10", std::to_string(ivf));
  RecordProperty("hnsw_recall_at_10", std::to_string(hnsw));
  EXPECT_GE(ivf, 0.60) << "ivf nlist 32 nprobe 8";
  EXPECT_GE(hnsw, 0.90) << "hnsw M 16 ef 64";
  std::printf("recall@10: ivf %.3f, hnsw %.3f\n", ivf, hnsw);
}

}  // namespace
}  // namespace silo::retrieval

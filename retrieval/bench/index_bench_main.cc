// silo-index-bench: build time, single-query search latency (p50, p99) and recall@10 against
// flat of the vector index kinds on random unit vectors: by default normalized Gaussians, uniform
// on the sphere, without structure (the hard case for approximate search); with
// --intrinsic-dim r, uniform on the unit sphere of a random r-dimensional subspace, closer to
// real embeddings, whose intrinsic dimension is far below dim.
//
//   silo-index-bench [--n 100000,1000000] [--queries 1000] [--threads 2] [--dim 384]
//                    [--kinds flat,ivf,hnsw] [--nlist 1024] [--nprobe 32] [--hnsw-m 32]
//                    [--ef-construction 80] [--ef-search 64] [--k 10] [--intrinsic-dim 0]
//
// The ground truth is flat search of all queries in one batch; latency is one Search call per
// query, one query at a time. Build is one Add of all vectors (ivf: k-means training included).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "retrieval/vector_index.h"

namespace {

using silo::retrieval::IndexKind;
using silo::retrieval::IndexOptions;
using silo::retrieval::Neighbor;
using silo::retrieval::VectorIndex;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::vector<int64_t> sizes = {100'000, 1'000'000};
  int queries = 1000;
  int threads = 2;
  int dim = 384;
  int k = 10;
  int intrinsic_dim = 0;  // 0: the full dim
  std::vector<IndexKind> kinds = {IndexKind::kFlat, IndexKind::kIvf, IndexKind::kHnsw};
  IndexOptions options;
};

bool ParseInt(std::string_view text, int64_t min, int64_t max, int64_t* out) {
  const std::string copy(text);
  char* end = nullptr;
  const long long value = std::strtoll(copy.c_str(), &end, 10);
  if (end == copy.c_str() || *end != '\0' || value < min || value > max) return false;
  *out = value;
  return true;
}

bool ParseInt32(std::string_view text, int min, int* out) {
  int64_t value = 0;
  if (!ParseInt(text, min, 1 << 30, &value)) return false;
  *out = static_cast<int>(value);
  return true;
}

std::vector<std::string_view> Split(std::string_view text) {
  std::vector<std::string_view> parts;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    parts.push_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return parts;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return false;
    const std::string_view value = argv[++i];
    if (arg == "--n") {
      flags->sizes.clear();
      for (std::string_view part : Split(value)) {
        int64_t n = 0;
        if (!ParseInt(part, 1, int64_t{1} << 31, &n)) return false;
        flags->sizes.push_back(n);
      }
      if (flags->sizes.empty()) return false;
    } else if (arg == "--kinds") {
      flags->kinds.clear();
      for (std::string_view part : Split(value)) {
        absl::StatusOr<IndexKind> kind = silo::retrieval::ParseIndexKind(part);
        if (!kind.ok()) return false;
        flags->kinds.push_back(*kind);
      }
      if (flags->kinds.empty()) return false;
    } else if (arg == "--queries") {
      if (!ParseInt32(value, 1, &flags->queries)) return false;
    } else if (arg == "--threads") {
      if (!ParseInt32(value, 1, &flags->threads)) return false;
    } else if (arg == "--dim") {
      if (!ParseInt32(value, 1, &flags->dim)) return false;
    } else if (arg == "--intrinsic-dim") {
      if (!ParseInt32(value, 0, &flags->intrinsic_dim)) return false;
    } else if (arg == "--k") {
      if (!ParseInt32(value, 1, &flags->k)) return false;
    } else if (arg == "--nlist") {
      if (!ParseInt32(value, 1, &flags->options.nlist)) return false;
    } else if (arg == "--nprobe") {
      if (!ParseInt32(value, 1, &flags->options.nprobe)) return false;
    } else if (arg == "--hnsw-m") {
      if (!ParseInt32(value, 2, &flags->options.hnsw_m)) return false;
    } else if (arg == "--ef-construction") {
      if (!ParseInt32(value, 1, &flags->options.ef_construction)) return false;
    } else if (arg == "--ef-search") {
      if (!ParseInt32(value, 1, &flags->options.ef_search)) return false;
    } else {
      return false;
    }
  }
  return true;
}

// n random unit vectors, [n, dim] row-major: normalized Gaussians, or with `basis` ([dim, r]
// row-major) normalized basis * z for Gaussian z of r values.
std::vector<float> RandomUnitVectors(int64_t n, int dim, uint32_t seed,
                                     const std::vector<float>& basis) {
  const int r = static_cast<int>(basis.size() / dim);
  std::vector<float> vectors(n * dim);
#pragma omp parallel
  {
    // One generator per block of rows, so the data does not depend on the thread count.
#pragma omp for schedule(static)
    for (int64_t block = 0; block < (n + 4095) / 4096; ++block) {
      std::mt19937_64 rng(seed * 1'000'003ull + block);
      std::normal_distribution<float> normal;
      std::vector<float> z(r);
      for (int64_t i = block * 4096; i < std::min(n, (block + 1) * 4096); ++i) {
        float* row = vectors.data() + i * dim;
        for (float& value : z) value = normal(rng);
        double norm = 0;
        for (int j = 0; j < dim; ++j) {
          if (r == 0) {
            row[j] = normal(rng);
          } else {
            row[j] = 0;
            for (int c = 0; c < r; ++c) row[j] += basis[j * r + c] * z[c];
          }
          norm += row[j] * row[j];
        }
        const float scale = static_cast<float>(1.0 / std::sqrt(norm));
        for (int j = 0; j < dim; ++j) row[j] *= scale;
      }
    }
  }
  return vectors;
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const size_t i = std::min(values.size() - 1, static_cast<size_t>(p * values.size()));
  return values[i];
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "silo-index-bench: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: silo-index-bench [--n N,N...] [--queries N] [--threads N] [--dim N] "
                 "[--kinds flat,ivf,hnsw] [--nlist N] [--nprobe N] [--hnsw-m N] "
                 "[--ef-construction N] [--ef-search N] [--k N] [--intrinsic-dim N]\n");
    return 2;
  }
  omp_set_num_threads(flags.threads);
  const IndexOptions& o = flags.options;
  std::printf(
      "dim %d, %d queries, k %d, threads %d; ivf nlist %d nprobe %d; hnsw M %d "
      "efConstruction %d efSearch %d; intrinsic dim %d\n",
      flags.dim, flags.queries, flags.k, flags.threads, o.nlist, o.nprobe, o.hnsw_m,
      o.ef_construction, o.ef_search, flags.intrinsic_dim);
  std::printf("%10s  %-5s  %9s  %9s  %9s  %9s  %9s\n", "n", "kind", "build s", "p50 ms", "p99 ms",
              "mean ms", "recall@k");
  std::fflush(stdout);

  std::vector<float> basis;  // [dim, intrinsic_dim]
  if (flags.intrinsic_dim > 0) {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal;
    basis.resize(static_cast<size_t>(flags.dim) * flags.intrinsic_dim);
    for (float& value : basis) value = normal(rng);
  }
  const std::vector<float> queries = RandomUnitVectors(flags.queries, flags.dim, 2, basis);
  for (const int64_t n : flags.sizes) {
    const std::vector<float> vectors = RandomUnitVectors(n, flags.dim, 1, basis);
    std::vector<int64_t> ids(n);
    for (int64_t i = 0; i < n; ++i) ids[i] = i;

    std::vector<std::set<int64_t>> truth(flags.queries);
    for (const IndexKind kind : {IndexKind::kFlat, IndexKind::kIvf, IndexKind::kHnsw}) {
      const bool measured =
          std::find(flags.kinds.begin(), flags.kinds.end(), kind) != flags.kinds.end();
      // Flat always runs (the ground truth), but is timed only when asked for.
      if (!measured && kind != IndexKind::kFlat) continue;
      IndexOptions options = flags.options;
      options.kind = kind;
      Clock::time_point start = Clock::now();
      absl::StatusOr<std::unique_ptr<VectorIndex>> index = VectorIndex::Create(flags.dim, options);
      if (!index.ok()) return Fail(index.status());
      if (absl::Status status = (*index)->Add(ids, vectors); !status.ok()) return Fail(status);
      const double build_s = Seconds(start);

      if (kind == IndexKind::kFlat) {
        absl::StatusOr<std::vector<std::vector<Neighbor>>> all = (*index)->Search(queries, flags.k);
        if (!all.ok()) return Fail(all.status());
        for (int q = 0; q < flags.queries; ++q) {
          for (const Neighbor& neighbor : (*all)[q]) truth[q].insert(neighbor.id);
        }
        if (!measured) continue;
      }

      std::vector<double> latency_ms;
      int64_t found = 0;
      for (int q = 0; q < flags.queries; ++q) {
        const std::span<const float> query =
            std::span(queries).subspan(static_cast<size_t>(q) * flags.dim, flags.dim);
        start = Clock::now();
        absl::StatusOr<std::vector<std::vector<Neighbor>>> result =
            (*index)->Search(query, flags.k);
        latency_ms.push_back(1e3 * Seconds(start));
        if (!result.ok()) return Fail(result.status());
        for (const Neighbor& neighbor : (*result)[0]) found += truth[q].count(neighbor.id);
      }
      double mean_ms = 0;
      for (double ms : latency_ms) mean_ms += ms / latency_ms.size();
      std::printf("%10lld  %-5s  %9.2f  %9.3f  %9.3f  %9.3f  %9.4f\n", static_cast<long long>(n),
                  std::string(silo::retrieval::IndexKindName(kind)).c_str(), build_s,
                  Percentile(latency_ms, 0.50), Percentile(latency_ms, 0.99), mean_ms,
                  static_cast<double>(found) / (static_cast<double>(flags.queries) * flags.k));
      std::fflush(stdout);
    }
  }
  return 0;
}

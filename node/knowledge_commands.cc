#include "node/knowledge_commands.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "node/node_config.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"

namespace silo::node {
namespace {

namespace fs = std::filesystem;

constexpr double kProgressLineSeconds = 5;
constexpr int kProgressBarWidth = 30;
constexpr size_t kExcerptBytes = 240;

absl::StatusOr<std::unique_ptr<retrieval::KnowledgeBase>> OpenKnowledgeBase(
    const NodeConfig& config, bool create_key) {
  SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, LoadNodeKey(config, create_key));
  return retrieval::KnowledgeBase::Open(config.knowledge_base, key);
}

std::string Duration(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  const auto s = static_cast<int64_t>(std::lround(seconds));
  if (s < 60) return StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
}

// "123/500 files (3 unchanged, 0 failed), 2345 chunks, 45.6 chunks/s, ETA 1m23s"
std::string ProgressText(const retrieval::IngestProgress& p) {
  const double rate = p.elapsed_seconds > 0 ? p.chunks_written / p.elapsed_seconds : 0;
  const double per_file = p.files_done > 0 ? p.elapsed_seconds / p.files_done : NAN;
  return absl::StrFormat("%d/%d files (%d unchanged, %d failed), %d chunks, %.1f chunks/s, ETA %s",
                         p.files_done, p.files_total, p.files_skipped, p.files_failed,
                         p.chunks_written, rate,
                         Duration(per_file * static_cast<double>(p.files_total - p.files_done)));
}

}  // namespace

absl::StatusOr<crypto::SecretBytes> LoadNodeKey(const NodeConfig& config, bool create_key) {
  absl::StatusOr<crypto::SecretBytes> key = retrieval::LoadNodeKey(config.node_key_file);
  if (absl::IsNotFound(key.status()) && create_key && !config.node_key_file.empty() &&
      !fs::exists(fs::path(config.knowledge_base.data_dir) / "store")) {
    key = retrieval::GenerateNodeKeyFile(config.node_key_file);
    if (key.ok()) {
      SILO_LOG(Info) << "created the node key file " << config.node_key_file;
    }
  }
  return key;
}

absl::Status RunIngest(const IngestCommandOptions& options, std::ostream& out,
                       std::ostream& progress) {
  if (options.paths.empty()) return absl::InvalidArgumentError("no files or folders to ingest");
  SILO_ASSIGN_OR_RETURN(const NodeConfig config, LoadNodeConfig(options.config_path));
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<retrieval::KnowledgeBase> base,
                        OpenKnowledgeBase(config, /*create_key=*/true));
  double last_line = -kProgressLineSeconds;
  const auto report = [&](const retrieval::IngestProgress& p) {
    if (options.progress_bar) {
      const int filled = p.files_total > 0
                             ? static_cast<int>(kProgressBarWidth * p.files_done / p.files_total)
                             : kProgressBarWidth;
      progress << "\r[" << std::string(filled, '#') << std::string(kProgressBarWidth - filled, '.')
               << "] " << ProgressText(p) << "\x1b[K" << std::flush;
    } else if (p.elapsed_seconds - last_line >= kProgressLineSeconds ||
               p.files_done == p.files_total) {
      last_line = p.elapsed_seconds;
      progress << "ingest: " << ProgressText(p) << std::endl;
    }
  };
  SILO_ASSIGN_OR_RETURN(const retrieval::IngestReport result, base->Ingest(options.paths, report));
  if (options.progress_bar) progress << "\n";
  const retrieval::IngestProgress& p = result.progress;
  out << absl::StrFormat(
      "ingested %d files into %s: %d written, %d unchanged, %d failed; %d chunks in %.1f s "
      "(embedding %.1f s, KV shards %.1f s, kv_shards %s); index: %d vectors\n",
      p.files_total, config.knowledge_base.data_dir,
      p.files_done - p.files_skipped - p.files_failed, p.files_skipped, p.files_failed,
      p.chunks_written, p.elapsed_seconds, result.embed_seconds, result.kv_shard_seconds,
      retrieval::KvShardModeName(config.knowledge_base.kv_shards), base->index().size());
  for (const std::string& failure : result.failures) out << "  failed: " << failure << "\n";
  if (!result.failures.empty()) {
    return absl::DataLossError(StrCat(result.failures.size(), " file(s) could not be ingested"));
  }
  return absl::OkStatus();
}

absl::Status RunSearch(const SearchCommandOptions& options, std::ostream& out) {
  SILO_ASSIGN_OR_RETURN(const NodeConfig config, LoadNodeConfig(options.config_path));
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<retrieval::KnowledgeBase> base,
                        OpenKnowledgeBase(config, /*create_key=*/false));
  SILO_ASSIGN_OR_RETURN(const std::vector<retrieval::SearchHit> hits,
                        base->Search(options.question, options.k));
  if (hits.empty()) out << "no chunks: the knowledge base is empty (run silo-node ingest)\n";
  for (size_t i = 0; i < hits.size(); ++i) {
    const retrieval::SearchHit& hit = hits[i];
    std::string excerpt = hit.text.substr(0, kExcerptBytes);
    // Cut at a character boundary and keep it on one line.
    while (!excerpt.empty() && (static_cast<unsigned char>(excerpt.back()) & 0xC0) == 0x80) {
      excerpt.pop_back();
    }
    if (!excerpt.empty() && static_cast<unsigned char>(excerpt.back()) >= 0xC0) excerpt.pop_back();
    for (char& c : excerpt) {
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    }
    out << absl::StrFormat("%d. %.3f  %s [bytes %d-%d]  %s\n   %s%s\n", i + 1, hit.score,
                           hit.source_path, hit.begin_byte, hit.end_byte, hit.title, excerpt,
                           hit.text.size() > excerpt.size() ? " ..." : "");
  }
  return absl::OkStatus();
}

}  // namespace silo::node

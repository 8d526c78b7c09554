// silo-chunker-bench: chunking throughput over a folder of documents (every .txt, .md,
// .markdown, .rst, .rst.txt, .html and .htm file below it), with the decoder model's tokenizer.
//
//   silo-chunker-bench --root DIR [--model FILE.gguf] [--max-tokens 256] [--overlap 32] [--print]
//
// --print writes every chunk (id, title, byte range, tokens, text) to stdout, to inspect cuts.
// FILE defaults to $SILO_MODELS_DIR/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf,
// else the same under models/. Prints files, bytes, chunks, tokens and the rate (one thread).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf_file.h"
#include "engine/tokenizer.h"
#include "retrieval/chunker.h"

namespace {

struct Flags {
  std::string root;
  std::string model;
  int max_tokens = 256;
  int overlap = 32;
  bool print = false;
};

bool ParseInt(std::string_view text, int* out) {
  char* end = nullptr;
  const std::string copy(text);
  const long value = std::strtol(copy.c_str(), &end, 10);
  if (end == copy.c_str() || *end != '\0' || value < 0 || value > 1'000'000) return false;
  *out = static_cast<int>(value);
  return true;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--root" && has_value) {
      flags->root = argv[++i];
    } else if (arg == "--model" && has_value) {
      flags->model = argv[++i];
    } else if (arg == "--max-tokens" && has_value) {
      if (!ParseInt(argv[++i], &flags->max_tokens)) return false;
    } else if (arg == "--overlap" && has_value) {
      if (!ParseInt(argv[++i], &flags->overlap)) return false;
    } else if (arg == "--print") {
      flags->print = true;
    } else {
      return false;
    }
  }
  if (flags->model.empty()) {
    const char* dir = std::getenv("SILO_MODELS_DIR");
    flags->model = std::string(dir != nullptr && *dir != '\0' ? dir : "models") +
                   "/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
  }
  return !flags->root.empty();
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: silo-chunker-bench --root DIR [--model FILE.gguf] [--max-tokens 256] "
                 "[--overlap 32] [--print]\n");
    return 2;
  }
  absl::StatusOr<silo::engine::GgufFile> gguf = silo::engine::GgufFile::Open(flags.model);
  if (!gguf.ok()) {
    std::fprintf(stderr, "%s\n", gguf.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<silo::engine::Tokenizer> tokenizer = silo::engine::Tokenizer::FromGguf(*gguf);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<silo::retrieval::Chunker> chunker = silo::retrieval::Chunker::Create(
      *tokenizer, {.max_tokens = flags.max_tokens, .overlap_tokens = flags.overlap});
  if (!chunker.ok()) {
    std::fprintf(stderr, "%s\n", chunker.status().ToString().c_str());
    return 1;
  }

  std::error_code error;
  std::vector<std::string> paths;
  for (auto it = std::filesystem::recursive_directory_iterator(flags.root, error);
       !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    if (it->is_regular_file(error) &&
        silo::retrieval::DocumentFormatFromPath(it->path().string()).ok()) {
      paths.push_back(it->path().string());
    }
  }
  if (error) {
    std::fprintf(stderr, "%s: %s\n", flags.root.c_str(), error.message().c_str());
    return 1;
  }
  std::sort(paths.begin(), paths.end());

  int64_t n_bytes = 0;
  int64_t n_chunks = 0;
  int64_t n_tokens = 0;
  int32_t most_tokens = 0;
  int n_failed = 0;
  const auto begin = std::chrono::steady_clock::now();
  for (const std::string& path : paths) {
    absl::StatusOr<std::vector<silo::retrieval::Chunk>> chunks =
        chunker->ChunkFile(flags.root, path);
    if (!chunks.ok()) {
      std::fprintf(stderr, "%s\n", chunks.status().ToString().c_str());
      ++n_failed;
      continue;
    }
    n_bytes += static_cast<int64_t>(std::filesystem::file_size(path, error));
    n_chunks += static_cast<int64_t>(chunks->size());
    for (const silo::retrieval::Chunk& chunk : *chunks) {
      n_tokens += chunk.n_tokens;
      most_tokens = std::max(most_tokens, chunk.n_tokens);
      if (flags.print) {
        std::printf("=== %s  [%s]  bytes [%lld, %lld)  %d tokens\n%s\n", chunk.id.c_str(),
                    chunk.title.c_str(), static_cast<long long>(chunk.begin),
                    static_cast<long long>(chunk.end), chunk.n_tokens, chunk.text.c_str());
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  std::printf(
      "files %zu (failed %d)  bytes %lld  chunks %lld  tokens %lld (largest chunk %d)\n"
      "time %.3f s  %.2f MB/s  %.0f chunks/s\n",
      paths.size(), n_failed, static_cast<long long>(n_bytes), static_cast<long long>(n_chunks),
      static_cast<long long>(n_tokens), most_tokens, seconds, n_bytes / seconds / 1e6,
      n_chunks / seconds);
  return n_failed == 0 ? 0 : 1;
}

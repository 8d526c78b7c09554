// silo-embedder-bench: sentence embedding throughput of the CPU embedder on a batch of typical
// sentences (8 to 25 words, questions and statements), one Embed call per repetition.
//
//   silo-embedder-bench [--model DIR] [--batch 64] [--threads 2] [--repetitions 5]
//
// DIR defaults to $SILO_MODELS_DIR/all-minilm-l6-v2, else models/all-minilm-l6-v2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "retrieval/embedder.h"

namespace {

struct Flags {
  std::string model;
  int batch = 64;
  int threads = 2;
  int repetitions = 5;
};

bool ParseInt(std::string_view text, int min, int* out) {
  char* end = nullptr;
  const std::string copy(text);
  const long value = std::strtol(copy.c_str(), &end, 10);
  if (end == copy.c_str() || *end != '\0' || value < min || value > 1'000'000) return false;
  *out = static_cast<int>(value);
  return true;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--model" && has_value) {
      flags->model = argv[++i];
    } else if (arg == "--batch" && has_value) {
      if (!ParseInt(argv[++i], 1, &flags->batch)) return false;
    } else if (arg == "--threads" && has_value) {
      if (!ParseInt(argv[++i], 0, &flags->threads)) return false;
    } else if (arg == "--repetitions" && has_value) {
      if (!ParseInt(argv[++i], 1, &flags->repetitions)) return false;
    } else {
      return false;
    }
  }
  if (flags->model.empty()) {
    const char* dir = std::getenv("SILO_MODELS_DIR");
    flags->model =
        std::string(dir != nullptr && *dir != '\0' ? dir : "models") + "/all-minilm-l6-v2";
  }
  return true;
}

// Typical retrieval queries and passages.
const char* const kSentences[] = {
    "What are the side effects of long-term proton pump inhibitor use in elderly patients?",
    "The bank must report suspicious transactions above the threshold within thirty days.",
    "How do I reset the password of my account if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "Which antibiotics are recommended for community-acquired pneumonia in adults?",
    "The committee approved the revised compliance manual at its quarterly meeting.",
    "Explain the difference between a mutex and a semaphore in operating systems.",
    "Patients with type 2 diabetes should have their HbA1c measured every three months.",
    "The new regulation requires two-factor authentication for all online payments.",
    "Where can I find the guidelines for handling hazardous chemicals in the laboratory?",
    "A federated search returns results from several institutions without sharing documents.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "What is the recommended dose of amoxicillin for a child weighing twenty kilograms?",
    "Interest rates rose sharply after the central bank announced its new policy.",
    "Sentence embeddings map text to vectors so that similar meanings lie close together.",
    "How long does it take for a wire transfer to reach a bank account abroad?",
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: silo-embedder-bench [--model DIR] [--batch N] [--threads N] "
                 "[--repetitions N]\n");
    return 2;
  }
  auto embedder = silo::retrieval::Embedder::Open(flags.model, {.n_threads = flags.threads});
  if (!embedder.ok()) {
    std::fprintf(stderr, "silo-embedder-bench: %s\n", embedder.status().ToString().c_str());
    return 1;
  }
  constexpr int kNumSentences = sizeof(kSentences) / sizeof(kSentences[0]);
  std::vector<std::string> batch;
  int64_t n_tokens = 0;
  for (int i = 0; i < flags.batch; ++i) {
    batch.emplace_back(kSentences[i % kNumSentences]);
    n_tokens += static_cast<int64_t>((*embedder)->tokenizer().Encode(batch.back(), 512).size());
  }

  std::vector<double> rates;
  for (int r = 0; r <= flags.repetitions; ++r) {  // the first run warms up
    const auto start = std::chrono::steady_clock::now();
    auto vectors = (*embedder)->Embed(batch);
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    if (!vectors.ok()) {
      std::fprintf(stderr, "silo-embedder-bench: %s\n", vectors.status().ToString().c_str());
      return 1;
    }
    if (r > 0) rates.push_back(flags.batch / seconds.count());
  }
  const double rate = Median(rates);
  std::printf("model %s: dim %d, max %d tokens\n", flags.model.c_str(), (*embedder)->dim(),
              (*embedder)->max_tokens());
  std::printf("batch %d sentences (%.1f tokens each), threads %d, %d repetitions (median)\n",
              flags.batch, static_cast<double>(n_tokens) / flags.batch, flags.threads,
              flags.repetitions);
  std::printf("embedding: %.1f sentences/s, %.0f tokens/s\n", rate,
              rate * static_cast<double>(n_tokens) / flags.batch);
  return 0;
}

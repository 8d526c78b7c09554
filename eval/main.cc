// silo-eval: the evaluation harness. Subcommands:
//   retrieval     recall@k of the Python FAQ's answers over the Python documentation
//   bench fedrag  TTFT and per-token latency of LOCAL, CENTRALIZED and FEDRAG, with a shaper
//   bench dragon  per-token latency and TTFT of DRAGON and its comparisons against RTT
//   utility       gold-answer perplexity over the Python FAQ: --mode fedrag (LOCAL, CENTRALIZED,
//                 FEDRAG) or --mode dragon (per chunk count; greedy DRAGON against its target)
//   privacy       attacks on what each curious node observes, per privacy setting; the default
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "eval/dragon_eval.h"
#include "eval/fedrag_bench.h"
#include "eval/fedrag_utility.h"
#include "eval/privacy_eval.h"
#include "eval/retrieval_eval.h"

// CLI11 throws only for a malformed command definition (a bug); parse errors are handled by
// CLI11_PARSE.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  CLI::App app{"silo-eval: utility, speed and privacy measurements of silo"};
  app.require_subcommand(1);

  const std::string sources = "/usr/share/doc/python3.11/html/_sources";
  silo::eval::RetrievalEvalOptions retrieval;
  retrieval.docs = {sources};
  retrieval.faq_dir = sources + "/faq";
  silo::retrieval::KnowledgeBaseOptions& kb = retrieval.knowledge_base;
  kb.data_dir = "build/eval/python-docs";
  kb.decoder_model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
  kb.embedder_model = "models/all-minilm-l6-v2";
  kb.kv_shards = silo::retrieval::KvShardMode::kOff;
  std::string index_kind = "flat";
  std::string json_path;
  bool per_question = false;
  CLI::App* retrieval_command = app.add_subcommand(
      "retrieval", "Ingest the Python documentation and print recall@1/5/10 of the FAQ answers");
  retrieval_command->add_option("--docs", retrieval.docs, "Files and folders to ingest")
      ->capture_default_str();
  retrieval_command->add_option("--faq", retrieval.faq_dir, "Folder of the FAQ's *.rst.txt")
      ->capture_default_str();
  retrieval_command
      ->add_option("--data-dir", kb.data_dir, "Knowledge base folder, kept between runs")
      ->capture_default_str();
  retrieval_command->add_option("--decoder", kb.decoder_model, "Decoder (chunks' tokens)")
      ->capture_default_str();
  retrieval_command->add_option("--embedder", kb.embedder_model, "Sentence embedder folder")
      ->capture_default_str();
  retrieval_command->add_option("--index", index_kind, "flat, ivf or hnsw")->capture_default_str();
  retrieval_command->add_option("--chunk-tokens", kb.chunking.max_tokens)->capture_default_str();
  retrieval_command->add_option("--chunk-overlap", kb.chunking.overlap_tokens)
      ->capture_default_str();
  retrieval_command->add_option("--threads", kb.threads, "0: every core")->capture_default_str();
  retrieval_command->add_option("--json", json_path, "Also write the result as JSON here");
  retrieval_command->add_flag("--per-question", per_question, "Print every question's rank");

  CLI::App* bench_command = app.add_subcommand("bench", "Speed measurements");
  bench_command->require_subcommand(1);
  silo::eval::FedRagBenchOptions fedrag;
  CLI::App* fedrag_command = bench_command->add_subcommand(
      "fedrag",
      "TTFT and per-token latency of local, centralized and FedRAG with three owners, on "
      "loopback and with the shaper between the querier and the owners");
  fedrag_command->add_option("--work-dir", fedrag.federation.work_dir, "Certificates, stores; kept")
      ->capture_default_str();
  fedrag_command->add_option("--rtt-ms", fedrag.rtt_ms, "Round trips added to the owners")
      ->capture_default_str();
  fedrag_command->add_option("--questions", fedrag.n_questions, "Questions per row")
      ->capture_default_str();
  fedrag_command->add_option("--max-tokens", fedrag.max_tokens)->capture_default_str();
  fedrag_command->add_option("-k,--top-k", fedrag.top_k)->capture_default_str();
  fedrag_command->add_option("--threads", fedrag.federation.threads, "Threads per node")
      ->capture_default_str();
  fedrag_command->add_option("--decoder", fedrag.federation.decoder_model)->capture_default_str();

  silo::eval::DragonBenchOptions dragon_bench;
  CLI::App* dragon_bench_command = bench_command->add_subcommand(
      "dragon",
      "Per-token latency and TTFT of device-only, sync, sequence and DRAGON (aggregator on the "
      "device, on the cloud, scheduled) at several RTTs between device and cloud; latency.png");
  dragon_bench_command->add_option("--questions", dragon_bench.n_questions)->capture_default_str();
  dragon_bench_command->add_option("--max-tokens", dragon_bench.max_tokens)->capture_default_str();
  dragon_bench_command->add_option("--chunks", dragon_bench.n_chunks, "Chunks, half per side")
      ->capture_default_str();
  dragon_bench_command->add_option("--rtt-ms", dragon_bench.rtts_ms)
      ->delimiter(',')
      ->capture_default_str();
  dragon_bench_command->add_option("--corpus-dir", dragon_bench.lab.corpus_dir)
      ->capture_default_str();
  dragon_bench_command->add_option("--out", dragon_bench.out_dir)->capture_default_str();

  silo::eval::FedRagUtilityOptions utility;
  silo::eval::DragonUtilityOptions dragon_utility;
  std::string utility_mode = "fedrag";
  CLI::App* utility_command = app.add_subcommand(
      "utility",
      "Gold-answer perplexity over the Python FAQ: --mode fedrag (local, centralized, FedRAG) or "
      "--mode dragon (none, device-only, cloud-only, centralized RAG, DRAGON per chunk count, "
      "and greedy DRAGON against centralized-mixture)");
  utility_command->add_option("--mode", utility_mode, "fedrag or dragon")->capture_default_str();
  utility_command->add_option("--chunks", dragon_utility.chunk_counts, "dragon: chunk counts")
      ->delimiter(',')
      ->capture_default_str();
  utility_command->add_option("--corpus-dir", dragon_utility.lab.corpus_dir, "dragon: FAQ store")
      ->capture_default_str();
  utility_command->add_option("--work-dir", utility.federation.work_dir)->capture_default_str();
  utility_command->add_option("--questions", utility.n_questions)->capture_default_str();
  utility_command->add_option("--max-tokens", utility.max_tokens, "Gold-answer tokens scored")
      ->capture_default_str();
  utility_command->add_option("-k,--top-k", utility.top_k)->capture_default_str();
  utility_command->add_option("--threads", utility.federation.threads, "Threads per node")
      ->capture_default_str();

  silo::eval::PrivacyEvalOptions privacy;
  bool no_cost = false;
  CLI::App* privacy_command = app.add_subcommand(
      "privacy",
      "Attack what the compute node and the owners observe under every privacy setting; write "
      "JSON, CSV, Markdown and plots; choose the default");
  privacy_command
      ->add_option("--work-dir", privacy.federation.work_dir,
                   "LocalFederation of the end-to-end cost runs")
      ->capture_default_str();
  privacy_command->add_option("--corpus-dir", privacy.corpus_dir, "Store of the attack corpus")
      ->capture_default_str();
  privacy_command->add_option("--out", privacy.out_dir, "Folder of the reports")
      ->capture_default_str();
  privacy_command->add_option("--questions", privacy.n_questions, "FAQ questions attacked")
      ->capture_default_str();
  privacy_command->add_option("-k,--top-k", privacy.top_k)->capture_default_str();
  privacy_command->add_option("--decode-steps", privacy.decode_steps, "Decode steps recorded")
      ->capture_default_str();
  privacy_command
      ->add_option("--score-steps", privacy.score_steps,
                   "Of them, the steps attacked by exact-scores")
      ->capture_default_str();
  privacy_command
      ->add_option("--vocab", privacy.vocab,
                   "Attacker's candidate tokens [0, n); 0: the whole vocabulary")
      ->capture_default_str();
  privacy_command->add_option("--threads", privacy.threads, "0: every core")->capture_default_str();
  privacy_command->add_flag("--smoke", privacy.smoke,
                            "Baselines, the published setting, the default and OWNER only");
  privacy_command->add_option("--only", privacy.only,
                              "Only the settings whose name contains this text");
  std::string from_json;
  privacy_command->add_option("--from-json", from_json,
                              "Rewrite the reports of an earlier run's privacy.json (no attacks)");
  privacy_command->add_flag("--no-cost", no_cost, "Skip the end-to-end utility and cost runs");
  privacy_command->add_option("--costs-from", privacy.costs_from,
                              "Take the utility and cost figures from an earlier privacy.json");
  privacy_command->add_option("--inversion", privacy.inversion_results,
                              "Add the learned inversion's inversion.json to the report");
  privacy_command->add_option("--cost-questions", privacy.cost_questions)->capture_default_str();
  privacy_command->add_option("--cost-tokens", privacy.cost_tokens)->capture_default_str();
  privacy_command
      ->add_option("--pool", privacy.embedding_pool, "Sentences in the embedding-inversion pool")
      ->capture_default_str();

  std::string export_dir = "build/eval/inversion";
  int export_questions = 16;
  CLI::App* export_command = app.add_subcommand(
      "privacy-export",
      "Write the rows a compute node receives, with their tokens, for the learned inversion "
      "(eval/learned_inversion.py, on the GPU machine)");
  export_command->add_option("--out", export_dir)->capture_default_str();
  export_command->add_option("--sessions", export_questions, "FAQ questions, one session each")
      ->capture_default_str();
  export_command->add_option("--corpus-dir", privacy.corpus_dir)->capture_default_str();
  export_command->add_option("-k,--top-k", privacy.top_k)->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  if (export_command->parsed()) {
    if (const absl::Status status =
            silo::eval::ExportInversionData(privacy, export_dir, export_questions, std::cerr);
        !status.ok()) {
      std::cerr << "silo-eval privacy-export: " << status << "\n";
      return 1;
    }
    return 0;
  }

  if (privacy_command->parsed()) {
    privacy.measure_cost = !no_cost;
    if (const absl::StatusOr<silo::eval::PrivacyEvalResult> result =
            from_json.empty() ? silo::eval::RunPrivacyEval(privacy, std::cout, std::cerr)
                              : silo::eval::RewritePrivacyReports(privacy, from_json, std::cout);
        !result.ok()) {
      std::cerr << "silo-eval privacy: " << result.status() << "\n";
      return 1;
    }
    return 0;
  }

  if (utility_command->parsed() && utility_mode == "dragon") {
    dragon_utility.n_questions = utility.n_questions;
    dragon_utility.max_tokens = utility.max_tokens;
    if (const absl::StatusOr<silo::eval::DragonUtilityResult> result =
            silo::eval::RunDragonUtility(dragon_utility, std::cout, std::cerr);
        !result.ok()) {
      std::cerr << "silo-eval utility --mode dragon: " << result.status() << "\n";
      return 1;
    }
    return 0;
  }
  if (utility_command->parsed() && utility_mode != "fedrag") {
    std::cerr << "silo-eval utility: --mode must be fedrag or dragon\n";
    return 2;
  }

  if (dragon_bench_command->parsed()) {
    if (const absl::Status status = silo::eval::RunDragonBench(dragon_bench, std::cout, std::cerr);
        !status.ok()) {
      std::cerr << "silo-eval bench dragon: " << status << "\n";
      return 1;
    }
    return 0;
  }

  if (utility_command->parsed()) {
    if (const absl::Status status = silo::eval::RunFedRagUtility(utility, std::cout, std::cerr);
        !status.ok()) {
      std::cerr << "silo-eval utility: " << status << "\n";
      return 1;
    }
    return 0;
  }

  if (fedrag_command->parsed()) {
    if (const absl::Status status = silo::eval::RunFedRagBench(fedrag, std::cout, std::cerr);
        !status.ok()) {
      std::cerr << "silo-eval bench fedrag: " << status << "\n";
      return 1;
    }
    return 0;
  }

  if (retrieval_command->parsed()) {
    absl::StatusOr<silo::retrieval::IndexKind> kind = silo::retrieval::ParseIndexKind(index_kind);
    if (!kind.ok()) {
      std::cerr << "silo-eval retrieval: " << kind.status().message() << "\n";
      return 2;
    }
    kb.index.kind = *kind;
    absl::StatusOr<silo::eval::RetrievalEvalResult> result =
        silo::eval::RunRetrievalEval(retrieval, std::cerr);
    if (!result.ok()) {
      std::cerr << "silo-eval retrieval: " << result.status().message() << "\n";
      return 1;
    }
    silo::eval::PrintRetrievalEval(*result, per_question, std::cout);
    if (!json_path.empty()) {
      std::ofstream(json_path) << silo::eval::RetrievalEvalJson(*result);
    }
  }
  return 0;
}

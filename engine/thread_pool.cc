#include "engine/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace silo::engine {
namespace {

// How long an idle worker polls for the next job before it blocks, and how long the caller
// polls for the end of a job before it yields between polls.
constexpr auto kWorkerSpin = std::chrono::microseconds(200);
constexpr auto kCallerSpin = std::chrono::microseconds(50);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// claim_ packs the job's generation (high 32 bits) and the number of its ranges not yet claimed
// (low 32 bits), so that a worker that wakes after its job has ended cannot claim from the next.
constexpr uint64_t Claim(uint64_t generation, uint64_t remaining) {
  return (generation << 32) | remaining;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(n_threads > 0
                     ? n_threads
                     : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stop_.store(true, std::memory_order_seq_cst);
    generation_.fetch_add(1, std::memory_order_seq_cst);
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  if (n == 1 || n_threads_ == 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  const int64_t n_ranges = std::min<int64_t>(n, n_threads_);
  fn_ = &fn;
  n_ = n;
  n_ranges_ = n_ranges;
  ranges_done_.store(0, std::memory_order_relaxed);
  const uint64_t generation = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store(Claim(generation & 0xffffffffu, static_cast<uint64_t>(n_ranges)),
               std::memory_order_release);
  generation_.store(generation, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    // A worker counted in sleepers_ either sees the new generation when it checks under the
    // mutex, or is already waiting and gets this notification.
    { std::lock_guard<std::mutex> lock(sleep_mutex_); }
    wake_.notify_all();
  }
  RunRanges(generation);
  const auto spin_until = std::chrono::steady_clock::now() + kCallerSpin;
  for (int polls = 0; ranges_done_.load(std::memory_order_acquire) != n_ranges; ++polls) {
    if (polls < 64 || std::chrono::steady_clock::now() < spin_until) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
  fn_ = nullptr;
}

void ThreadPool::RunRanges(uint64_t generation) {
  const uint64_t tag = generation & 0xffffffffu;
  uint64_t claim = claim_.load(std::memory_order_acquire);
  while ((claim >> 32) == tag && (claim & 0xffffffffu) != 0) {
    if (!claim_.compare_exchange_weak(claim, claim - 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;
    }
    // The job cannot end before this range is done, so its fields are stable here.
    const int64_t range = static_cast<int64_t>((claim & 0xffffffffu) - 1);
    const int64_t begin = n_ * range / n_ranges_;
    const int64_t end = n_ * (range + 1) / n_ranges_;
    (*fn_)(begin, end);
    ranges_done_.fetch_add(1, std::memory_order_acq_rel);
    claim = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;  // the generation at construction: every later job or stop changes it
  while (true) {
    const auto spin_until = std::chrono::steady_clock::now() + kWorkerSpin;
    uint64_t current = generation_.load(std::memory_order_acquire);
    for (int polls = 0; current == seen; ++polls) {
      if ((polls & 63) == 63 && std::chrono::steady_clock::now() >= spin_until) break;
      CpuRelax();
      current = generation_.load(std::memory_order_acquire);
    }
    if (current == seen) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      current = generation_.load(std::memory_order_acquire);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = current;
    RunRanges(current);
  }
}

}  // namespace silo::engine

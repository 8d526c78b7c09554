// A fixed set of worker threads for the CPU kernels: ParallelFor splits an index range over them
// and the calling thread, and returns when every part is done.
//
// Made for many short calls (decode runs ~200 matrix products of ~50 µs per token): workers are
// created once, spin briefly on a generation counter after each job, then block on a condition
// variable; the caller wakes them only when some are blocked.
//
// Thread-safety: ParallelFor may be called from any thread; calls from several threads are
// serialized (one job at a time). It is not reentrant: fn must not call ParallelFor on the same
// pool.
#ifndef SILO_ENGINE_THREAD_POOL_H_
#define SILO_ENGINE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace silo::engine {

class ThreadPool {
 public:
  // n_threads counts the calling thread, so n_threads − 1 workers are started. 0 or negative:
  // std::thread::hardware_concurrency() (at least 1).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads that run a job, the caller included.
  int size() const { return n_threads_; }

  // Runs fn(begin, end) over [0, n) split into contiguous, disjoint ranges that cover it exactly
  // (about one per thread; each range is run by one thread) and returns when all are done. n <= 0
  // runs nothing; n == 1 or a pool of one thread runs fn(0, n) on the caller.
  void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void WorkerLoop();
  // Claims and runs ranges of job `generation` until none is left.
  void RunRanges(uint64_t generation);

  const int n_threads_;
  std::vector<std::thread> workers_;

  std::mutex call_mutex_;  // serializes ParallelFor callers

  // The current job, published by a release increment of generation_.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t n_ranges_ = 0;
  alignas(64) std::atomic<uint64_t> claim_{0};  // see thread_pool.cc
  alignas(64) std::atomic<int64_t> ranges_done_{0};

  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_THREAD_POOL_H_

#include "engine/thread_pool.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace silo::engine {
namespace {

// Runs ParallelFor(n) and checks that every index in [0, n) was visited exactly once, by
// non-empty, disjoint ranges.
void ExpectCoversOnce(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> visits(static_cast<size_t>(n));
  std::atomic<int> calls{0};
  pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
    EXPECT_LT(begin, end);
    EXPECT_GE(begin, 0);
    EXPECT_LE(end, n);
    for (int64_t i = begin; i < end; ++i) visits[i].fetch_add(1);
    calls.fetch_add(1);
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[i].load(), 1) << "index " << i << " of " << n;
  EXPECT_LE(calls.load(), std::max<int64_t>(n, 1));
}

TEST(ThreadPool, SizeCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(ThreadPool(0).size(), std::max(1, hardware));
  EXPECT_EQ(ThreadPool(-2).size(), std::max(1, hardware));
}

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (const int n_threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(n_threads);
    for (const int64_t n : {1, 2, 3, 5, 6, 7, 8, 64, 1000, 4097}) {
      SCOPED_TRACE(::testing::Message() << n_threads << " threads, n " << n);
      ExpectCoversOnce(pool, n);
    }
  }
}

TEST(ThreadPool, FewerIndicesThanThreads) {
  ThreadPool pool(8);
  for (int64_t n = 1; n < 8; ++n) ExpectCoversOnce(pool, n);
}

TEST(ThreadPool, EmptyRangeRunsNothing) {
  ThreadPool pool(3);
  bool called = false;
  pool.ParallelFor(0, [&](int64_t, int64_t) { called = true; });
  pool.ParallelFor(-5, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPool, UsesSeveralThreads) {
  ThreadPool pool(2);
  std::atomic<int> inside{0};
  std::atomic<bool> met{false};
  // Both ranges wait (bounded) until the other is running: only possible on two threads.
  pool.ParallelFor(2, [&](int64_t, int64_t) {
    inside.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (inside.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (inside.load() == 2) met.store(true);
  });
  EXPECT_TRUE(met.load());
}

TEST(ThreadPool, ManyConsecutiveCalls) {
  ThreadPool pool(3);
  std::vector<int64_t> data(1000, 0);
  for (int call = 0; call < 20000; ++call) {
    const int64_t n = 1 + call % 997;
    pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) data[i] += 1;
    });
  }
  int64_t total = 0;
  for (const int64_t v : data) total += v;
  int64_t expected = 0;
  for (int call = 0; call < 20000; ++call) expected += 1 + call % 997;
  EXPECT_EQ(total, expected);
}

TEST(ThreadPool, WakesWorkersThatWentToSleep) {
  ThreadPool pool(3);
  for (int round = 0; round < 3; ++round) {
    // Long enough for idle workers to stop spinning and block.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ExpectCoversOnce(pool, 300);
  }
}

TEST(ThreadPool, SerializesCallersFromSeveralThreads) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  callers.reserve(3);
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int call = 0; call < 2000; ++call) {
        pool.ParallelFor(10, [&](int64_t begin, int64_t end) { total.fetch_add(end - begin); });
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(total.load(), 3 * 2000 * 10);
}

}  // namespace
}  // namespace silo::engine

// SequencePool from many threads (run under ThreadSanitizer in CI): distinct
// sequences streamed concurrently, sequences added and released meanwhile,
// and batched decode on a thread pool next to a thread streaming another
// sequence. Every output is checked against a standalone cache.
#include <atomic>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/pool.hpp>
#include <sinkkv/sinkkv.hpp>

#include "support/streams.hpp"

namespace sinkkv {
namespace {

using testing::token_rows;

CacheConfig thread_cache_config() {
  CacheConfig config;
  config.num_layers = 2;
  config.num_kv_heads = 2;
  config.num_query_heads = 4;
  config.head_dim = 16;
  config.num_sinks = 2;
  config.window = 29;
  config.max_chunk = 3;
  return config;
}

PoolConfig thread_pool_config() {
  PoolConfig config;
  config.cache = thread_cache_config();
  config.page_tokens = 4;
  config.max_pages = 8 * 2 * 2 * 9;  // 8 full sequences
  config.max_sequences = 8;
  return config;
}

// CpuKernel blocks a page-split cache differently from a contiguous one:
// equal up to float summation order.
bool close(const std::vector<float>& got, const std::vector<float>& want) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= 2e-5f * (1.0f + std::abs(want[i])))) return false;
  }
  return got.size() == want.size();
}

// Streams `tokens` tokens (steps of 1..3) through a new sequence of `pool`
// and a standalone cache; returns the number of mismatching outputs.
int stream_one(SequencePool<float>& pool, std::uint64_t seed, int tokens) {
  const CacheConfig c = thread_cache_config();
  SinkKVCache<float> alone(c);
  const SequenceId id = pool.add();
  int mismatches = 0;
  for (std::uint64_t t = 0; t < static_cast<std::uint64_t>(tokens);) {
    const int n = 1 + static_cast<int>((seed + t) % 3);
    for (int layer = 0; layer < c.num_layers; ++layer) {
      std::vector<float> k, q;
      for (int i = 0; i < n; ++i) {
        const std::vector<float> kr = token_rows(seed, t + i, layer, 32);
        const std::vector<float> qr = token_rows(seed, t + i, 10 + layer, 64);
        k.insert(k.end(), kr.begin(), kr.end());
        q.insert(q.end(), qr.begin(), qr.end());
      }
      pool.append(id, layer, tokens_view(k.data(), n, 2, 16), tokens_view(k.data(), n, 2, 16));
      alone.append(layer, tokens_view(k.data(), n, 2, 16), tokens_view(k.data(), n, 2, 16));
      std::vector<float> got(q.size()), want(q.size());
      pool.attend(id, layer, tokens_view(q.data(), n, 4, 16), tokens_output_view(got.data(), n, 4, 16), CpuKernel{});
      alone.attend(layer, tokens_view(q.data(), n, 4, 16), tokens_output_view(want.data(), n, 4, 16), CpuKernel{});
      if (!close(got, want)) ++mismatches;
    }
    t += static_cast<std::uint64_t>(n);
  }
  pool.release(id);
  return mismatches;
}

// Two threads releasing the same id at once (a client abort racing the
// normal end of a stream): exactly one succeeds, the other gets
// sinkkv::Error, and the pages come back once. A third thread adds,
// looks the id up and releases meanwhile, reusing slots. Under
// ThreadSanitizer this also checks that looking up an id never races with
// add() or release() (the check once read a slot's liveness outside the
// mutex).
TEST(SequencePoolThreads, ConcurrentReleasesOfOneIdFreeItsPagesOnce) {
  SequencePool<float> pool(thread_pool_config());
  const std::int64_t all_pages = pool.free_pages();
  const std::vector<float> rows(32, 0.5f);
  for (int round = 0; round < 200; ++round) {
    const SequenceId id = pool.add();
    for (int layer = 0; layer < 2; ++layer) {
      pool.append(id, layer, tokens_view(rows.data(), 1, 2, 16), tokens_view(rows.data(), 1, 2, 16));
    }
    std::atomic<int> released{0}, rejected{0};
    auto release = [&] {
      try {
        pool.release(id);
        released.fetch_add(1);
      } catch (const Error&) {
        rejected.fetch_add(1);
      }
    };
    std::thread churn([&] {
      const SequenceId other = pool.add();
      (void)pool.contains(id);  // true or false by timing; must not race (TSan)
      pool.release(other);
    });
    std::thread first(release), second(release);
    first.join();
    second.join();
    churn.join();
    ASSERT_EQ(released.load(), 1) << "round " << round;
    ASSERT_EQ(rejected.load(), 1) << "round " << round;
    ASSERT_EQ(pool.free_pages(), all_pages) << "round " << round;
    ASSERT_EQ(pool.num_sequences(), 0);
  }
}

TEST(SequencePoolThreads, DistinctSequencesStreamFromManyThreadsAtOnce) {
  SequencePool<float> pool(thread_pool_config());
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 3; ++round) mismatches += stream_one(pool, 100 * w + round, 120);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(pool.num_sequences(), 0);
  EXPECT_EQ(pool.free_pages(), pool.max_pages());
}

TEST(SequencePoolThreads, BatchedDecodeOnAThreadPoolBesideAnotherStreamingThread) {
  SequencePool<float> pool(thread_pool_config());
  const CacheConfig c = thread_cache_config();
  constexpr int kSequences = 5;
  std::vector<SequenceId> ids;
  std::vector<std::unique_ptr<SinkKVCache<float>>> alone;
  for (int s = 0; s < kSequences; ++s) {
    ids.push_back(pool.add());
    alone.push_back(std::make_unique<SinkKVCache<float>>(c));
  }
  std::atomic<int> side_mismatches{0};
  std::thread side([&] { side_mismatches += stream_one(pool, 77, 200); });
  ThreadPool workers(2);
  CpuKernel kernel;
  int mismatches = 0;
  for (std::uint64_t t = 0; t < 60; ++t) {
    for (int layer = 0; layer < c.num_layers; ++layer) {
      std::vector<std::vector<float>> q(kSequences), got(kSequences), want(kSequences);
      std::vector<BatchItem<float, float>> items;
      for (int s = 0; s < kSequences; ++s) {
        const std::vector<float> k = token_rows(s, t, layer, 32);
        q[static_cast<std::size_t>(s)] = token_rows(s, t, 10 + layer, 64);
        pool.append(ids[static_cast<std::size_t>(s)], layer, heads_view(k.data(), 2, 16), heads_view(k.data(), 2, 16));
        alone[static_cast<std::size_t>(s)]->append(layer, heads_view(k.data(), 2, 16), heads_view(k.data(), 2, 16));
        got[static_cast<std::size_t>(s)].assign(64, 0.0f);
        want[static_cast<std::size_t>(s)].assign(64, 0.0f);
        items.push_back({ids[static_cast<std::size_t>(s)], tokens_view(q[static_cast<std::size_t>(s)].data(), 1, 4, 16),
                         tokens_output_view(got[static_cast<std::size_t>(s)].data(), 1, 4, 16)});
        alone[static_cast<std::size_t>(s)]->attend(layer, heads_view(q[static_cast<std::size_t>(s)].data(), 4, 16),
                                                   output_view(want[static_cast<std::size_t>(s)].data(), 4, 16),
                                                   CpuKernel{});
      }
      pool.attend_batch(layer, items.data(), kSequences, kernel, &workers);
      for (int s = 0; s < kSequences; ++s) {
        if (!close(got[static_cast<std::size_t>(s)], want[static_cast<std::size_t>(s)])) ++mismatches;
      }
    }
  }
  side.join();
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(side_mismatches.load(), 0);
}

}  // namespace
}  // namespace sinkkv

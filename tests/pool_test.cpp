// SequencePool: every sequence against a standalone SinkKVCache fed the same
// stream, the page bookkeeping against a reference model, errors, batches.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/pool.hpp>
#include <sinkkv/sinkkv.hpp>

#include "support/streams.hpp"

namespace sinkkv {
namespace {

using testing::token_rows;

template <class Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

CacheConfig pool_cache_config(bool mixed_policies, int max_chunk) {
  CacheConfig config;
  config.num_layers = 2;
  config.num_kv_heads = 2;
  config.num_query_heads = 6;
  config.head_dim = 16;
  config.num_sinks = 3;
  config.window = 37;
  config.max_chunk = max_chunk;
  config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kSplitHalves});
  if (mixed_policies) {
    config.set_head_policy(0, 1, {0, 9});
    config.set_layer_policy(1, {1, 70});
  }
  return config;
}

PoolConfig pool_config(const CacheConfig& cache, std::int64_t max_pages, int page_tokens = 8) {
  PoolConfig config;
  config.cache = cache;
  config.page_tokens = page_tokens;
  config.max_pages = max_pages;
  config.max_sequences = 12;
  return config;
}

// One stream's rows for a step: keys/values/queries of n tokens on a layer.
struct StepRows {
  std::vector<float> keys, queries;
};
StepRows step_rows(const CacheConfig& c, std::uint64_t stream_seed, std::uint64_t first, int n, int layer) {
  StepRows rows;
  for (int i = 0; i < n; ++i) {
    const std::vector<float> k = token_rows(stream_seed, first + i, 2 * layer, c.num_kv_heads * c.head_dim);
    const std::vector<float> q = token_rows(stream_seed, first + i, 2 * layer + 1, c.query_heads() * c.head_dim);
    rows.keys.insert(rows.keys.end(), k.begin(), k.end());
    rows.queries.insert(rows.queries.end(), q.begin(), q.end());
  }
  return rows;
}

// A live sequence of the test: its pool id and the standalone cache that
// shadows it.
struct Shadowed {
  SequenceId id;
  std::uint64_t seed;
  std::unique_ptr<SinkKVCache<float>> alone;
};

// Randomised interleavings of add / release / reset / steps (single tokens
// and chunks) / attend / attend_batch: every output equals the standalone
// cache's bit for bit (ReferenceKernel sums every token in the same order,
// whatever the pages).
template <class Kernel = ReferenceKernel>
void run_interleavings(bool mixed_policies, int max_chunk, unsigned seed, bool use_thread_pool) {
  const CacheConfig cache = pool_cache_config(mixed_policies, max_chunk);
  SequencePool<float> pool(pool_config(cache, 1000));
  ThreadPool threads(1);
  std::mt19937 random(seed);
  std::vector<Shadowed> live;
  std::uint64_t next_seed = 1;
  const int heads = cache.query_heads(), dim = cache.head_dim, kv = cache.num_kv_heads;
  for (int op = 0; op < 300; ++op) {
    const int kind = static_cast<int>(random() % 10);
    if (kind == 0 || live.empty()) {
      if (pool.num_sequences() < 12) {
        live.push_back(Shadowed{pool.add(), next_seed++, std::make_unique<SinkKVCache<float>>(cache)});
      }
      continue;
    }
    Shadowed& s = live[random() % live.size()];
    if (kind == 1) {
      pool.release(s.id);
      s = std::move(live.back());
      live.pop_back();
      continue;
    }
    if (kind == 2) {
      pool.reset(s.id);
      s.alone->reset();
      s.seed = next_seed++;
      continue;
    }
    if (kind <= 6) {  // one sequence, one step, attend every layer on its own
      const int n = 1 + static_cast<int>(random() % static_cast<unsigned>(max_chunk));
      const std::uint64_t first = s.alone->tokens_seen();
      for (int layer = 0; layer < cache.num_layers; ++layer) {
        const StepRows rows = step_rows(cache, s.seed, first, n, layer);
        pool.append(s.id, layer, tokens_view(rows.keys.data(), n, kv, dim), tokens_view(rows.keys.data(), n, kv, dim));
        s.alone->append(layer, tokens_view(rows.keys.data(), n, kv, dim), tokens_view(rows.keys.data(), n, kv, dim));
        std::vector<float> got(static_cast<std::size_t>(n * heads * dim)), want(got.size());
        pool.attend(s.id, layer, tokens_view(rows.queries.data(), n, heads, dim),
                    tokens_output_view(got.data(), n, heads, dim), Kernel{});
        s.alone->attend(layer, tokens_view(rows.queries.data(), n, heads, dim),
                        tokens_output_view(want.data(), n, heads, dim), ReferenceKernel{});
        ASSERT_EQ(got, want) << "op " << op << " sequence " << s.id.value << " layer " << layer << " step of " << n
                             << " at " << first;
      }
      continue;
    }
    // A batch: a random subset steps (single tokens or chunks), then every
    // layer is attended in one call for all of them.
    std::vector<Shadowed*> batch;
    for (Shadowed& candidate : live) {
      if (random() % 2 == 0) batch.push_back(&candidate);
    }
    if (batch.empty()) continue;
    std::vector<int> counts;
    for (std::size_t b = 0; b < batch.size(); ++b) {
      counts.push_back(random() % 2 == 0 ? 1 : 1 + static_cast<int>(random() % static_cast<unsigned>(max_chunk)));
    }
    for (int layer = 0; layer < cache.num_layers; ++layer) {
      std::vector<StepRows> rows;
      std::vector<std::vector<float>> got(batch.size()), want(batch.size());
      std::vector<BatchItem<float, float>> items;
      for (std::size_t b = 0; b < batch.size(); ++b) {
        const int n = counts[b];
        const std::uint64_t first = batch[b]->alone->tokens_seen() - (layer == 0 ? 0 : static_cast<std::uint64_t>(n));
        rows.push_back(step_rows(cache, batch[b]->seed, first, n, layer));
        pool.append(batch[b]->id, layer, tokens_view(rows[b].keys.data(), n, kv, dim),
                    tokens_view(rows[b].keys.data(), n, kv, dim));
        batch[b]->alone->append(layer, tokens_view(rows[b].keys.data(), n, kv, dim),
                                tokens_view(rows[b].keys.data(), n, kv, dim));
        got[b].assign(static_cast<std::size_t>(n * heads * dim), -1.0f);
        want[b].assign(got[b].size(), 0.0f);
      }
      for (std::size_t b = 0; b < batch.size(); ++b) {
        const int n = counts[b];
        items.push_back({batch[b]->id, tokens_view(rows[b].queries.data(), n, heads, dim),
                         tokens_output_view(got[b].data(), n, heads, dim)});
        batch[b]->alone->attend(layer, tokens_view(rows[b].queries.data(), n, heads, dim),
                                tokens_output_view(want[b].data(), n, heads, dim), ReferenceKernel{});
      }
      Kernel kernel;
      pool.attend_batch(layer, items.data(), static_cast<int>(items.size()), kernel,
                        use_thread_pool ? &threads : static_cast<ThreadPool*>(nullptr));
      for (std::size_t b = 0; b < batch.size(); ++b) {
        ASSERT_EQ(got[b], want[b]) << "op " << op << " batch item " << b << " layer " << layer;
      }
    }
  }
}

TEST(SequencePool, EverySequenceMatchesAStandaloneCacheThroughRandomInterleavings) {
  run_interleavings(false, 1, 1, false);
}

TEST(SequencePool, ChunkedStepsAndBatchesMatchStandaloneCaches) { run_interleavings(false, 5, 2, true); }

TEST(SequencePool, PerHeadPoliciesMatchStandaloneCaches) { run_interleavings(true, 4, 3, true); }

// Hides ReferenceKernel's chunk overload: the pool then serves chunks one
// query at a time, in single and batched attends.
struct SingleQueryReference {
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    ReferenceKernel{}(args, out);
  }
};

TEST(SequencePool, SingleQueryKernelsServeChunksQueryByQuery) {
  run_interleavings<SingleQueryReference>(true, 4, 4, true);
}

// The page bookkeeping against a reference model after every operation:
// a sequence with t tokens holds, per KV head, ceil(min(t, slots) / P)
// pages of its policy; the pool's free pages are the rest.
TEST(SequencePool, PageBookkeepingFollowsAReferenceModel) {
  const CacheConfig cache = pool_cache_config(true, 3);
  const PoolConfig config = pool_config(cache, 400, 4);
  SequencePool<Eigen::half> pool(config);
  std::mt19937 random(5);
  std::map<std::uint64_t, std::uint64_t> tokens;  // id -> tokens seen
  const auto expected_pages = [&](std::uint64_t t) {
    std::int64_t pages = 0;
    for (int layer = 0; layer < cache.num_layers; ++layer) {
      for (int head = 0; head < cache.num_kv_heads; ++head) {
        const std::uint64_t slots = static_cast<std::uint64_t>(cache.slots_of(cache.policy(layer, head)));
        pages += static_cast<std::int64_t>((std::min(t, slots) + 3) / 4);
      }
    }
    return pages;
  };
  const std::vector<float> rows(3 * 2 * 16, 0.25f);
  for (int op = 0; op < 2000; ++op) {
    const int kind = static_cast<int>(random() % 8);
    if (kind == 0 && tokens.size() < 12) {
      tokens[pool.add().value] = 0;
    } else if (kind == 1 && !tokens.empty()) {
      auto it = std::next(tokens.begin(), static_cast<long>(random() % tokens.size()));
      pool.release(SequenceId{it->first});
      tokens.erase(it);
    } else if (!tokens.empty()) {
      auto it = std::next(tokens.begin(), static_cast<long>(random() % tokens.size()));
      const SequenceId id{it->first};
      const int n = 1 + static_cast<int>(random() % 3);
      const std::int64_t needed = expected_pages(it->second + n) - expected_pages(it->second);
      ASSERT_EQ(pool.pages_needed(id, n), needed) << "op " << op;
      if (needed > pool.free_pages()) {
        EXPECT_THROW(pool.append(id, 0, tokens_view(rows.data(), n, 2, 16), tokens_view(rows.data(), n, 2, 16)), Error);
      } else {
        for (int layer = 0; layer < 2; ++layer) {
          pool.append(id, layer, tokens_view(rows.data(), n, 2, 16), tokens_view(rows.data(), n, 2, 16));
        }
        it->second += static_cast<std::uint64_t>(n);
      }
    }
    std::int64_t held = 0;
    for (const auto& [id, t] : tokens) {
      ASSERT_EQ(pool.pages_held(SequenceId{id}), expected_pages(t)) << "op " << op;
      ASSERT_EQ(pool.tokens_seen(SequenceId{id}), t);
      held += expected_pages(t);
    }
    ASSERT_EQ(pool.free_pages(), config.max_pages - held) << "op " << op;
    ASSERT_EQ(pool.num_sequences(), static_cast<int>(tokens.size()));
  }
}

TEST(SequencePool, ReleasedPagesServeTheNextSequenceAtOnce) {
  const CacheConfig cache = pool_cache_config(false, 1);
  // 2 layers x 2 heads x 5 pages of 8 slots (3 sinks + 37 window): one full sequence
  SequencePool<float> pool(pool_config(cache, 2 * 2 * 5));
  EXPECT_EQ(pool.pages_per_full_sequence(), 20);
  const SequenceId first = pool.add();
  const std::vector<float> rows(32, 0.5f);
  for (int t = 0; t < 100; ++t) {
    for (int layer = 0; layer < 2; ++layer) pool.append(first, layer, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16));
  }
  EXPECT_EQ(pool.free_pages(), 0);
  const SequenceId second = pool.add();
  EXPECT_NE(error_of([&] { pool.append(second, 0, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16)); })
                .find("needs 4 more pages for its next step of 1 tokens, but 0 of 20 are free"),
            std::string::npos);
  EXPECT_EQ(pool.tokens_seen(second), 0u);
  pool.release(first);
  EXPECT_EQ(pool.free_pages(), 20);
  pool.append(second, 0, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16));
  EXPECT_EQ(pool.pages_held(second), 4);
}

TEST(SequencePool, ExhaustedBudgetChangesNothingAndTheStreamContinuesExactly) {
  const CacheConfig cache = pool_cache_config(false, 4);
  SequencePool<float> pool(pool_config(cache, 30));  // the hog's 24 pages + 4 leave 2 free
  SinkKVCache<float> alone(cache);
  const SequenceId hog = pool.add();
  const SequenceId id = pool.add();
  const int dim = 16;
  std::uint64_t t = 0;
  auto step = [&](int n) {
    for (int layer = 0; layer < 2; ++layer) {
      const StepRows rows = step_rows(cache, 9, t, n, layer);
      pool.append(id, layer, tokens_view(rows.keys.data(), n, 2, dim), tokens_view(rows.keys.data(), n, 2, dim));
      alone.append(layer, tokens_view(rows.keys.data(), n, 2, dim), tokens_view(rows.keys.data(), n, 2, dim));
      std::vector<float> got(static_cast<std::size_t>(n * 6 * dim)), want(got.size());
      pool.attend(id, layer, tokens_view(rows.queries.data(), n, 6, dim), tokens_output_view(got.data(), n, 6, dim),
                  ReferenceKernel{});
      alone.attend(layer, tokens_view(rows.queries.data(), n, 6, dim), tokens_output_view(want.data(), n, 6, dim),
                   ReferenceKernel{});
      ASSERT_EQ(got, want);
    }
    t += static_cast<std::uint64_t>(n);
  };
  step(4);
  step(2);  // 6 tokens: one page per head, the next 4 tokens need a second
  const std::vector<float> rows(4 * 32, 0.5f);
  while (pool.pages_held(hog) < pool.pages_per_full_sequence()) {
    for (int layer = 0; layer < 2; ++layer) pool.append(hog, layer, tokens_view(rows.data(), 4, 2, 16), tokens_view(rows.data(), 4, 2, 16));
  }
  ASSERT_GT(pool.pages_needed(id, 4), pool.free_pages());
  ASSERT_EQ(pool.free_pages(), 2);
  const StepRows next = step_rows(cache, 9, t, 4, 0);
  EXPECT_THROW(pool.append(id, 0, tokens_view(next.keys.data(), 4, 2, dim), tokens_view(next.keys.data(), 4, 2, dim)),
               Error);
  EXPECT_THROW(pool.begin_step(id, t, 4), Error);
  EXPECT_EQ(pool.tokens_seen(id), t);
  pool.release(hog);
  for (int s = 0; s < 20; ++s) step(1 + s % 4);
}

TEST(SequencePool, UnknownReleasedAndDoublyReleasedIdsAreRejected) {
  SequencePool<float> pool(pool_config(pool_cache_config(false, 1), 100));
  const SequenceId id = pool.add();
  EXPECT_EQ(error_of([&] { (void)pool.tokens_seen(SequenceId{12345}); }),
            "sinkkv: tokens_seen: sequence 12345 is not in this pool (never added, or released)");
  pool.release(id);
  EXPECT_FALSE(pool.contains(id));
  EXPECT_THROW(pool.release(id), Error);
  const std::vector<float> rows(32, 0.5f);
  EXPECT_THROW(pool.append(id, 0, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16)), Error);
  const SequenceId reused = pool.add();  // same slot, new generation
  EXPECT_NE(reused, id);
  EXPECT_FALSE(pool.contains(id));
  EXPECT_TRUE(pool.contains(reused));
}

TEST(SequencePool, TooManySequencesIsAnError) {
  SequencePool<float> pool(pool_config(pool_cache_config(false, 1), 100));
  for (int s = 0; s < 12; ++s) pool.add();
  EXPECT_EQ(error_of([&] { pool.add(); }), "sinkkv: pool: 12 sequences are live (max_sequences); release one first");
}

TEST(SequencePool, ShapeMismatchIsRejectedBeforeAnythingChanges) {
  SequencePool<float> pool(pool_config(pool_cache_config(false, 1), 100));
  const SequenceId id = pool.add();
  const std::vector<float> rows(64, 0.5f);
  EXPECT_EQ(error_of([&] { pool.append(id, 0, heads_view(rows.data(), 3, 16), heads_view(rows.data(), 2, 16)); }),
            "sinkkv: keys is [3, 16], expected [2, 16]");
  EXPECT_EQ(pool.pages_held(id), 0);
  EXPECT_EQ(pool.tokens_seen(id), 0u);
}

TEST(SequencePool, BadBatchItemWritesNoOutput) {
  const CacheConfig cache = pool_cache_config(false, 1);
  SequencePool<float> pool(pool_config(cache, 100));
  const SequenceId a = pool.add(), b = pool.add();
  const std::vector<float> rows(6 * 16, 0.5f);
  for (int layer = 0; layer < 2; ++layer) {
    pool.append(a, layer, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16));
  }
  std::vector<float> out_a(96, -7.0f), out_b(96, -7.0f);
  std::vector<BatchItem<float, float>> items = {
      {a, tokens_view(rows.data(), 1, 6, 16), tokens_output_view(out_a.data(), 1, 6, 16)},
      {b, tokens_view(rows.data(), 1, 6, 16), tokens_output_view(out_b.data(), 1, 6, 16)}};  // b appended nothing
  ReferenceKernel kernel;
  EXPECT_EQ(error_of([&] { pool.attend_batch(0, items.data(), 2, kernel, static_cast<ThreadPool*>(nullptr)); }),
            "sinkkv: attend on layer 0 of an empty cache");
  EXPECT_EQ(out_a, std::vector<float>(96, -7.0f));
  items[1].sequence = a;
  EXPECT_NE(error_of([&] { pool.attend_batch(0, items.data(), 2, kernel, static_cast<ThreadPool*>(nullptr)); })
                .find("repeats sequence"),
            std::string::npos);
  EXPECT_EQ(out_a, std::vector<float>(96, -7.0f));
}

// attend_batch(..., nullptr) runs on the caller (a literal nullptr once did
// not compile: TaskPool* could not be deduced) and takes a temporary
// kernel, as attend() does; its output equals the sequence's own attend().
TEST(SequencePool, AttendBatchTakesALiteralNullptrPoolAndATemporaryKernel) {
  const CacheConfig cache = pool_cache_config(false, 1);
  SequencePool<float> pool(pool_config(cache, 100));
  const SequenceId a = pool.add();
  const std::vector<float> rows(6 * 16, 0.25f);
  std::vector<float> queries(96);
  for (std::size_t i = 0; i < queries.size(); ++i) queries[i] = 0.01f * static_cast<float>(i % 17);
  for (int layer = 0; layer < 2; ++layer) {
    pool.append(a, layer, heads_view(rows.data(), 2, 16), heads_view(rows.data(), 2, 16));
  }
  std::vector<float> batched(96, -7.0f), alone(96, -8.0f);
  const BatchItem<float, float> item{a, tokens_view(queries.data(), 1, 6, 16),
                                     tokens_output_view(batched.data(), 1, 6, 16)};
  pool.attend_batch(0, &item, 1, ReferenceKernel{}, nullptr);
  pool.attend(a, 0, tokens_view(queries.data(), 1, 6, 16), tokens_output_view(alone.data(), 1, 6, 16),
              ReferenceKernel{});
  EXPECT_EQ(batched, alone);
}

// Few long caches, many threads: attend_batch splits each (sequence, KV
// head) into token ranges merged by log-sum-exp; the result equals the
// unsplit one to float rounding.
TEST(SequencePool, LongCachesSplitIntoTokenRangesMergeExactly) {
  CacheConfig cache = pool_cache_config(false, 1);
  cache.window = 5000;
  PoolConfig config = pool_config(cache, 4000, 64);
  config.max_token_splits = 4;
  SequencePool<float> pool(config);
  SinkKVCache<float> alone(cache);
  const SequenceId id = pool.add();
  for (std::uint64_t t = 0; t < 4500; ++t) {
    for (int layer = 0; layer < 2; ++layer) {
      const std::vector<float> k = token_rows(3, t, layer, 32);
      pool.append(id, layer, heads_view(k.data(), 2, 16), heads_view(k.data(), 2, 16));
      alone.append(layer, heads_view(k.data(), 2, 16), heads_view(k.data(), 2, 16));
    }
  }
  const std::vector<float> q = token_rows(3, 0, 9, 96);
  std::vector<float> got(96), want(96);
  ThreadPool threads(3);
  BatchItem<float, float> item{id, tokens_view(q.data(), 1, 6, 16), tokens_output_view(got.data(), 1, 6, 16)};
  CpuKernel kernel;
  pool.attend_batch(1, &item, 1, kernel, &threads);
  alone.attend(1, heads_view(q.data(), 6, 16), output_view(want.data(), 6, 16), ReferenceKernel{});
  for (int i = 0; i < 96; ++i) EXPECT_NEAR(got[static_cast<std::size_t>(i)], want[static_cast<std::size_t>(i)], 2e-5) << i;
  for (int h = 0; h < 6; ++h) EXPECT_NEAR(pool.log_sum_exp(id, 0, h), alone.log_sum_exp(0, h), 1e-4) << h;
}

TEST(SequencePool, BadConfigurationIsRejected) {
  PoolConfig config = pool_config(pool_cache_config(false, 1), 100);
  config.page_tokens = 48;
  EXPECT_EQ(error_of([&] { SequencePool<float> pool(config); }),
            "sinkkv: pool page_tokens 48 must be a power of two in [1, 2^20]");
  config.page_tokens = 16;
  config.max_pages = 0;
  EXPECT_EQ(error_of([&] { SequencePool<float> pool(config); }), "sinkkv: pool max_pages 0 outside [1, 2^31 - 1]");
}

}  // namespace
}  // namespace sinkkv

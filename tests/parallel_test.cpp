// Tests for kernels/parallel.hpp: ThreadPool runs every task exactly once,
// and ParallelCpuKernel matches the single-threaded CpuKernel (and the
// reference) across thread counts and segment splits, for decode and for
// chunks (split by queries, or by tokens when there are fewer queries than
// threads), without allocating.
#include <sinkkv/kernels/parallel.hpp>
#include <sinkkv/kernels/reference.hpp>

#include "support/chunks.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>
// Last: it defines malloc & co. after the system headers declared them.
#include "support/allocation_counter.hpp"


namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  for (int workers : {0, 1, 3}) {
    sinkkv::ThreadPool pool(workers);
    std::vector<std::atomic<int>> hits(37);
    for (int round = 0; round < 2000; ++round) {
      const int count = 1 + round % 37;
      auto task = [&](int i) { hits[static_cast<std::size_t>(i)].fetch_add(1); };
      pool.run(count, task);
    }
    // Task i ran once in every round whose count exceeded i.
    for (int i = 0; i < 37; ++i) {
      int expected = 0;
      for (int round = 0; round < 2000; ++round) expected += (1 + round % 37) > i ? 1 : 0;
      EXPECT_EQ(hits[static_cast<std::size_t>(i)].load(), expected) << "task " << i << ", workers " << workers;
    }
  }
}

TEST(ThreadPool, RejectsNegativeWorkers) { EXPECT_THROW(sinkkv::ThreadPool(-1), sinkkv::Error); }

// Exits 0 when a pool of 8 workers, built with address space left for a
// thread or two (8 MiB stacks), reports the failure as std::system_error.
[[noreturn]] void start_workers_without_address_space() {
  long pages = 0;
  if (std::FILE* statm = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(statm, "%ld", &pages) != 1) pages = 0;
    std::fclose(statm);
  }
  const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (20u << 20);
  const rlimit address_space{limit, limit};
  if (pages == 0 || setrlimit(RLIMIT_AS, &address_space) != 0) std::_Exit(3);
  try {
    sinkkv::ThreadPool pool(8);
    std::_Exit(2);  // every worker started: the limit did not bite
  } catch (const std::system_error&) {
    std::_Exit(0);
  }
}

// A worker that cannot start must leave the pool's constructor as the
// exception std::thread threw, after the workers that did start are stopped
// and joined; it once reached std::terminate (joinable threads destroyed).
TEST(ThreadPool, AWorkerThatCannotStartIsAnExceptionNotATermination) {
  if (!sinkkv::testing::kCountsAllocations) GTEST_SKIP() << "sanitizers reserve address space beyond any small limit";
  EXPECT_EXIT(start_workers_without_address_space(), ::testing::ExitedWithCode(0), "");
}

struct Problem {
  int query_heads = 16, kv_heads = 4, head_dim = 64;
  std::vector<float> keys, values, query;
  std::vector<sinkkv::KVSegment<float>> segments;
  sinkkv::AttentionArgs<float> args;

  Problem(const std::vector<int>& lengths, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    int total = 0;
    for (int n : lengths) total += n;
    keys.resize(static_cast<std::size_t>(kv_heads) * total * head_dim);
    values.resize(keys.size());
    query.resize(static_cast<std::size_t>(query_heads) * head_dim);
    for (auto& x : keys) x = 2.0f * uniform(rng);
    for (auto& x : values) x = uniform(rng);
    for (auto& x : query) x = 2.0f * uniform(rng);
    int first = 0;
    for (int n : lengths) {
      sinkkv::KVSegment<float> s;
      s.query = query.data();
      s.keys = keys.data() + static_cast<std::size_t>(first) * head_dim;
      s.values = values.data() + static_cast<std::size_t>(first) * head_dim;
      s.token_stride = head_dim;
      s.head_stride = static_cast<std::ptrdiff_t>(total) * head_dim;
      s.length = n;
      s.query_distance = total - 1 - first;
      segments.push_back(s);
      first += n;
    }
    args.num_query_heads = query_heads;
    args.num_kv_heads = kv_heads;
    args.head_dim = head_dim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    args.segments = segments.data();
    args.num_segments = static_cast<int>(segments.size());
  }
};

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(got[i] - want[i]), 2e-5 + 2e-5 * std::abs(want[i]))
        << what << " element " << i << ": parallel " << got[i] << " expected " << want[i];
  }
}

class ParallelKernelTest : public ::testing::TestWithParam<std::tuple<int, std::vector<int>>> {};

TEST_P(ParallelKernelTest, MatchesSingleThreadAndReference) {
  const int workers = std::get<0>(GetParam());
  Problem problem(std::get<1>(GetParam()), 7);
  sinkkv::ThreadPool pool(workers);
  sinkkv::ParallelCpuKernel kernel(&pool, problem.query_heads, problem.head_dim);
  const std::size_t n = static_cast<std::size_t>(problem.query_heads) * problem.head_dim;
  std::vector<float> single(n), parallel(n, -3.0f), reference(n);
  std::vector<float> single_lse(16), parallel_lse(16), reference_lse(16);
  sinkkv::CpuKernel{}(problem.args, sinkkv::AttentionOutput<float>{single.data(), problem.head_dim, single_lse.data()});
  sinkkv::ReferenceKernel{}(problem.args,
                            sinkkv::AttentionOutput<float>{reference.data(), problem.head_dim, reference_lse.data()});
  const std::size_t before = sinkkv::testing::allocation_count;
  kernel(problem.args, sinkkv::AttentionOutput<float>{parallel.data(), problem.head_dim, parallel_lse.data()});
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << "ParallelCpuKernel allocated during a call";
  expect_close(parallel, single, "output vs CpuKernel");
  expect_close(parallel_lse, single_lse, "log-sum-exp vs CpuKernel");
  expect_close(parallel, reference, "output vs ReferenceKernel");
  expect_close(parallel_lse, reference_lse, "log-sum-exp vs ReferenceKernel");
  const int by_size = problem.args.num_tokens() / sinkkv::ParallelCpuKernel::kMinTokensPerThread;
  EXPECT_EQ(kernel.threads_for(problem.args.num_tokens()), std::max(1, std::min(workers + 1, by_size)));
}

INSTANTIATE_TEST_SUITE_P(
    Splits, ParallelKernelTest,
    ::testing::Combine(::testing::Values(0, 1, 3),
                       ::testing::Values(std::vector<int>{100}, std::vector<int>{4, 2044},
                                         std::vector<int>{4, 3000, 1093}, std::vector<int>{2048, 2048},
                                         std::vector<int>{1, 1, 5000})));

// ---- chunks ------------------------------------------------------------------

/// ParallelCpuKernel on `chunk` against CpuKernel and ReferenceKernel.
void expect_chunk_matches(sinkkv::testing::HandMadeChunk<float>& chunk, int workers, int max_query_heads) {
  const auto& spec = chunk.spec();
  sinkkv::ThreadPool pool(workers);
  sinkkv::ParallelCpuKernel kernel(&pool, max_query_heads, spec.head_dim);
  auto parallel = chunk.make_result(), single = chunk.make_result(), reference = chunk.make_result();
  sinkkv::CpuKernel{}(chunk.args(), single.view());
  sinkkv::ReferenceKernel{}(chunk.args(), reference.view());
  const std::size_t before = sinkkv::testing::allocation_count;
  kernel(chunk.args(), parallel.view());
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << "ParallelCpuKernel allocated during a chunk call";
  for (int i = 0; i < spec.num_queries; ++i) {
    for (int q = 0; q < spec.query_heads; ++q) {
      for (int d = 0; d < spec.head_dim; ++d) {
        ASSERT_NEAR(parallel.at(i, q, d), single.at(i, q, d), 2e-5 + 2e-5 * std::abs(single.at(i, q, d)))
            << "query " << i << " head " << q << " dim " << d << " vs CpuKernel";
        ASSERT_NEAR(parallel.at(i, q, d), reference.at(i, q, d), 2e-5 + 2e-5 * std::abs(reference.at(i, q, d)))
            << "query " << i << " head " << q << " dim " << d << " vs ReferenceKernel";
      }
      if (std::isinf(reference.lse(i, q))) {
        ASSERT_EQ(parallel.lse(i, q), reference.lse(i, q)) << "query " << i << " head " << q;
      } else {
        ASSERT_NEAR(parallel.lse(i, q), reference.lse(i, q), 2e-5 + 2e-5 * std::abs(reference.lse(i, q)))
            << "log-sum-exp, query " << i << " head " << q;
      }
    }
  }
}

class ParallelChunkTest : public ::testing::TestWithParam<int> {};

TEST_P(ParallelChunkTest, QuerySplitMatchesSingleThreadAndReference) {
  // 60 queries over 3,000 cached tokens in a 2,048-token window, ring
  // wrapped: split into ranges of equal work.
  sinkkv::testing::HandMadeChunk<float> chunk(
      sinkkv::testing::sink_cache_chunk(4, 2048, 3000, 60, 1500, 16, 4, 64), 21);
  expect_chunk_matches(chunk, GetParam(), 16);
}

TEST_P(ParallelChunkTest, FewerQueriesThanThreadsSplitTokensAndMerge) {
  // Two queries, 6,000 cached tokens, a 3,000-token window: with 4 threads
  // the tokens are split in 4 parts, and the queries see nothing of the
  // second part (merged with log-sum-exp -inf).
  sinkkv::testing::HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 3000, 6000, 2, 0, 8, 2, 64), 22);
  expect_chunk_matches(chunk, GetParam(), 16);
}

TEST_P(ParallelChunkTest, QueriesThatSeeNothingStayZeroAfterTheMerge) {
  // One stream segment of 5,000 tokens: query 0 sees none of it (its
  // newest token is one position after query 0), query 1 (offset 5,000)
  // all of it.
  sinkkv::testing::ChunkSpec spec;
  spec.num_queries = 2;
  spec.query_heads = 4;
  spec.kv_heads = 1;
  spec.head_dim = 32;
  spec.segments = {{5000, sinkkv::kStreamFrame, -1}};
  for (int f = 0; f < sinkkv::kNumFrames; ++f) spec.offsets[f] = {0, 5000};
  sinkkv::testing::HandMadeChunk<float> chunk(spec, 23);
  expect_chunk_matches(chunk, GetParam(), 16);
}

INSTANTIATE_TEST_SUITE_P(Workers, ParallelChunkTest, ::testing::Values(0, 1, 3));

TEST(ParallelCpuKernel, HandlesChunksNatively) {
  static_assert(sinkkv::is_chunk_kernel_v<sinkkv::ParallelCpuKernel, float>);
  static_assert(sinkkv::is_chunk_kernel_v<sinkkv::ParallelCpuKernel, Eigen::half>);
  SUCCEED();
}

TEST(ParallelCpuKernel, NoPoolRunsSingleThreaded) {
  Problem problem({4, 5000}, 3);
  sinkkv::ParallelCpuKernel kernel(nullptr, problem.query_heads, problem.head_dim);
  EXPECT_EQ(kernel.threads_for(5004), 1);
  std::vector<float> out(static_cast<std::size_t>(problem.query_heads) * problem.head_dim), lse(16);
  kernel(problem.args, sinkkv::AttentionOutput<float>{out.data(), problem.head_dim, lse.data()});
  EXPECT_TRUE(std::isfinite(lse[0]));
}

/// A caller's own pool: runs tasks on std::threads it keeps, one per task
/// index beyond the first, in reverse order, and records what it was asked.
struct ReversingPool {
  int threads = 3;
  int calls = 0;
  int last_count = 0;
  int num_threads() const { return threads; }
  void run(int count, sinkkv::IndexTask& task) {
    ++calls;
    last_count = count;
    std::vector<std::thread> helpers;
    for (int i = count - 1; i >= 1; --i) helpers.emplace_back([&task, i] { task(i); });
    task(0);
    for (auto& helper : helpers) helper.join();
  }
};

static_assert(sinkkv::is_task_pool_v<sinkkv::ThreadPool>);
static_assert(sinkkv::is_task_pool_v<ReversingPool>);
static_assert(!sinkkv::is_task_pool_v<int>);
static_assert(!sinkkv::is_task_pool_v<std::vector<int>>);

TEST(ParallelCpuKernel, RunsOnTheCallersOwnPoolType) {
  Problem problem({4, 3000, 1093}, 11);
  ReversingPool pool;
  sinkkv::ParallelCpuKernel kernel(&pool, problem.query_heads, problem.head_dim);
  EXPECT_EQ(kernel.threads_for(problem.args.num_tokens()), 3);
  const std::size_t n = static_cast<std::size_t>(problem.query_heads) * problem.head_dim;
  std::vector<float> parallel(n, -3.0f), reference(n), parallel_lse(16), reference_lse(16);
  kernel(problem.args, sinkkv::AttentionOutput<float>{parallel.data(), problem.head_dim, parallel_lse.data()});
  sinkkv::ReferenceKernel{}(problem.args,
                            sinkkv::AttentionOutput<float>{reference.data(), problem.head_dim, reference_lse.data()});
  EXPECT_EQ(pool.calls, 1);
  EXPECT_EQ(pool.last_count, 3);
  expect_close(parallel, reference, "output vs ReferenceKernel");
  expect_close(parallel_lse, reference_lse, "log-sum-exp vs ReferenceKernel");
}

TEST(ParallelCpuKernel, RejectsAPoolWithoutThreads) {
  ReversingPool pool;
  pool.threads = 0;
  try {
    sinkkv::ParallelCpuKernel kernel(&pool, 8, 64);
    FAIL() << "expected sinkkv::Error";
  } catch (const sinkkv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_threads() 0"), std::string::npos) << e.what();
  }
}

}  // namespace

// Batched decode attention over a SequencePool: one layer, every sequence
// one query token, SequencePool::attend_batch with CpuKernel on a ThreadPool
// of 1 or 2 threads. Reports the K/V bytes read per second against the read
// bandwidth of the same number of threads, measured in the same binary
// (best of several passes over a buffer far larger than the caches).
//
// Shape 32 query / 8 KV heads, head_dim 128, one layer, 4 sinks + a window
// that holds every token (the batch reads all of them), page_tokens 256.
// Before timing, each configuration is validated once: the batch's output
// for two sequences equals SinkKVCache + ReferenceKernel fed the same rows.
//
//   pool_bench [--sinkkv_smoke] [Google Benchmark flags]
#include "bench_support.hpp"

#include <sinkkv/cache.hpp>
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/parallel.hpp>
#include <sinkkv/kernels/reference.hpp>
#include <sinkkv/pool.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>
#include <vector>

namespace {

using namespace sinkkv;

constexpr int kQueryHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kSinks = 4;
constexpr int kPageTokens = 256;

bool g_smoke = false;

CacheConfig cache_config(int tokens) {
  CacheConfig config;
  config.num_layers = 1;
  config.num_query_heads = kQueryHeads;
  config.num_kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.num_sinks = kSinks;
  config.window = tokens;
  config.encoding = PositionEncoding::none();  // positions cost nothing in the kernel; filling is faster
  return config;
}

/// Rows of token t, deterministic and cheap: [kv_heads, head_dim].
void token_rows(std::uint64_t seed, std::uint64_t t, std::vector<float>& rows) {
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ULL + t * 0xBF58476D1CE4E5B9ULL;
  for (float& x : rows) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    x = static_cast<float>(static_cast<double>(state >> 40) / static_cast<double>(1 << 23) - 1.0);
  }
}

/// A pool of `sequences` sequences, each holding `tokens` tokens, kept
/// across benchmark runs of the same shape (filling 64 x 16K tokens takes
/// seconds).
template <class T>
struct Fixture {
  std::unique_ptr<SequencePool<T>> pool;
  std::vector<SequenceId> ids;
  std::vector<float> queries;  // [sequences][query heads][head_dim]
  std::vector<float> out;
};

template <class T>
Fixture<T>& fixture(int sequences, int tokens) {
  static std::map<std::pair<int, int>, std::unique_ptr<Fixture<T>>> fixtures;
  auto& slot = fixtures[{sequences, tokens}];
  if (slot) return *slot;
  fixtures.clear();  // one pool at a time: the largest holds 8 GiB
  auto& made = fixtures[{sequences, tokens}];
  made = std::make_unique<Fixture<T>>();
  PoolConfig config;
  config.cache = cache_config(tokens);
  config.page_tokens = kPageTokens;
  config.max_sequences = sequences;
  config.max_pages = 1;  // sized below
  {
    const SequencePool<T> probe(config);
    config.max_pages = probe.pages_per_full_sequence() * sequences;
  }
  made->pool = std::make_unique<SequencePool<T>>(config);
  std::vector<float> rows(kKvHeads * kHeadDim);
  for (int s = 0; s < sequences; ++s) {
    const SequenceId id = made->pool->add();
    made->ids.push_back(id);
    for (int t = 0; t < tokens; ++t) {
      token_rows(static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(t), rows);
      made->pool->append(id, 0, heads_view(rows.data(), kKvHeads, kHeadDim), heads_view(rows.data(), kKvHeads, kHeadDim));
    }
  }
  made->queries.resize(static_cast<std::size_t>(sequences) * kQueryHeads * kHeadDim);
  for (std::size_t i = 0; i < made->queries.size(); ++i) made->queries[i] = 0.01f * static_cast<float>(i % 37);
  made->out.assign(made->queries.size(), 0.0f);

  // Validate two sequences against SinkKVCache + ReferenceKernel.
  for (int s : {0, sequences - 1}) {
    SinkKVCache<T> alone(cache_config(tokens));
    for (int t = 0; t < tokens; ++t) {
      token_rows(static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(t), rows);
      alone.append(0, heads_view(rows.data(), kKvHeads, kHeadDim), heads_view(rows.data(), kKvHeads, kHeadDim));
    }
    const float* q = made->queries.data() + static_cast<std::ptrdiff_t>(s) * kQueryHeads * kHeadDim;
    std::vector<float> want(kQueryHeads * kHeadDim), got(want.size());
    alone.attend(0, heads_view(q, kQueryHeads, kHeadDim), output_view(want.data(), kQueryHeads, kHeadDim),
                 ReferenceKernel{});
    BatchItem<float, float> item{made->ids[static_cast<std::size_t>(s)], tokens_view(q, 1, kQueryHeads, kHeadDim),
                                 tokens_output_view(got.data(), 1, kQueryHeads, kHeadDim)};
    CpuKernel kernel;
    made->pool->attend_batch(0, &item, 1, kernel, static_cast<ThreadPool*>(nullptr));
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (!(std::abs(got[i] - want[i]) <= 1e-2f * (1.0f + std::abs(want[i])))) {
        std::fprintf(stderr, "pool_bench: validation failed for sequence %d element %zu: %g vs %g\n", s, i,
                     static_cast<double>(got[i]), static_cast<double>(want[i]));
        std::exit(1);
      }
    }
  }
  return *made;
}

/// Bytes/s of `threads` threads reading disjoint parts of p[0, floats) at
/// once with bench::sum_floats<kStreams, kPrefetchBytes> (the read loop of
/// attention_bench's probe, in the kernel's instruction set): best of 4
/// passes.
template <int kStreams, int kPrefetchBytes>
double parallel_read_rate(const float* p, std::size_t floats, int threads) {
  double best = 0;
  for (int pass = 0; pass < 4; ++pass) {
    std::vector<float> sums(static_cast<std::size_t>(threads));
    const auto start = bench::Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < threads; ++w) {
      workers.emplace_back([&, w] {
        const std::size_t begin = floats * static_cast<std::size_t>(w) / static_cast<std::size_t>(threads);
        const std::size_t end = floats * static_cast<std::size_t>(w + 1) / static_cast<std::size_t>(threads);
        sums[static_cast<std::size_t>(w)] = bench::sum_floats<kStreams, kPrefetchBytes>(p + begin, end - begin);
      });
    }
    for (auto& worker : workers) worker.join();
    const double seconds = bench::seconds_since(start);
    benchmark::DoNotOptimize(sums.data());
    best = std::max(best, static_cast<double>(floats * sizeof(float)) / seconds);
  }
  return best;
}

/// Read bandwidth of `threads` threads over a buffer far larger than the
/// last-level cache (512 MiB): the best of the six read patterns of
/// attention_bench's probe (1, 2 or 4 interleaved streams, with and without
/// software prefetch), bytes/s. (A first version summed with one plain loop
/// and read a third less than the kernel itself.)
double read_bandwidth(int threads) {
  static std::map<int, double> measured;
  if (measured.count(threads) != 0) return measured[threads];
  const std::size_t floats = (g_smoke ? std::size_t{1} << 22 : std::size_t{1} << 29) / sizeof(float);
  std::vector<float> buffer(floats, 1.0f);
  const float* p = buffer.data();
  const double best =
      std::max({parallel_read_rate<1, 0>(p, floats, threads), parallel_read_rate<2, 0>(p, floats, threads),
                parallel_read_rate<4, 0>(p, floats, threads), parallel_read_rate<1, 1024>(p, floats, threads),
                parallel_read_rate<2, 1024>(p, floats, threads), parallel_read_rate<4, 2048>(p, floats, threads)});
  measured[threads] = best;
  return best;
}

template <class T>
void batched_decode(benchmark::State& state) {
  const int sequences = static_cast<int>(state.range(0));
  const int tokens = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  Fixture<T>& f = fixture<T>(sequences, tokens);
  ThreadPool pool(threads - 1);
  CpuKernel kernel;
  std::vector<BatchItem<float, float>> items;
  for (int s = 0; s < sequences; ++s) {
    const std::ptrdiff_t offset = static_cast<std::ptrdiff_t>(s) * kQueryHeads * kHeadDim;
    items.push_back({f.ids[static_cast<std::size_t>(s)], tokens_view(f.queries.data() + offset, 1, kQueryHeads, kHeadDim),
                     tokens_output_view(f.out.data() + offset, 1, kQueryHeads, kHeadDim)});
  }
  for (auto _ : state) {
    f.pool->attend_batch(0, items.data(), sequences, kernel, &pool);
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(sequences) * (tokens + kSinks) * kKvHeads * kHeadDim * 2 * sizeof(T);
  const double bandwidth = read_bandwidth(threads);
  state.counters["GBps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["probe_GBps"] = bandwidth * 1e-9;
  state.counters["fraction"] =
      benchmark::Counter(bytes / bandwidth, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(detail::ElementTraits<T>::kName) + ", " + std::to_string(threads) + " thread(s)");
}

}  // namespace

int main(int argc, char** argv) {
  g_smoke = bench::take_smoke_flag(argc, argv);
  const std::vector<int> sequence_counts = g_smoke ? std::vector<int>{2} : std::vector<int>{16, 64};
  const std::vector<int> token_counts = g_smoke ? std::vector<int>{300} : std::vector<int>{1024, 4096, 16384};
  for (int sequences : sequence_counts) {
    for (int tokens : token_counts) {
      for (int threads : {1, 2}) {
        for (auto [name, fn] : {std::pair{"batched_decode/float", &batched_decode<float>},
                                std::pair{"batched_decode/half", &batched_decode<Eigen::half>}}) {
          auto* b = benchmark::RegisterBenchmark(name, fn)->Args({sequences, tokens, threads})->UseRealTime();
          b->ArgNames({"sequences", "tokens", "threads"})->Unit(benchmark::kMicrosecond);
          if (!g_smoke) b->Repetitions(5)->ReportAggregatesOnly(true);
          bench::add_best_of_n(b);
        }
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

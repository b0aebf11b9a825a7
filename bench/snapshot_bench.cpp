// Snapshot save and restore of a realistic cache: 32 layers x 8 KV heads x
// head_dim 128, Eigen::half, RoPE, 4 sinks + 4092 window, full (4,096
// tokens): 512 MiB of K/V rows. Reported next to the two costs a snapshot
// cannot avoid: one memcpy of the rows, and CRC-32C over them.
//
//   snapshot/crc32c               CRC-32C over the payload's size
//   snapshot/memcpy               one copy of the payload's size
//   snapshot/save_to_memory       save_snapshot(cache) -> bytes
//   snapshot/load_from_memory     load_snapshot<half>(bytes) (allocates the cache)
//   snapshot/restore_into         restore_snapshot(target, bytes)
//   snapshot/save_file            save_snapshot_file (temp file, fsync, rename, fsync dir)
//   snapshot/load_file            load_snapshot_file (page cache warm)
//
// Files go to $SINKKV_BENCH_DIR (default /tmp). `--sinkkv_smoke` runs a
// 2-layer, 256-token cache.
//   snapshot_bench [--sinkkv_smoke] [Google Benchmark flags]
#include "bench_support.hpp"

#include <sinkkv/cache.hpp>
#include <sinkkv/snapshot.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace sinkkv;
using Half = Eigen::half;

struct Shape {
  int layers = 32;
  int tokens = 4096;
};
Shape g_shape;

CacheConfig config_of(const Shape& shape) {
  CacheConfig config;
  config.num_layers = shape.layers;
  config.num_query_heads = 32;
  config.num_kv_heads = 8;
  config.head_dim = 128;
  config.num_sinks = 4;
  config.window = shape.tokens - 4;
  config.max_chunk = 64;  // filled in chunks (the snapshot stores only what a step can still read)
  config.encoding = PositionEncoding::rotary({500000.0});
  return config;
}

// The full cache, built once.
const SinkKVCache<Half>& full_cache() {
  static const std::unique_ptr<SinkKVCache<Half>> cache = [] {
    const CacheConfig config = config_of(g_shape);
    auto c = std::make_unique<SinkKVCache<Half>>(config);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> k(static_cast<std::size_t>(64 * 8 * 128)), v(k.size());
    for (int t = 0; t < g_shape.tokens; t += 64) {
      for (auto& x : k) x = normal(rng);
      for (auto& x : v) x = normal(rng);
      for (int layer = 0; layer < config.num_layers; ++layer) {
        c->append(layer, tokens_view(k.data(), 64, 8, 128), tokens_view(v.data(), 64, 8, 128));
      }
    }
    // The last step was a chunk: one more token so that the snapshot holds
    // exactly the 4,096 tokens of the logical cache.
    for (int layer = 0; layer < config.num_layers; ++layer) {
      c->append(layer, heads_view(k.data(), 8, 128), heads_view(v.data(), 8, 128));
    }
    return c;
  }();
  return *cache;
}

const std::vector<std::uint8_t>& snapshot_bytes() {
  static const std::vector<std::uint8_t> bytes = save_snapshot(full_cache());
  return bytes;
}

std::string bench_path() {
  const char* dir = std::getenv("SINKKV_BENCH_DIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/sinkkv_snapshot_bench.sinkkv";
}

void set_bytes(benchmark::State& state, std::size_t bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
  state.counters["MiB"] = static_cast<double>(bytes) / (1 << 20);
}

void crc(benchmark::State& state) {
  const std::vector<std::uint8_t>& bytes = snapshot_bytes();
  for (auto _ : state) benchmark::DoNotOptimize(detail::crc32c(bytes.data(), bytes.size()));
  set_bytes(state, bytes.size());
}

void copy(benchmark::State& state) {
  const std::vector<std::uint8_t>& bytes = snapshot_bytes();
  std::vector<std::uint8_t> target(bytes.size());
  for (auto _ : state) {
    std::memcpy(target.data(), bytes.data(), bytes.size());
    benchmark::ClobberMemory();
  }
  set_bytes(state, bytes.size());
}

void save_to_memory(benchmark::State& state) {
  const SinkKVCache<Half>& cache = full_cache();
  std::size_t size = 0;
  for (auto _ : state) {
    const std::vector<std::uint8_t> bytes = save_snapshot(cache);
    size = bytes.size();
    benchmark::DoNotOptimize(bytes.data());
  }
  set_bytes(state, size);
}

void load_from_memory(benchmark::State& state) {
  const std::vector<std::uint8_t>& bytes = snapshot_bytes();
  for (auto _ : state) {
    SinkKVCache<Half> cache = load_snapshot<Half>(bytes.data(), bytes.size());
    benchmark::DoNotOptimize(cache.tokens_seen());
  }
  set_bytes(state, bytes.size());
}

void restore_into(benchmark::State& state) {
  const std::vector<std::uint8_t>& bytes = snapshot_bytes();
  SinkKVCache<Half> target(config_of(g_shape));
  for (auto _ : state) {
    restore_snapshot(target, bytes.data(), bytes.size());
    benchmark::DoNotOptimize(target.tokens_seen());
  }
  set_bytes(state, bytes.size());
}

void save_file(benchmark::State& state) {
  const SinkKVCache<Half>& cache = full_cache();
  const std::string path = bench_path();
  for (auto _ : state) save_snapshot_file(cache, path);
  set_bytes(state, snapshot_bytes().size());
}

void load_file(benchmark::State& state) {
  const std::string path = bench_path();
  save_snapshot_file(full_cache(), path);
  (void)load_snapshot_file<Half>(path);  // page cache warm
  for (auto _ : state) {
    SinkKVCache<Half> cache = load_snapshot_file<Half>(path);
    benchmark::DoNotOptimize(cache.tokens_seen());
  }
  set_bytes(state, snapshot_bytes().size());
  std::remove(path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (bench::take_smoke_flag(argc, argv)) g_shape = Shape{2, 256};
  std::fprintf(stderr, "snapshot_bench: %d layers x 8 KV heads x 128 dims x %d tokens, half: building the cache\n",
               g_shape.layers, g_shape.tokens);
  const std::size_t size = snapshot_bytes().size();
  std::fprintf(stderr, "snapshot_bench: snapshot of %zu bytes (%.1f MiB)\n", size, static_cast<double>(size) / (1 << 20));
  const auto add = [](const char* name, void (*function)(benchmark::State&)) {
    auto* b = benchmark::RegisterBenchmark(name, function);
    b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(7);
    bench::add_best_of_n(b);
  };
  add("snapshot/crc32c", crc);
  add("snapshot/memcpy", copy);
  add("snapshot/save_to_memory", save_to_memory);
  add("snapshot/load_from_memory", load_from_memory);
  add("snapshot/restore_into", restore_into);
  add("snapshot/save_file", save_file);
  add("snapshot/load_file", load_file);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

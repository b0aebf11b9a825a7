// Per-token cost of appending to a full cache (evict the oldest window token,
// re-position everything) vs the window length, for SinkKVCache and for the
// baseline that re-rotates the whole window every step, as Hugging Face's
// SinkCache did (shift every window key one slot and rotate it back by one
// position; copy the values).
//
// Shape 32 query / 8 KV heads, head_dim 128, RoPE, 4 sinks, one layer. A
// complexity fit (Google Benchmark BigO) over windows 64..65,536 is reported
// for both: O(1) expected for the cache, O(N) for the baseline.
//
// Before timing, the baseline is validated once: after 300 tokens through a
// 64-token window, its attention (ReferenceKernel over its re-rotated keys)
// matches SinkKVCache::attend.
//
//   cache_bench [--sinkkv_smoke] [Google Benchmark flags]
#include "bench_support.hpp"

#include <sinkkv/cache.hpp>
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/reference.hpp>
#include <sinkkv/rope.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using namespace sinkkv;

constexpr int kQueryHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kSinks = 4;

CacheConfig config_for(int window) {
  CacheConfig config;
  config.num_layers = 1;
  config.num_query_heads = kQueryHeads;
  config.num_kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.num_sinks = kSinks;
  config.window = window;
  config.encoding = PositionEncoding::rotary();
  return config;
}

/// Random [tokens][kv_heads][head_dim] rows to append, cycled.
struct TokenRows {
  std::vector<float> keys, values;
  int tokens;
  explicit TokenRows(int n) : tokens(n) {
    std::mt19937 rng(77);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    keys.resize(static_cast<std::size_t>(n) * kKvHeads * kHeadDim);
    values.resize(keys.size());
    for (auto& x : keys) x = normal(rng);
    for (auto& x : values) x = normal(rng);
  }
  const float* key(int t) const { return keys.data() + static_cast<std::size_t>(t % tokens) * kKvHeads * kHeadDim; }
  const float* value(int t) const {
    return values.data() + static_cast<std::size_t>(t % tokens) * kKvHeads * kHeadDim;
  }
};

/// The baseline: keys stored rotated by their *cache* position, so every
/// eviction shifts the window one slot down and re-rotates each window key
/// by -1 position (O(window * kv_heads * head_dim) per token).
/// [kv_heads][capacity][head_dim] keys and values, like SinkKVCache.
template <class T>
class RerotatingCache {
 public:
  explicit RerotatingCache(int window)
      : capacity_(kSinks + window),
        rope_(RopeConfig{}, kHeadDim),
        keys_(static_cast<std::size_t>(kKvHeads) * capacity_ * kHeadDim),
        values_(keys_.size()),
        back_cos_(kHeadDim / 2),
        back_sin_(kHeadDim / 2),
        newest_(rope_.make_rotation()) {
    for (int i = 0; i < kHeadDim / 2; ++i) {
      back_cos_[i] = static_cast<float>(std::cos(rope_.inv_frequency(i)));
      back_sin_[i] = static_cast<float>(-std::sin(rope_.inv_frequency(i)));
    }
  }
  int capacity() const { return capacity_; }
  int size() const { return size_; }

  /// Fills the window with arbitrary rows without per-token work (the
  /// timing only needs a full cache).
  void fill_arbitrary(const TokenRows& rows) {
    for (int slot = 0; slot < capacity_; ++slot) {
      for (int h = 0; h < kKvHeads; ++h) {
        for (int d = 0; d < kHeadDim; ++d) {
          keys_[index(h, slot) + d] = T(rows.key(slot)[h * kHeadDim + d]);
          values_[index(h, slot) + d] = T(rows.value(slot)[h * kHeadDim + d]);
        }
      }
    }
    size_ = capacity_;
  }

  void append(const float* key, const float* value) {
    int slot = size_;
    if (size_ == capacity_) {
      for (int h = 0; h < kKvHeads; ++h) {
        for (int s = kSinks; s + 1 < capacity_; ++s) {
          T* to = keys_.data() + index(h, s);
          const T* from = keys_.data() + index(h, s + 1);
          for (int i = 0; i < kHeadDim / 2; ++i) {
            const float x = static_cast<float>(from[2 * i]), y = static_cast<float>(from[2 * i + 1]);
            to[2 * i] = T(x * back_cos_[i] - y * back_sin_[i]);
            to[2 * i + 1] = T(x * back_sin_[i] + y * back_cos_[i]);
          }
          std::copy(values_.begin() + index(h, s + 1), values_.begin() + index(h, s + 1) + kHeadDim,
                    values_.begin() + index(h, s));
        }
      }
      slot = capacity_ - 1;
    } else {
      ++size_;
    }
    if (newest_.position() != static_cast<std::uint64_t>(slot) || slot == 0) rope_.set_position(newest_, slot);
    for (int h = 0; h < kKvHeads; ++h) {
      rope_.rotate(newest_, [&](int d) { return key[h * kHeadDim + d]; }, keys_.data() + index(h, slot));
      for (int d = 0; d < kHeadDim; ++d) values_[index(h, slot) + d] = T(value[h * kHeadDim + d]);
    }
  }

  /// Attention of `query` ([query_heads][head_dim], un-rotated) with the
  /// query at the newest cache position.
  void attend(const float* query, float* out, float* lse) const {
    auto rotation = rope_.make_rotation();
    rope_.set_position(rotation, static_cast<std::uint64_t>(size_ - 1));
    std::vector<float> rotated(static_cast<std::size_t>(kQueryHeads) * kHeadDim);
    for (int h = 0; h < kQueryHeads; ++h) {
      rope_.rotate(rotation, [&](int d) { return query[h * kHeadDim + d]; }, rotated.data() + h * kHeadDim);
    }
    KVSegment<T> segment;
    segment.query = rotated.data();
    segment.keys = keys_.data();
    segment.values = values_.data();
    segment.token_stride = kHeadDim;
    segment.head_stride = static_cast<std::ptrdiff_t>(capacity_) * kHeadDim;
    segment.length = size_;
    segment.query_distance = size_ - 1;
    AttentionArgs<T> args;
    args.num_query_heads = kQueryHeads;
    args.num_kv_heads = kKvHeads;
    args.head_dim = kHeadDim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    args.segments = &segment;
    args.num_segments = 1;
    ReferenceKernel{}(args, AttentionOutput<float>{out, kHeadDim, lse});
  }

 private:
  std::size_t index(int head, int slot) const {
    return (static_cast<std::size_t>(head) * capacity_ + static_cast<std::size_t>(slot)) * kHeadDim;
  }
  int capacity_;
  int size_ = 0;
  Rope rope_;
  std::vector<T> keys_, values_;
  std::vector<float> back_cos_, back_sin_;  // rotation by -1 position, per pair
  Rope::Rotation newest_;
};

/// SinkKVCache and the re-rotating baseline agree after many evictions.
void validate_baseline() {
  const int window = 64;
  const TokenRows rows(300);
  SinkKVCache<float> cache(config_for(window));
  RerotatingCache<float> baseline(window);
  for (int t = 0; t < 300; ++t) {
    cache.append(0, heads_view(rows.key(t), kKvHeads, kHeadDim), heads_view(rows.value(t), kKvHeads, kHeadDim));
    baseline.append(rows.key(t), rows.value(t));
  }
  std::vector<float> query(static_cast<std::size_t>(kQueryHeads) * kHeadDim);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& q : query) q = normal(rng);
  std::vector<float> got(query.size()), want(query.size()), want_lse(kQueryHeads);
  cache.attend(0, heads_view(query.data(), kQueryHeads, kHeadDim), output_view(got.data(), kQueryHeads, kHeadDim),
               CpuKernel{});
  baseline.attend(query.data(), want.data(), want_lse.data());
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    // 1e-3: the baseline's keys carry ~window float re-rotations of drift.
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[i]) / (1e-3 + 1e-3 * std::abs(want[i])));
  }
  for (int h = 0; h < kQueryHeads; ++h) {
    worst = std::max(worst, std::abs(static_cast<double>(cache.log_sum_exp()[h]) - want_lse[h]) /
                                (1e-3 + 1e-3 * std::abs(want_lse[h])));
  }
  if (!(worst <= 1.0)) {
    std::fprintf(stderr, "re-rotation baseline disagrees with SinkKVCache (worst %.3g x tolerance)\n", worst);
    std::abort();
  }
}

template <class T>
void append_evict(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  const TokenRows rows(64);
  SinkKVCache<T> cache(config_for(window));
  int t = 0;
  for (; t < window + kSinks + 16; ++t) {  // full, and evicting
    cache.append(0, heads_view(rows.key(t), kKvHeads, kHeadDim), heads_view(rows.value(t), kKvHeads, kHeadDim));
  }
  for (auto _ : state) {
    cache.append(0, heads_view(rows.key(t), kKvHeads, kHeadDim), heads_view(rows.value(t), kKvHeads, kHeadDim));
    ++t;
  }
  if (cache.size() != window + kSinks) {
    state.SkipWithError("cache is not full");
    return;
  }
  state.SetItemsProcessed(state.iterations());  // tokens appended
  state.SetComplexityN(window);
}

template <class T>
void rerotate(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  const TokenRows rows(64);
  RerotatingCache<T> cache(window);
  cache.fill_arbitrary(rows);
  int t = 0;
  for (auto _ : state) {
    cache.append(rows.key(t), rows.value(t));
    ++t;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetComplexityN(window);
}

template <class T>
void register_type(const char* type, int max_window) {
  auto* a = benchmark::RegisterBenchmark((std::string("append_evict/sinkkv/") + type).c_str(), append_evict<T>);
  a->RangeMultiplier(4)->Range(64, max_window)->Complexity(benchmark::o1)->UseRealTime();
  bench::add_best_of_n(a);
  auto* r = benchmark::RegisterBenchmark((std::string("append_evict/rerotate_window/") + type).c_str(), rerotate<T>);
  r->RangeMultiplier(4)->Range(64, max_window)->Complexity(benchmark::oN)->UseRealTime();
  bench::add_best_of_n(r);
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::take_smoke_flag(argc, argv);
  validate_baseline();
  const int max_window = smoke ? 4096 : 65536;
  register_type<float>("float", max_window);
  register_type<Eigen::half>("half", max_window);
  register_type<Eigen::bfloat16>("bfloat16", max_window);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

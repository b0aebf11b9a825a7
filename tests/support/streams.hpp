// Test support: deterministic per-token rows and small cache helpers.
#pragma once

#include <cstdint>
#include <vector>

#include <sinkkv/cache.hpp>

namespace sinkkv::testing {

/// Uniform(-1, 1) floats, reproducible from (seed, token, salt): lets a test
/// regenerate any token's K/V/query without storing the stream.
/// (splitmix64 counters: cheap enough for streams of millions of tokens.)
inline std::vector<float> token_rows(std::uint64_t seed, std::uint64_t token, int salt, int count) {
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ULL ^ token * 0xBF58476D1CE4E5B9ULL ^
                        static_cast<std::uint64_t>(salt) * 0x94D049BB133111EBULL;
  std::vector<float> rows(static_cast<std::size_t>(count));
  for (float& x : rows) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    x = static_cast<float>(static_cast<double>(z >> 40) / static_cast<double>(1 << 23) - 1.0);  // [-1, 1)
  }
  return rows;
}

inline CacheConfig small_config(int num_layers = 2, int num_sinks = 2, int window = 4) {
  CacheConfig config;
  config.num_layers = num_layers;
  config.num_kv_heads = 2;
  config.num_query_heads = 4;
  config.head_dim = 8;
  config.num_sinks = num_sinks;
  config.window = window;
  return config;
}

/// Appends token `token` (seeded rows) to every layer in order.
template <class T>
void append_token(SinkKVCache<T>& cache, std::uint64_t token, std::uint64_t seed = 1) {
  const CacheConfig& config = cache.config();
  const int count = config.num_kv_heads * config.head_dim;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    const std::vector<float> k = token_rows(seed, token, 2 * layer, count);
    const std::vector<float> v = token_rows(seed, token, 2 * layer + 1, count);
    cache.append(layer, heads_view(k.data(), config.num_kv_heads, config.head_dim),
                 heads_view(v.data(), config.num_kv_heads, config.head_dim));
  }
}

}  // namespace sinkkv::testing

// The seeds of the snapshot fuzz target (tests/fuzz/corpus/snapshot/):
// small valid snapshots of every element type, encoding, policy mix and
// step kind, each behind the fuzzer's mode byte (bits 1-2: the element
// type; bit 0, set on some, reseals their mutations' checksums).
//
// tests/snapshot_test.cpp checks that the committed files are exactly what
// this build writes - a format-stability test: a change in the bytes of
// format version 1 fails it (bump kSnapshotVersion instead). Regenerate with
//   SINKKV_WRITE_SNAPSHOT_SEEDS=1 build/tests/snapshot_test --gtest_filter='*Seeds*'
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sinkkv/snapshot.hpp>

namespace sinkkv::testing {

struct SnapshotSeed {
  std::string name;
  std::vector<std::uint8_t> bytes;  // mode byte, then the snapshot
};

// Deterministic rows in [-1, 1) of token t, layer, salt, element i.
inline float seed_row_value(std::uint64_t t, int layer, int salt, int i) {
  std::uint64_t z =
      t * 0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(layer * 131 + salt * 7 + i) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) / static_cast<double>(1 << 23) - 1.0);
}

template <class T>
std::vector<std::uint8_t> seed_stream(const CacheConfig& config, const std::vector<int>& steps, bool explicit_steps) {
  SinkKVCache<T> cache(config);
  std::uint64_t t = 0;
  for (int n : steps) {
    if (explicit_steps) cache.begin_step(t, n);
    for (int layer = 0; layer < config.num_layers; ++layer) {
      std::vector<float> k, v;
      for (int i = 0; i < n * config.num_kv_heads * config.head_dim; ++i) {
        k.push_back(seed_row_value(t, layer, 0, i));
        v.push_back(seed_row_value(t, layer, 1, i));
      }
      cache.append(layer, tokens_view(k.data(), n, config.num_kv_heads, config.head_dim),
                   tokens_view(v.data(), n, config.num_kv_heads, config.head_dim));
    }
    t += static_cast<std::uint64_t>(n);
  }
  return save_snapshot(cache);
}

template <class T>
int seed_element_index();
template <>
inline int seed_element_index<float>() { return 0; }
template <>
inline int seed_element_index<double>() { return 1; }
template <>
inline int seed_element_index<Eigen::half>() { return 2; }
template <>
inline int seed_element_index<Eigen::bfloat16>() { return 3; }

template <class T>
SnapshotSeed seed_of(const std::string& name, const CacheConfig& config, const std::vector<int>& steps,
                     bool explicit_steps, bool reseal) {
  SnapshotSeed s{name, {static_cast<std::uint8_t>(seed_element_index<T>() << 1 | (reseal ? 1 : 0))}};
  const std::vector<std::uint8_t> snapshot = seed_stream<T>(config, steps, explicit_steps);
  s.bytes.insert(s.bytes.end(), snapshot.begin(), snapshot.end());
  return s;
}

inline CacheConfig seed_config(int layers, int kv, int q, int dim, int sinks, int window) {
  CacheConfig c;
  c.num_layers = layers;
  c.num_kv_heads = kv;
  c.num_query_heads = q;
  c.head_dim = dim;
  c.num_sinks = sinks;
  c.window = window;
  return c;
}

inline std::vector<SnapshotSeed> snapshot_seeds() {
  std::vector<SnapshotSeed> all;
  all.push_back(seed_of<float>("valid-float-empty", seed_config(1, 1, 1, 2, 1, 2), {}, false, false));
  all.push_back(seed_of<float>("valid-float-one-token", seed_config(1, 1, 1, 4, 2, 3), {1}, false, true));
  {
    CacheConfig c = seed_config(2, 2, 4, 4, 2, 3);
    all.push_back(seed_of<Eigen::half>("valid-half-rope-wrapped", c, {1, 1, 1, 1, 1, 1, 1, 1, 1}, false, false));
  }
  {
    CacheConfig c = seed_config(2, 2, 2, 4, 1, 3);
    c.max_chunk = 3;
    c.set_head_policy(1, 0, {0, 2});
    c.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kSplitHalves, RopeScaling::yarn(4.0, 16.0)});
    all.push_back(seed_of<Eigen::bfloat16>("valid-bfloat16-policies-yarn-chunks-explicit", c, {3, 2, 3, 1}, true, true));
  }
  {
    CacheConfig c = seed_config(1, 2, 4, 2, 1, 2);
    c.encoding = PositionEncoding::alibi_bias({{0.5, 0.25, 0.125, 0.0625}});
    all.push_back(seed_of<double>("valid-double-alibi-slopes", c, {1, 1, 1, 1}, false, false));
  }
  {
    CacheConfig c = seed_config(1, 1, 2, 4, 1, 2);
    c.encoding = PositionEncoding::rotary(
        {10000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::explicit_frequencies({1.0, 0.01}, 1.5)});
    c.input_rotation = InputRotation::kStreamRotated;
    c.max_chunk = 2;
    all.push_back(seed_of<float>("valid-float-stream-rotated-explicit-frequencies", c, {2, 1, 2}, false, true));
  }
  {
    CacheConfig c = seed_config(1, 1, 1, 8, 2, 2);
    c.encoding = PositionEncoding::rotary({500000.0, 4, RopeLayout::kAdjacentPairs, RopeScaling::llama3(8.0, 1.0, 4.0, 32.0)});
    all.push_back(seed_of<float>("valid-float-llama3-partial", c, {1, 1, 1, 1, 1}, false, false));
  }
  {
    CacheConfig c = seed_config(1, 1, 1, 2, 0, 1);
    c.encoding = PositionEncoding::none();
    c.max_chunk = 4;
    all.push_back(seed_of<Eigen::half>("valid-half-window-one-no-sinks", c, {4, 3}, false, true));
  }
  {
    CacheConfig c = seed_config(2, 1, 3, 2, 1, 1);
    c.set_layer_policy(1, {0, 3});
    c.encoding = PositionEncoding::rotary({2.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::ntk_aware(2.0)});
    all.push_back(seed_of<double>("valid-double-layer-policy-ntk", c, {1, 1, 1, 1, 1, 1}, false, true));
  }
  {
    CacheConfig c = seed_config(1, 1, 1, 2, 1, 2);
    c.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::linear(2.0)});
    c.encoding.rope.scaling.attention_factor = 0.75;
    all.push_back(seed_of<Eigen::bfloat16>("valid-bfloat16-linear-attention-factor", c, {1, 1, 1}, true, false));
  }
  return all;
}

}  // namespace sinkkv::testing

// Test support: the independent oracle for sink-cache attention.
//
// It shares no code with the library's position or rotation logic: it keeps
// every token's un-rotated K/V, decides from first principles which tokens a
// sink cache holds, places them at cache positions 0..n-1, re-rotates every
// key (and the query) to those positions in double precision, and runs dense
// softmax attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <sinkkv/config.hpp>

#include "rope_reference.hpp"

namespace sinkkv::testing {

/// Rows of one token for several heads: [heads][dim], double.
using HeadRows = std::vector<std::vector<double>>;

/// The stream indices a cache of (num_sinks, window) holds after
/// `tokens_seen` tokens, in cache-position order.
inline std::vector<std::uint64_t> expected_cached_tokens(int num_sinks, int window, std::uint64_t tokens_seen) {
  std::vector<std::uint64_t> kept;
  for (std::uint64_t t = 0; t < tokens_seen && t < static_cast<std::uint64_t>(num_sinks); ++t) kept.push_back(t);
  const std::uint64_t sinks = kept.size();
  const std::uint64_t window_start =
      tokens_seen > static_cast<std::uint64_t>(window) ? std::max(sinks, tokens_seen - window) : sinks;
  for (std::uint64_t t = window_start; t < tokens_seen; ++t) kept.push_back(t);
  return kept;
}

/// Rotates one head row to `position` with RoPE as configured, written out
/// from the definitions (Llama: pairs (2i, 2i+1); NeoX: (i, i + r/2); the
/// variant's frequencies and attention factor from rope_reference.hpp).
inline std::vector<double> oracle_rotate(const std::vector<double>& row, double position, const RopeConfig& rope) {
  const int dim = static_cast<int>(row.size());
  const int rotary = rope.rotary_dim == 0 ? dim : rope.rotary_dim;
  std::vector<double> out = row;
  const std::vector<double> frequencies = reference_frequencies(rope.scaling, rope.theta, rotary);
  const double factor = reference_attention_factor(rope.scaling);
  for (int i = 0; i < rotary / 2; ++i) {
    const double frequency = frequencies[i];
    const double angle = position * frequency;
    const int a = rope.layout == RopeLayout::kAdjacentPairs ? 2 * i : i;
    const int b = rope.layout == RopeLayout::kAdjacentPairs ? 2 * i + 1 : i + rotary / 2;
    out[a] = factor * (row[a] * std::cos(angle) - row[b] * std::sin(angle));
    out[b] = factor * (row[a] * std::sin(angle) + row[b] * std::cos(angle));
  }
  return out;
}

struct OracleResult {
  HeadRows output;                  // [query heads][dim]
  std::vector<double> log_sum_exp;  // [query heads]
};

/// Dense attention of one query over cached tokens at cache positions
/// 0..n-1 (keys[i], values[i] are the un-rotated rows of the i-th cached
/// token), the query at position n-1.
inline OracleResult oracle_attention(const CacheConfig& config, const HeadRows& query,
                                     const std::vector<HeadRows>& keys, const std::vector<HeadRows>& values,
                                     const std::vector<double>& alibi_slopes, double scale,
                                     const double* sink_logits = nullptr) {
  const int tokens = static_cast<int>(keys.size());
  const int query_heads = config.query_heads();
  const int group = query_heads / config.num_kv_heads;
  const double query_position = tokens - 1;
  const bool rope = config.encoding.kind == PositionEncoding::Kind::kRope;
  const bool alibi = config.encoding.kind == PositionEncoding::Kind::kAlibi;
  OracleResult result;
  for (int q = 0; q < query_heads; ++q) {
    const int kv = q / group;
    const std::vector<double> rotated_query =
        rope ? oracle_rotate(query[q], query_position, config.encoding.rope) : query[q];
    std::vector<double> scores(tokens);
    double max_score = -INFINITY;
    for (int i = 0; i < tokens; ++i) {
      const std::vector<double> key = rope ? oracle_rotate(keys[i][kv], i, config.encoding.rope) : keys[i][kv];
      double dot = 0;
      for (std::size_t d = 0; d < key.size(); ++d) dot += rotated_query[d] * key[d];
      scores[i] = scale * dot - (alibi ? alibi_slopes[q] * (query_position - i) : 0.0);
      max_score = std::max(max_score, scores[i]);
    }
    if (sink_logits != nullptr) max_score = std::max(max_score, sink_logits[q]);
    double sum = sink_logits != nullptr ? std::exp(sink_logits[q] - max_score) : 0.0;
    for (double s : scores) sum += std::exp(s - max_score);
    std::vector<double> out(static_cast<std::size_t>(config.head_dim), 0.0);
    for (int i = 0; i < tokens; ++i) {
      const double weight = std::exp(scores[i] - max_score) / sum;
      for (int d = 0; d < config.head_dim; ++d) out[d] += weight * values[i][kv][d];
    }
    result.output.push_back(out);
    result.log_sum_exp.push_back(max_score + std::log(sum));
  }
  return result;
}

}  // namespace sinkkv::testing

namespace sinkkv::testing {

/// The oracle for the query of stream token `t` on `layer`, where every KV
/// head keeps the tokens its own policy (config.policy(layer, head)) keeps
/// after t + 1 tokens. `keys`/`values`: every stream token's un-rotated rows
/// of this layer, [token][kv head][dim]; `slopes` and `sink_logits` per
/// query head (sink_logits may be null).
inline OracleResult oracle_for_token(const CacheConfig& config, int layer, std::uint64_t t, const HeadRows& query,
                                     const std::vector<HeadRows>& keys, const std::vector<HeadRows>& values,
                                     const std::vector<double>& slopes, double scale,
                                     const double* sink_logits = nullptr) {
  const int group = config.query_heads() / config.num_kv_heads;
  CacheConfig head_config = config;
  head_config.num_kv_heads = 1;
  head_config.num_query_heads = group;
  head_config.head_policies.clear();
  OracleResult result;
  for (int h = 0; h < config.num_kv_heads; ++h) {
    const RetentionPolicy policy = config.policy(layer, h);
    const std::vector<std::uint64_t> kept = expected_cached_tokens(policy.num_sinks, policy.window, t + 1);
    std::vector<HeadRows> head_keys;
    std::vector<HeadRows> head_values;
    for (std::uint64_t token : kept) {
      head_keys.push_back({keys[token][static_cast<std::size_t>(h)]});
      head_values.push_back({values[token][static_cast<std::size_t>(h)]});
    }
    const HeadRows head_query(query.begin() + h * group, query.begin() + (h + 1) * group);
    const std::vector<double> head_slopes =
        slopes.empty() ? slopes : std::vector<double>(slopes.begin() + h * group, slopes.begin() + (h + 1) * group);
    const OracleResult part = oracle_attention(head_config, head_query, head_keys, head_values, head_slopes, scale,
                                               sink_logits != nullptr ? sink_logits + h * group : nullptr);
    result.output.insert(result.output.end(), part.output.begin(), part.output.end());
    result.log_sum_exp.insert(result.log_sum_exp.end(), part.log_sum_exp.begin(), part.log_sum_exp.end());
  }
  return result;
}

}  // namespace sinkkv::testing

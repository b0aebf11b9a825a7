// Test support: AttentionArgs built by hand, without a cache.
#pragma once

#include <random>
#include <vector>

#include <sinkkv/attention.hpp>

namespace sinkkv::testing {

/// Owns random K/V rows and queries for `lengths.size()` segments, each with
/// its own query, in the [kv head][token][dim] layout, and exposes them as
/// AttentionArgs.
template <class T>
class HandMadeSegments {
 public:
  using C = compute_t<T>;

  HandMadeSegments(int query_heads, int kv_heads, int head_dim, std::vector<int> lengths, unsigned seed,
                   double query_magnitude = 1.0)
      : query_heads_(query_heads), kv_heads_(kv_heads), head_dim_(head_dim) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    int distance = 0;
    for (int length : lengths) distance += length;
    for (int length : lengths) {
      auto& keys = keys_.emplace_back(static_cast<std::size_t>(kv_heads * length * head_dim));
      auto& values = values_.emplace_back(keys.size());
      auto& query = queries_.emplace_back(static_cast<std::size_t>(query_heads * head_dim));
      for (T& x : keys) x = T(uniform(random));
      for (T& x : values) x = T(uniform(random));
      for (C& x : query) x = static_cast<C>(query_magnitude * uniform(random));
      KVSegment<T> segment;
      segment.query = query.data();
      segment.keys = keys.data();
      segment.values = values.data();
      segment.token_stride = head_dim;
      segment.head_stride = static_cast<std::ptrdiff_t>(length) * head_dim;
      segment.length = length;
      segment.query_distance = distance - 1;
      distance -= length;
      segments_.push_back(segment);
    }
    slopes_.assign(static_cast<std::size_t>(query_heads), C(0));
    for (int q = 0; q < query_heads; ++q) slopes_[static_cast<std::size_t>(q)] = static_cast<C>(0.05 * (q + 1));
  }

  AttentionArgs<T> args(bool alibi = false) const {
    AttentionArgs<T> args;
    args.num_query_heads = query_heads_;
    args.num_kv_heads = kv_heads_;
    args.head_dim = head_dim_;
    args.scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
    args.alibi_slopes = alibi ? slopes_.data() : nullptr;
    args.segments = segments_.data();
    args.num_segments = static_cast<int>(segments_.size());
    return args;
  }

  /// Output buffers: [query_heads, head_dim] and [query_heads].
  struct Result {
    std::vector<C> output;
    std::vector<C> log_sum_exp;
    int head_dim;
    AttentionOutput<C> view() { return {output.data(), head_dim, log_sum_exp.data()}; }
  };
  Result make_result() const {
    return Result{std::vector<C>(static_cast<std::size_t>(query_heads_ * head_dim_)),
                  std::vector<C>(static_cast<std::size_t>(query_heads_)), head_dim_};
  }
  int head_dim() const { return head_dim_; }

 private:
  int query_heads_, kv_heads_, head_dim_;
  std::vector<std::vector<T>> keys_, values_;
  std::vector<std::vector<C>> queries_;
  std::vector<KVSegment<T>> segments_;
  std::vector<C> slopes_;
};

}  // namespace sinkkv::testing

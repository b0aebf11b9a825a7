// Test support: ChunkArgs built by hand, without a cache: random K/V rows,
// query rows per frame, and segments whose bands (causal limit, window
// span, frame offsets) are drawn at random or laid out as a sink cache
// lays out a chunk.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <sinkkv/attention.hpp>

namespace sinkkv::testing {

/// One segment of a hand-made chunk: length, frame, query_distance.
struct ChunkSegmentSpec {
  int length;
  int frame;
  int query_distance;
};

/// What a hand-made chunk looks like.
struct ChunkSpec {
  int num_queries = 1;
  int query_heads = 4;
  int kv_heads = 2;
  int head_dim = 16;
  std::vector<ChunkSegmentSpec> segments;
  /// Per frame: offsets[i] of query i (offsets[0] == 0, non-decreasing) and span.
  std::vector<int> offsets[kNumFrames];
  int spans[kNumFrames] = {std::numeric_limits<int>::max(), std::numeric_limits<int>::max()};
  bool alibi = false;
};

/// A sink cache's chunk: `sinks` sink tokens (sink frame, at cache positions
/// 0..sinks-1 while each query sits at its own cache position), then the
/// window ring holding `cached` older window tokens followed by the chunk's
/// own C tokens (stream frame, window span `window`), as two segments when
/// the ring wraps at `wrap` (0: no wrap). Query i is the chunk's token i.
inline ChunkSpec sink_cache_chunk(int sinks, int window, int cached, int num_queries, int wrap, int query_heads,
                                  int kv_heads, int head_dim) {
  ChunkSpec spec;
  spec.num_queries = num_queries;
  spec.query_heads = query_heads;
  spec.kv_heads = kv_heads;
  spec.head_dim = head_dim;
  const int stored = cached + num_queries;  // window tokens in the ring, oldest first
  if (sinks > 0) {
    // Query i's cache position: sinks + min(window, cached + i + 1) - 1, so
    // its distance to sink 0 grows by one per query until the window is full.
    spec.segments.push_back({sinks, kSinkFrame, sinks + std::min(window, cached + 1) - 1});
  }
  // Stream frame: query 0 at stream position cached (relative to the first
  // stored window token at 0); token j of the ring order at position j.
  if (wrap > 0 && wrap < stored) {
    spec.segments.push_back({wrap, kStreamFrame, cached});
    spec.segments.push_back({stored - wrap, kStreamFrame, cached - wrap});
  } else {
    spec.segments.push_back({stored, kStreamFrame, cached});
  }
  for (int i = 0; i < num_queries; ++i) {
    spec.offsets[kStreamFrame].push_back(i);
    spec.offsets[kSinkFrame].push_back(std::min(window, cached + i + 1) - std::min(window, cached + 1));
  }
  spec.spans[kStreamFrame] = window;
  return spec;
}

/// A random chunk: segments of random length, frame and distance (some
/// queries see nothing of some segments, some see nothing at all), random
/// non-decreasing offsets and spans.
inline ChunkSpec random_chunk(std::mt19937& rng, int num_queries, int query_heads, int kv_heads, int head_dim,
                              bool alibi) {
  ChunkSpec spec;
  spec.num_queries = num_queries;
  spec.query_heads = query_heads;
  spec.kv_heads = kv_heads;
  spec.head_dim = head_dim;
  spec.alibi = alibi;
  std::uniform_int_distribution<int> segments(1, 4), length(0, 150), frame(0, 1), step(0, 2);
  const int count = segments(rng);
  for (int s = 0; s < count; ++s) {
    const int n = length(rng);
    std::uniform_int_distribution<int> distance(-num_queries, n + 40);
    spec.segments.push_back({n, frame(rng), distance(rng)});
  }
  for (int f = 0; f < kNumFrames; ++f) {
    int offset = 0;
    for (int i = 0; i < num_queries; ++i) {
      if (i > 0) offset += step(rng);
      spec.offsets[f].push_back(offset);
    }
    std::uniform_int_distribution<int> span(1, 200);
    spec.spans[f] = frame(rng) == 0 ? span(rng) : std::numeric_limits<int>::max();
  }
  return spec;
}

/// Owns the rows of a chunk (keys and values [kv_heads][capacity][head_dim]
/// with free slots between segments, query rows per frame) and exposes them
/// as ChunkArgs.
template <class T>
class HandMadeChunk {
 public:
  using C = compute_t<T>;

  HandMadeChunk(const ChunkSpec& spec, unsigned seed, double query_magnitude = 1.0) : spec_(spec) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    int capacity = 0;
    for (const auto& s : spec.segments) capacity += s.length + 3;  // gaps between segments
    capacity_ = std::max(capacity, 1);
    keys_.resize(static_cast<std::size_t>(spec.kv_heads) * capacity_ * spec.head_dim);
    values_.resize(keys_.size());
    for (T& x : keys_) x = T(static_cast<float>(uniform(random)));
    for (T& x : values_) x = T(static_cast<float>(uniform(random)));
    for (int f = 0; f < kNumFrames; ++f) {
      rows_[f].resize(static_cast<std::size_t>(spec.num_queries) * spec.query_heads * spec.head_dim);
      for (C& x : rows_[f]) x = static_cast<C>(query_magnitude * uniform(random));
    }
    slopes_.resize(static_cast<std::size_t>(spec.query_heads));
    for (int q = 0; q < spec.query_heads; ++q) slopes_[q] = static_cast<C>(std::pow(2.0, -(q % 8 + 1)));
    int slot = 1;
    for (const auto& s : spec.segments) {
      ChunkSegment<T> segment;
      segment.keys = keys_.data() + static_cast<std::ptrdiff_t>(slot) * spec.head_dim;
      segment.values = values_.data() + static_cast<std::ptrdiff_t>(slot) * spec.head_dim;
      segment.token_stride = spec.head_dim;
      segment.head_stride = static_cast<std::ptrdiff_t>(capacity_) * spec.head_dim;
      segment.length = s.length;
      segment.frame = s.frame;
      segment.query_distance = s.query_distance;
      segments_.push_back(segment);
      slot += s.length + 3;
    }
  }

  ChunkArgs<T> args() const {
    ChunkArgs<T> args;
    args.num_queries = spec_.num_queries;
    args.num_query_heads = spec_.query_heads;
    args.num_kv_heads = spec_.kv_heads;
    args.head_dim = spec_.head_dim;
    args.scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(spec_.head_dim)));
    args.alibi_slopes = spec_.alibi ? slopes_.data() : nullptr;
    for (int f = 0; f < kNumFrames; ++f) {
      args.frames[f].rows = rows_[f].data();
      args.frames[f].offsets = spec_.offsets[f].data();
      args.frames[f].span = spec_.spans[f];
    }
    args.segments = segments_.data();
    args.num_segments = static_cast<int>(segments_.size());
    return args;
  }

  /// Token j of segment s, KV head kv: its key and value rows (to poison).
  T* key(int s, int kv, int j) { return const_cast<T*>(segments_[s].keys) + kv * segments_[s].head_stride + j * spec_.head_dim; }
  T* value(int s, int kv, int j) {
    return const_cast<T*>(segments_[s].values) + kv * segments_[s].head_stride + j * spec_.head_dim;
  }
  /// Query i's row of query head q in frame f.
  C* query(int f, int i, int q) {
    return rows_[f].data() + (static_cast<std::ptrdiff_t>(i) * spec_.query_heads + q) * spec_.head_dim;
  }
  const ChunkSpec& spec() const { return spec_; }

  /// Output buffers: rows [num_queries][query_heads][head_dim + 3] (padded,
  /// so the kernel must honour the strides), log-sum-exps [num_queries][query_heads].
  struct Result {
    std::vector<C> output;
    std::vector<C> log_sum_exp;
    int query_heads, row_stride;
    ChunkOutput<C> view() {
      return {output.data(), static_cast<std::ptrdiff_t>(query_heads) * row_stride, row_stride, log_sum_exp.data()};
    }
    C at(int i, int q, int d) const {
      return output[(static_cast<std::size_t>(i) * query_heads + q) * row_stride + d];
    }
    C lse(int i, int q) const { return log_sum_exp[static_cast<std::size_t>(i) * query_heads + q]; }
  };
  /// Filled with `garbage`: a kernel must overwrite every element it owns.
  Result make_result(C garbage = C(-7)) const {
    const int stride = spec_.head_dim + 3;
    return Result{std::vector<C>(static_cast<std::size_t>(spec_.num_queries) * spec_.query_heads * stride, garbage),
                  std::vector<C>(static_cast<std::size_t>(spec_.num_queries) * spec_.query_heads, garbage),
                  spec_.query_heads, stride};
  }

 private:
  ChunkSpec spec_;
  int capacity_ = 1;
  std::vector<T> keys_, values_;
  std::vector<C> rows_[kNumFrames];
  std::vector<C> slopes_;
  std::vector<ChunkSegment<T>> segments_;
};

}  // namespace sinkkv::testing

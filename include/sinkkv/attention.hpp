// sinkkv: the attention kernel contract.
//
// A cache decides *what* a query attends to (which tokens, in which frames
// and at which distances); a kernel decides *how* to compute it. The two
// meet in AttentionArgs: a few contiguous segments of one layer's cache,
// each with the query already rotated for that segment's positions.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "detail/abi_namespace.hpp"
#include "detail/element.hpp"
#include "detail/softmax_state.hpp"
#include "error.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// The arithmetic type for storage type T: float for float/half/bfloat16,
/// double for double.
template <class T>
using compute_t = typename detail::ElementTraits<T>::compute_type;

/// One run of cached tokens with consecutive cache positions, stored with
/// uniform strides.
///
/// Token j (0 <= j < length) of KV head h has its key at
/// keys + h * head_stride + j * token_stride (head_dim contiguous elements),
/// its value at the same offset from values. Its score against query head q
/// (KV head q / group size) is
///   scale * dot(query[q], key) - alibi_slope[q] * (query_distance - j)
/// where the ALiBi term is present only when AttentionArgs::alibi_slopes is.
template <class T>
struct KVSegment {
  using compute_type = compute_t<T>;
  /// [num_query_heads, head_dim], contiguous: the query rotated so that its
  /// dot product with these keys sees cache-relative distances.
  const compute_type* query = nullptr;
  const T* keys = nullptr;
  const T* values = nullptr;
  std::ptrdiff_t token_stride = 0;
  std::ptrdiff_t head_stride = 0;
  int length = 0;
  /// Cache position of the query minus that of token 0 (>= 0).
  int query_distance = 0;

  /// Tokens [begin, begin + count) of this segment as a segment of its own.
  KVSegment slice(int begin, int count) const {
    KVSegment part = *this;
    part.keys += begin * token_stride;
    part.values += begin * token_stride;
    part.length = count;
    part.query_distance -= begin;
    return part;
  }
};

/// Everything a kernel needs for one query token on one layer.
/// Grouped-query attention: query head q reads KV head q / group_size().
/// The segments are disjoint; together they are every cached token
/// (the query's own key included).
template <class T>
struct AttentionArgs {
  using compute_type = compute_t<T>;
  /// Which of the layer's query heads this call's head 0 is: a cache whose
  /// KV heads keep different tokens calls the kernel once per run of heads
  /// that share a policy. Kernels need not read it (everything they index
  /// is relative); a probe can.
  int first_query_head = 0;
  int num_query_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  compute_type scale = 0;
  /// [num_query_heads] slopes when the cache uses ALiBi, else nullptr.
  const compute_type* alibi_slopes = nullptr;
  const KVSegment<T>* segments = nullptr;
  int num_segments = 0;

  int group_size() const { return num_query_heads / num_kv_heads; }
  int kv_head_of(int query_head) const { return query_head / group_size(); }
  int num_tokens() const {
    int total = 0;
    for (int s = 0; s < num_segments; ++s) total += segments[s].length;
    return total;
  }
  /// The query is always the newest cached token, so its cache position is
  /// the last one; token j of a segment sits at query_position() -
  /// (query_distance - j).
  int query_position() const { return num_tokens() - 1; }
};

/// Where a kernel writes: the softmax-weighted values of each query head
/// (head_dim contiguous, heads head_stride apart) and the natural-log
/// log-sum-exp of each head's scores, which lets partial results merge.
template <class C>
struct AttentionOutput {
  C* data = nullptr;
  std::ptrdiff_t head_stride = 0;
  C* log_sum_exp = nullptr;  ///< [num_query_heads]
};

/// A kernel is any type callable as
///   kernel(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out)
/// that fills every head of `out` (overwriting it) with softmax attention
/// over all segments of `args`, and never allocates per call.
template <class Kernel, class T>
inline constexpr bool is_attention_kernel_v =
    std::is_invocable_v<Kernel&, const AttentionArgs<T>&, const AttentionOutput<compute_t<T>>&>;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
template <class Kernel, class T>
concept AttentionKernel = requires(Kernel& kernel, const AttentionArgs<T>& args,
                                   const AttentionOutput<compute_t<T>>& out) {
  kernel(args, out);
};
#endif

// ---- chunks of queries (prefill) -------------------------------------------
//
// A chunk is C consecutive stream tokens attended in one call. Query i of a
// chunk sees exactly what it would have seen had the tokens come one at a
// time, so each query has its own visible keys and its own rotated rows. The
// cache describes this with two *frames*: frame 0 (kStreamFrame) scores the
// window at stream positions, frame 1 (kSinkFrame) scores the sinks at each
// query's cache position (see docs/design.md). Every key belongs to one
// frame through its segment; a query has one row per frame.
//
// Distances: in its segment's frame, token j of segment s sits at distance
//   distance(s, i, j) = segments[s].query_distance + frames[f].offsets[i] - j
// from query i (f = segments[s].frame). It is visible to query i iff
//   0 <= distance < frames[f].span,
// a band: a causal mask plus a sliding window. Its score is
//   scale * dot(frames[f].rows[i][q], key) - alibi_slopes[q] * distance.

/// Frame 0: keys at their stream positions (the window).
inline constexpr int kStreamFrame = 0;
/// Frame 1: keys at their cache positions (the sinks).
inline constexpr int kSinkFrame = 1;
inline constexpr int kNumFrames = 2;

/// One frame's query rows for a chunk.
template <class C>
struct QueryFrame {
  /// [num_queries, num_query_heads, head_dim], contiguous: the queries
  /// rotated to their positions in this frame.
  const C* rows = nullptr;
  /// [num_queries]: this frame's position of query i minus that of query 0;
  /// offsets[0] == 0, non-decreasing.
  const int* offsets = nullptr;
  /// Keys at distance >= span are not visible (the window); the sink frame
  /// uses std::numeric_limits<int>::max() (no limit).
  int span = std::numeric_limits<int>::max();
};

/// One run of cached tokens for a chunk: storage as KVSegment, plus the frame
/// that scores it and its distance from query 0.
template <class T>
struct ChunkSegment {
  const T* keys = nullptr;
  const T* values = nullptr;
  std::ptrdiff_t token_stride = 0;
  std::ptrdiff_t head_stride = 0;
  int length = 0;
  int frame = kStreamFrame;  ///< kStreamFrame or kSinkFrame
  /// Position of query 0 minus that of token 0, in this segment's frame; may
  /// be negative (tokens of the chunk newer than query 0).
  int query_distance = 0;

  /// Tokens [begin, begin + count) as a segment of their own.
  ChunkSegment slice(int begin, int count) const {
    ChunkSegment part = *this;
    part.keys += begin * token_stride;
    part.values += begin * token_stride;
    part.length = count;
    part.query_distance -= begin;
    return part;
  }
};

/// Everything a kernel needs to attend a chunk of queries on one layer.
/// Grouped-query attention as in AttentionArgs: query head q reads KV head
/// q / group_size(). Segments are disjoint and in stream order within a frame.
template <class T>
struct ChunkArgs {
  using compute_type = compute_t<T>;
  int num_queries = 0;
  /// As AttentionArgs::first_query_head.
  int first_query_head = 0;
  int num_query_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  compute_type scale = 0;
  /// [num_query_heads] slopes when the cache uses ALiBi, else nullptr.
  const compute_type* alibi_slopes = nullptr;
  QueryFrame<compute_type> frames[kNumFrames] = {};
  const ChunkSegment<T>* segments = nullptr;
  int num_segments = 0;

  int group_size() const { return num_query_heads / num_kv_heads; }
  int kv_head_of(int query_head) const { return query_head / group_size(); }
  /// Query i's row of query head q in `frame`: [head_dim].
  const compute_type* query_row(int frame, int i, int q) const {
    return frames[frame].rows + (static_cast<std::ptrdiff_t>(i) * num_query_heads + q) * head_dim;
  }
  /// Distance of token j of `segment` from query i (see above); 64-bit so
  /// that no sum of valid fields overflows.
  std::int64_t distance(const ChunkSegment<T>& segment, int i, int j) const {
    return static_cast<std::int64_t>(segment.query_distance) + frames[segment.frame].offsets[i] - j;
  }
  /// The tokens of `segment` visible to query i: [first, last) (empty when
  /// first >= last). O(1).
  std::pair<int, int> visible(const ChunkSegment<T>& segment, int i) const {
    const std::int64_t newest = static_cast<std::int64_t>(segment.query_distance) + frames[segment.frame].offsets[i];
    const std::int64_t first = std::max<std::int64_t>(0, newest - frames[segment.frame].span + 1);
    const std::int64_t last = std::min<std::int64_t>(segment.length, newest + 1);
    return {static_cast<int>(first), static_cast<int>(std::max(first, last))};
  }
};

/// Where a chunk kernel writes: query i, head q's output row (head_dim
/// contiguous) at data + i * query_stride + q * head_stride, and its
/// natural-log log-sum-exp at log_sum_exp[i * num_query_heads + q]. A query
/// head that sees no key gets a zero row and a log-sum-exp of -infinity (so
/// partial results over disjoint keys still merge).
template <class C>
struct ChunkOutput {
  C* data = nullptr;
  std::ptrdiff_t query_stride = 0;
  std::ptrdiff_t head_stride = 0;
  C* log_sum_exp = nullptr;  ///< [num_queries, num_query_heads]
};

/// A kernel handles chunks natively when it is also callable as
///   kernel(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out)
/// (filling every query and head of `out`, never allocating per call).
/// Kernels without this overload still work with chunks: the cache then
/// calls their single-query operator once per query of the chunk.
template <class Kernel, class T>
inline constexpr bool is_chunk_kernel_v =
    std::is_invocable_v<Kernel&, const ChunkArgs<T>&, const ChunkOutput<compute_t<T>>&>;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
template <class Kernel, class T>
concept ChunkAttentionKernel = requires(Kernel& kernel, const ChunkArgs<T>& args,
                                        const ChunkOutput<compute_t<T>>& out) {
  kernel(args, out);
};
#endif

/// Merges partial result b (over other tokens) into partial result a, per
/// query head: afterwards a holds attention over the union. O(heads * dim).
template <class C>
void merge_partial(int num_heads, int head_dim, const AttentionOutput<C>& a, const AttentionOutput<C>& b) {
  for (int h = 0; h < num_heads; ++h) {
    const auto w = detail::merge_weights(a.log_sum_exp[h], b.log_sum_exp[h]);
    C* out = a.data + h * a.head_stride;
    const C* other = b.data + h * b.head_stride;
    for (int d = 0; d < head_dim; ++d) out[d] = w.weight_a * out[d] + w.weight_b * other[d];
    a.log_sum_exp[h] = w.log_sum_exp;
  }
}

/// Per-call options of a cache's attend().
template <class C>
struct AttendOptions {
  /// Softmax scale; 0 means 1 / sqrt(head_dim). Must be finite.
  C scale = 0;
  /// gpt-oss-style learned sink logits: one extra softmax column per query
  /// head with a zero value, [num_sink_logits] (must equal num_query_heads),
  /// or nullptr for none. Finite or -infinity (no sink); NaN and +infinity
  /// are rejected.
  const C* sink_logits = nullptr;
  int num_sink_logits = 0;
};

/// gpt-oss-style learned sinks: each head's softmax gets one extra logit with
/// a zero value, so out *= e^lse / (e^lse + e^sink) and the log-sum-exp
/// grows accordingly. Applied after the kernel; O(heads * dim).
template <class C>
void apply_sink_logits(int num_heads, int head_dim, const C* sink_logits, const AttentionOutput<C>& out) {
  for (int h = 0; h < num_heads; ++h) {
    const auto w = detail::merge_weights(out.log_sum_exp[h], sink_logits[h]);
    C* row = out.data + h * out.head_stride;
    for (int d = 0; d < head_dim; ++d) row[d] *= w.weight_a;
    out.log_sum_exp[h] = w.log_sum_exp;
  }
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv

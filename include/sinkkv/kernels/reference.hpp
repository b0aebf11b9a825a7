// sinkkv: the reference attention kernel (the oracle for every other one).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "../attention.hpp"
#include "../detail/abi_namespace.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// Naive softmax attention in double precision: three passes over the
/// scores (max, normaliser, weighted values). Slow on purpose: it has no
/// blocking, no online rescaling and no vectorisation to get wrong.
/// Handles single queries (AttentionArgs) and chunks (ChunkArgs) alike.
///
/// Zero allocations: the weighted values are summed in double on the stack,
/// kMaxStackDims dimensions at a time. Cost O(heads * tokens * head_dim) per
/// query for head_dim <= kMaxStackDims (every dimension in use today); larger
/// heads recompute the scores once per kMaxStackDims dimensions.
struct ReferenceKernel {
  static constexpr int kMaxStackDims = 512;

  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    for (int q = 0; q < args.num_query_heads; ++q) {
      const auto for_each_score = [&](auto&& visit) {
        for (int s = 0; s < args.num_segments; ++s) {
          const KVSegment<T>& segment = args.segments[s];
          for (int j = 0; j < segment.length; ++j) {
            visit(segment, j, segment.query + q * args.head_dim,
                  static_cast<double>(segment.query_distance - j));
          }
        }
      };
      attend_one(args.head_dim, args.kv_head_of(q), args.scale, args.alibi_slopes ? args.alibi_slopes + q : nullptr,
                 for_each_score, out.data + q * out.head_stride, out.log_sum_exp[q]);
    }
  }

  template <class T>
  void operator()(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out) const {
    for (int i = 0; i < args.num_queries; ++i) {
      for (int q = 0; q < args.num_query_heads; ++q) {
        const auto for_each_score = [&](auto&& visit) {
          for (int s = 0; s < args.num_segments; ++s) {
            const ChunkSegment<T>& segment = args.segments[s];
            const auto [first, last] = args.visible(segment, i);
            for (int j = first; j < last; ++j) {
              visit(segment, j, args.query_row(segment.frame, i, q),
                    static_cast<double>(args.distance(segment, i, j)));
            }
          }
        };
        attend_one(args.head_dim, args.kv_head_of(q), args.scale,
                   args.alibi_slopes ? args.alibi_slopes + q : nullptr, for_each_score,
                   out.data + i * out.query_stride + q * out.head_stride,
                   out.log_sum_exp[static_cast<std::ptrdiff_t>(i) * args.num_query_heads + q]);
      }
    }
  }

 private:
  /// Softmax attention of one query row over the keys `for_each_score`
  /// visits as (segment, token j, query row, distance).
  template <class C, class ForEach>
  static void attend_one(int head_dim, int kv, C scale, const C* alibi_slope, const ForEach& for_each_score, C* row,
                         C& log_sum_exp) {
    const auto score_of = [&](const auto& segment, int j, const C* query, double distance) {
      const auto* key = segment.keys + kv * segment.head_stride + j * segment.token_stride;
      double dot = 0;
      for (int d = 0; d < head_dim; ++d) dot += detail::to_double(query[d]) * detail::to_double(key[d]);
      double score = detail::to_double(scale) * dot;
      if (alibi_slope != nullptr) score -= detail::to_double(*alibi_slope) * distance;
      return score;
    };
    double max_score = -std::numeric_limits<double>::infinity();
    bool any = false;
    bool nan = false;
    for_each_score([&](const auto& segment, int j, const C* query, double distance) {
      const double score = score_of(segment, j, query, distance);
      any = true;
      nan = nan || std::isnan(score);
      max_score = std::max(max_score, score);
    });
    if (!any) {  // no visible key: the contract's empty result
      std::fill(row, row + head_dim, C(0));
      log_sum_exp = -std::numeric_limits<C>::infinity();
      return;
    }
    if (nan) max_score = std::numeric_limits<double>::quiet_NaN();  // std::max drops NaN; the result must not
    double sum = 0;
    for_each_score([&](const auto& segment, int j, const C* query, double distance) {
      sum += std::exp(score_of(segment, j, query, distance) - max_score);
    });
    for (int d0 = 0; d0 < head_dim; d0 += kMaxStackDims) {
      const int dims = std::min(kMaxStackDims, head_dim - d0);
      double weighted[kMaxStackDims];
      std::fill(weighted, weighted + dims, 0.0);
      for_each_score([&](const auto& segment, int j, const C* query, double distance) {
        const double weight = std::exp(score_of(segment, j, query, distance) - max_score) / sum;
        const auto* value = segment.values + kv * segment.head_stride + j * segment.token_stride + d0;
        for (int d = 0; d < dims; ++d) weighted[d] += weight * detail::to_double(value[d]);
      });
      for (int d = 0; d < dims; ++d) row[d0 + d] = static_cast<C>(weighted[d]);
    }
    log_sum_exp = static_cast<C>(max_score + std::log(sum));
  }
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv

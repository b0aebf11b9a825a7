// sinkkv: the reference attention kernel (the oracle for every other one).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "../attention.hpp"

namespace sinkkv {

/// Naive softmax attention in double precision: three passes over the
/// scores (max, normaliser, weighted values). Slow on purpose: it has no
/// blocking, no online rescaling and no vectorisation to get wrong.
/// Zero allocations; O(heads * tokens * head_dim) per call.
struct ReferenceKernel {
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    using C = compute_t<T>;
    for (int q = 0; q < args.num_query_heads; ++q) {
      const int kv = args.kv_head_of(q);
      double max_score = -std::numeric_limits<double>::infinity();
      for_each_score<T>(args, q, kv, [&](const KVSegment<T>&, int, double score) {
        max_score = std::max(max_score, score);
      });
      double sum = 0;
      for_each_score<T>(args, q, kv,
                        [&](const KVSegment<T>&, int, double score) { sum += std::exp(score - max_score); });
      C* row = out.data + q * out.head_stride;
      for (int d = 0; d < args.head_dim; ++d) {
        double weighted = 0;
        for_each_score<T>(args, q, kv, [&](const KVSegment<T>& segment, int j, double score) {
          const T* value = segment.values + kv * segment.head_stride + j * segment.token_stride;
          weighted += std::exp(score - max_score) / sum * detail::to_double(value[d]);
        });
        row[d] = static_cast<C>(weighted);
      }
      out.log_sum_exp[q] = static_cast<C>(max_score + std::log(sum));
    }
  }

 private:
  template <class T, class Visit>
  static void for_each_score(const AttentionArgs<T>& args, int q, int kv, Visit&& visit) {
    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& segment = args.segments[s];
      const auto* query = segment.query + q * args.head_dim;
      for (int j = 0; j < segment.length; ++j) {
        const T* key = segment.keys + kv * segment.head_stride + j * segment.token_stride;
        double dot = 0;
        for (int d = 0; d < args.head_dim; ++d) dot += detail::to_double(query[d]) * detail::to_double(key[d]);
        double score = detail::to_double(args.scale) * dot;
        if (args.alibi_slopes != nullptr) {
          score -= detail::to_double(args.alibi_slopes[q]) * static_cast<double>(segment.query_distance - j);
        }
        visit(segment, j, score);
      }
    }
  }
};

}  // namespace sinkkv

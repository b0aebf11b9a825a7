// sinkkv: the fast CPU attention kernel for one decode token.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "../attention.hpp"
#include "../detail/simd.hpp"
#include "../detail/softmax_state.hpp"

namespace sinkkv {

/// Single-pass decode attention with an online softmax, one thread.
///
/// Memory traffic is the cost of decode attention, so every key and value
/// row is read from memory once for all the query heads that share it
/// (grouped-query attention). Per KV head, tokens go in blocks small enough
/// to stay in L1 (block_tokens()):
///   1. scores of the block for all the group's query heads, as register
///      tiles of (tokens x heads) dot products finished by one transposing
///      reduction (detail::simd::reduce_lanes);
///   2. per head: ALiBi bias, block maximum, one rescale factor for the
///      running output, exp() of the block's scores (vectorised polynomial);
///   3. the weighted value rows added to the running output, as register
///      tiles of (heads x dimension chunk) accumulators.
/// The running output lives in `out` itself and the scores in a small stack
/// array: zero allocations per call, stack use about 5 KiB.
///
/// Vector width follows the compiler flags of the including translation
/// unit (see detail/simd.hpp): AVX-512F, AVX2+FMA, or SSE2 (any x86-64).
/// Storage float, Eigen::half and Eigen::bfloat16 take this path when
/// head_dim is a multiple of the vector width; double storage, other head
/// sizes and non-x86 targets use an Eigen-vectorised loop with the same
/// single-read structure (groups of up to kMaxGroup query heads).
///
/// Arithmetic is float for float/half/bfloat16 (double for double); results
/// match ReferenceKernel to float rounding (see tests/kernels_cpu_test.cpp).
/// The one exception is opt-in: bfloat16_dot_products.
/// Cost: O(num_query_heads * num_tokens * head_dim) flops,
/// 2 * num_kv_heads * num_tokens * head_dim * sizeof(T) bytes read.
struct CpuKernel {
  /// Largest token block; the block is shrunk so that its key rows fit in
  /// about 16 KiB (a third of a typical L1 data cache).
  static constexpr int kMaxBlockTokens = 64;
  /// Query heads that share one read of a K/V row; larger groups are split
  /// into passes that each read the rows again.
  static constexpr int kMaxGroup = 16;

  /// Largest head_dim for bfloat16_dot_products (the rounded query rows of
  /// a group live on the stack: kMaxGroup x 256 x 2 bytes).
  static constexpr int kMaxBfloat16DotHeadDim = 256;

  /// Allows bfloat16 scores: for bfloat16 storage, the query is rounded to
  /// bfloat16 (nearest-even, once per call) and the score dot products run
  /// on bfloat16 pairs (VDPBF16PS), about twice as fast. Every score then
  /// carries the query's rounding, a relative error up to 2^-9 of |q||k|,
  /// as when ggml dots a bfloat16 cache. Takes effect only where
  /// uses_bfloat16_dot() says so (AVX512-BF16 in the compiler flags,
  /// bfloat16 storage, head_dim a multiple of 32 up to
  /// kMaxBfloat16DotHeadDim); elsewhere it changes nothing. Off by default.
  bool bfloat16_dot_products = false;

  /// True when bfloat16_dot_products takes effect for storage T and this head size.
  template <class T>
  static constexpr bool uses_bfloat16_dot(int head_dim) {
    return detail::simd::kBfloat16Dot && std::is_same_v<T, Eigen::bfloat16> && head_dim % 32 == 0 &&
           head_dim <= kMaxBfloat16DotHeadDim;
  }

  /// True when storage T with this head size takes the vectorised path.
  template <class T>
  static constexpr bool uses_vector_path(int head_dim) {
    return detail::simd::kAvailable && std::is_same_v<compute_t<T>, float> && head_dim % simd_lanes() == 0;
  }
  /// Vector width in floats of the vectorised path (1 when there is none).
  static constexpr int simd_lanes() { return detail::simd::kLanes; }
  /// Tokens per block for this row size.
  static constexpr int block_tokens(int head_dim, std::size_t element_bytes) {
    const std::size_t rows = std::size_t{16384} / (static_cast<std::size_t>(head_dim) * element_bytes);
    const int fitted = static_cast<int>(std::min<std::size_t>(rows, kMaxBlockTokens)) / 16 * 16;
    return std::max(16, fitted);
  }

  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) const {
    const int group = args.group_size();
    if constexpr (detail::simd::kAvailable && std::is_same_v<compute_t<T>, float>) {
      if (uses_vector_path<T>(args.head_dim)) {
        for (int kv = 0; kv < args.num_kv_heads; ++kv) {
          for (int first = 0; first < group; first += kMaxGroup) {
            // The KV head read after this pass, for prefetching across the boundary.
            const int next_kv = first + kMaxGroup < group ? kv : (kv + 1 < args.num_kv_heads ? kv + 1 : -1);
            Vectorized<T>::attend_heads(args, out, kv, kv * group + first, std::min(kMaxGroup, group - first),
                                        next_kv, bfloat16_dot_products && uses_bfloat16_dot<T>(args.head_dim));
          }
        }
        return;
      }
    }
    for (int kv = 0; kv < args.num_kv_heads; ++kv) {
      for (int first = 0; first < group; first += kMaxGroup) {
        attend_heads_eigen(args, out, kv, kv * group + first, std::min(kMaxGroup, group - first));
      }
    }
  }

 private:
  template <class T, bool kVector = detail::simd::kAvailable>
  struct Vectorized;

  template <class T>
  struct Vectorized<T, true> {
    static constexpr int L = detail::simd::kLanes;
    using Vec = detail::simd::Vec;
    /// Query heads per score tile: with L / 4 heads x 4 tokens, each query
    /// and key vector loaded feeds 4 FMAs, so the loads (kScoreHeads + 4 per
    /// 16 FMAs with AVX-512) stay under the FMA throughput.
    static constexpr int kScoreHeads = std::max(1, L / 4);

    /// The operands of one score step, chosen by the query's type: float
    /// vectors (L dimensions, FMA), or, for uses_bfloat16_dot, bfloat16
    /// pairs (2L dimensions, VDPBF16PS) with the query rounded to bfloat16
    /// bits beforehand.
    SINKKV_ALWAYS_INLINE static Vec query_operand(const float* p) { return detail::simd::load(p); }
    SINKKV_ALWAYS_INLINE static Vec key_operand(const T* p, const float* /*query type*/) {
      return detail::simd::load(p);
    }
    SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, Vec query, Vec key) {
      return detail::simd::fma(query, key, acc);
    }
#if defined(__AVX512BF16__)
    SINKKV_ALWAYS_INLINE static detail::simd::BfloatPairs query_operand(const std::uint16_t* p) {
      return detail::simd::load_pairs(p);
    }
    SINKKV_ALWAYS_INLINE static detail::simd::BfloatPairs key_operand(const T* p, const std::uint16_t* /*query type*/) {
      static_assert(std::is_same_v<T, Eigen::bfloat16>, "bfloat16 pairs need bfloat16 keys");
      return detail::simd::load_pairs(p);
    }
    SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, detail::simd::BfloatPairs query,
                                                 detail::simd::BfloatPairs key) {
      return detail::simd::dot_pairs(acc, query, key);
    }
#endif

    /// Scores of tokens [j0, j0 + valid) (valid <= kTokens) against kHeads
    /// query heads: a kHeads x kTokens register tile over the whole row,
    /// finished by one transposing reduction. A partial tile (kFull false)
    /// repeats the last valid row and discards its scores; full tiles skip
    /// that clamping, whose pointer arithmetic alone cost a third of the
    /// tile's time (GPR pressure) on Zen 5. `query` holds the kHeads query
    /// rows, head_dim apart, as float or as bfloat16 bits (see query_operand).
    template <int kHeads, bool kFull, class Query>
    SINKKV_ALWAYS_INLINE static void score_tile(const Query* query, int head_dim, const T* keys,
                                                std::ptrdiff_t token_stride, int valid, float scale, float* scores,
                                                int j0) {
      using Operand = decltype(query_operand(query));
      constexpr int kTokens = L / kHeads;
      constexpr int kDims = sizeof(Operand) / sizeof(Query);  // per step
      Vec acc[kHeads * kTokens];  // lane h * kTokens + t of the reduction: head h, token t
      const T* row[kTokens];
      for (int t = 0; t < kTokens; ++t) row[t] = keys + (kFull ? t : std::min(t, valid - 1)) * token_stride;
      for (int i = 0; i < kHeads * kTokens; ++i) acc[i] = detail::simd::zero();
      for (int d = 0; d < head_dim; d += kDims) {
        // An operand that feeds several multiply-adds is loaded once into a
        // register; one that feeds a single one is better folded into it as
        // a memory operand (pinning 16 key rows for one head would spill).
        Operand key[kTokens];
        for (int t = 0; t < kTokens; ++t) {
          key[t] = key_operand(row[t] + d, query);
          if constexpr (kHeads > 1) key[t] = detail::simd::keep_in_register(key[t]);
        }
        for (int h = 0; h < kHeads; ++h) {
          Operand q = query_operand(query + h * head_dim + d);
          if constexpr (kTokens > 1) q = detail::simd::keep_in_register(q);
          for (int t = 0; t < kTokens; ++t) acc[h * kTokens + t] = multiply_add(acc[h * kTokens + t], q, key[t]);
        }
      }
      const Vec sums = detail::simd::mul(detail::simd::reduce_lanes(acc), detail::simd::broadcast(scale));
      // Head h's scores are lanes [h * kTokens, h * kTokens + valid): stored
      // straight from the register (reading them back one by one after a
      // full-width store stalls store-to-load forwarding).
      for (int h = 0; h < kHeads; ++h) {
        detail::simd::store_lanes(scores + h * kMaxBlockTokens + j0 - h * kTokens, sums, h * kTokens,
                                  kFull ? kTokens : valid);
      }
    }

    /// Scores of `count` tokens for kHeads heads.
    /// Also prefetches row j of `prefetch_rows` (count rows) as it goes, so
    /// that the next phase finds them in L1 without a burst of misses.
    /// Query is float, or std::uint16_t for bfloat16 bits (uses_bfloat16_dot).
    template <int kHeads, class Query>
    SINKKV_NOINLINE static void score_block(const Query* query, int head_dim, const T* keys,
                                            std::ptrdiff_t token_stride, int count, float scale, float* scores,
                                            const T* prefetch_rows, int prefetch_count) {
      constexpr int kTokens = L / kHeads;
      const std::size_t row_bytes = static_cast<std::size_t>(head_dim) * sizeof(T);
      int j = 0;
      for (; j < count; j += kTokens) {
        for (int t = j; t < std::min(j + kTokens, prefetch_count); ++t) {
          detail::simd::prefetch(prefetch_rows + t * token_stride, row_bytes);
        }
        if (j + kTokens > count) break;
        score_tile<kHeads, true>(query, head_dim, keys + j * token_stride, token_stride, kTokens, scale, scores, j);
      }
      if (j < count) {
        score_tile<kHeads, false>(query, head_dim, keys + j * token_stride, token_stride, count - j, scale, scores, j);
      }
    }

    /// Key rows to prefetch into L1 while a block's values are summed: the
    /// next block's, one row per summed token, so that the score phase
    /// starts on cached keys. One block ahead is measured: also prefetching
    /// keys and values 2, 4 or 8 blocks ahead into L2 ran 1.05-2.3x slower
    /// in every cell tried on Zen 5 (docs/performance.md).
    struct Prefetch {
      const T* keys = nullptr;
      std::ptrdiff_t token_stride = 0;
      int count = 0;
      std::size_t row_bytes = 0;
    };

    /// out[h][chunk] = factor[h] * out[h][chunk] + sum_j p[h][j] * value_j[chunk]
    /// for kHeads heads and a chunk of kChunk vectors starting at column d0.
    /// Prefetch row j is requested beside value row j (rows past `count`
    /// after the loop).
    template <int kHeads, int kChunk>
    SINKKV_ALWAYS_INLINE static void value_tile(const float* weights, const float* factor, const T* values, std::ptrdiff_t token_stride,
                           int count, float* const* out_rows, int d0, const Prefetch& ahead) {
      Vec acc[kHeads * kChunk];
      for (int h = 0; h < kHeads; ++h) {
        const Vec f = detail::simd::broadcast(factor[h]);
        for (int c = 0; c < kChunk; ++c) {
          acc[h * kChunk + c] = detail::simd::mul(f, detail::simd::load(out_rows[h] + d0 + c * L));
        }
      }
      const T* row = values + d0;
      for (int j = 0; j < count; ++j, row += token_stride) {
        if (j < ahead.count) detail::simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
        Vec value[kChunk];
        for (int c = 0; c < kChunk; ++c) {
          value[c] = detail::simd::load(row + c * L);
          if constexpr (kHeads > 1) value[c] = detail::simd::keep_in_register(value[c]);
        }
        for (int h = 0; h < kHeads; ++h) {
          const Vec w = detail::simd::broadcast(weights[h * kMaxBlockTokens + j]);
          for (int c = 0; c < kChunk; ++c) acc[h * kChunk + c] = detail::simd::fma(w, value[c], acc[h * kChunk + c]);
        }
      }
      for (int j = count; j < ahead.count; ++j) {
        detail::simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
      }
      for (int h = 0; h < kHeads; ++h) {
        for (int c = 0; c < kChunk; ++c) detail::simd::store(out_rows[h] + d0 + c * L, acc[h * kChunk + c]);
      }
    }

    /// Columns [v * L, head_dim) in chunks of kChunk vectors, the remainder
    /// in smaller chunks.
    template <int kHeads, int kChunk>
    SINKKV_NOINLINE static void value_block(const float* weights, const float* factor, const T* values, std::ptrdiff_t token_stride,
                            int count, float* const* out_rows, int head_dim, int v, Prefetch ahead) {
      const int num_vectors = head_dim / L;
      for (; v + kChunk <= num_vectors; v += kChunk) {
        value_tile<kHeads, kChunk>(weights, factor, values, token_stride, count, out_rows, v * L, ahead);
        ahead = Prefetch{};  // once per block
      }
      if constexpr (kChunk > 1) {
        if (v < num_vectors) {
          value_block<kHeads, kChunk / 2>(weights, factor, values, token_stride, count, out_rows, head_dim, v, ahead);
        }
      }
    }

    /// Runs F<kHeads>(first) over `num_heads` heads in sub-groups of
    /// kHeads in {16, 8, 4, 2, 1} (at most kLanes): a score tile needs
    /// kLanes / kHeads whole tokens.
    template <int kHeads, class Visit>
    static void for_head_groups(int first, int num_heads, Visit&& visit) {
      if constexpr (kHeads > L) {
        for_head_groups<kHeads / 2>(first, num_heads, visit);
      } else {
        for (; first + kHeads <= num_heads; first += kHeads) visit(std::integral_constant<int, kHeads>{}, first);
        if constexpr (kHeads > 1) {
          if (first < num_heads) for_head_groups<kHeads / 2>(first, num_heads, visit);
        }
      }
    }

    /// The key rows of the block the kernel reads after the block at token
    /// `block` of segment `s`: the next one in this segment, else the first
    /// of the next non-empty segment, else that of KV head `next_kv` (-1:
    /// none). Crossing segments and heads keeps short caches, whose heads
    /// are a few blocks each, from starting every head cold.
    static Prefetch next_block(const AttentionArgs<T>& args, int kv, int next_kv, int s, int block, int block_size) {
      Prefetch next;
      next.row_bytes = static_cast<std::size_t>(args.head_dim) * sizeof(T);
      int first = block + block_size;
      for (int head = kv, pass = 0; pass < 2; ++pass, head = next_kv, s = 0, first = 0) {
        if (head < 0) break;
        for (; s < args.num_segments; ++s, first = 0) {
          const KVSegment<T>& segment = args.segments[s];
          if (first < segment.length) {
            next.keys = segment.keys + head * segment.head_stride + first * segment.token_stride;
            next.token_stride = segment.token_stride;
            next.count = std::min(block_size, segment.length - first);
            return next;
          }
        }
      }
      return Prefetch{};
    }

    static void attend_heads(const AttentionArgs<T>& args, const AttentionOutput<float>& out, int kv,
                             int first_head, int num_heads, int next_kv, bool bfloat16_dot) {
      // The group's query rows rounded to bfloat16 (raw bits: an array of
      // Eigen::bfloat16 would be zero-filled on every call), for
      // bfloat16_dot; only instantiated with room where it can be used.
      constexpr bool kPairs = detail::simd::kBfloat16Dot && std::is_same_v<T, Eigen::bfloat16>;
      alignas(64) std::uint16_t rounded_query[kPairs ? kMaxGroup * kMaxBfloat16DotHeadDim : 1];
      const int head_dim = args.head_dim;
      const int block_size = block_tokens(head_dim, sizeof(T));
      detail::SoftmaxState<float> state[kMaxGroup];
      alignas(64) float scores[kMaxGroup * kMaxBlockTokens];  // [head][token]: scores, then exp-weights
      float factor[kMaxGroup];
      float* out_rows[kMaxGroup];
      for (int h = 0; h < num_heads; ++h) {
        out_rows[h] = out.data + (first_head + h) * out.head_stride;
        std::fill(out_rows[h], out_rows[h] + head_dim, 0.0f);
      }

      for (int s = 0; s < args.num_segments; ++s) {
        const KVSegment<T>& segment = args.segments[s];
        const T* keys = segment.keys + kv * segment.head_stride;
        const T* values = segment.values + kv * segment.head_stride;
        const float* query = segment.query + first_head * head_dim;
#if defined(__AVX512BF16__)
        if constexpr (kPairs) {
          if (bfloat16_dot) {
            for (int i = 0; i < num_heads * head_dim; i += 2 * L) {
              detail::simd::store_rounded_pairs(rounded_query + i, detail::simd::load(query + i),
                                                detail::simd::load(query + i + L));
            }
          }
        }
#endif
        for (int block = 0; block < segment.length; block += block_size) {
          const int count = std::min(block_size, segment.length - block);
          const T* block_keys = keys + block * segment.token_stride;
          const T* block_values = values + block * segment.token_stride;

          // 1. scores
          for_head_groups<kScoreHeads>(0, num_heads, [&](auto heads, int h0) {
            // The first head group also prefetches this block's values (for
            // every row size: without it, 256-byte rows from DRAM ran up to
            // 2.3x slower).
            constexpr int kHeads = decltype(heads)::value;
            const int prefetch_count = h0 == 0 ? count : 0;
            if constexpr (kPairs) {
              if (bfloat16_dot) {
                score_block<kHeads>(rounded_query + h0 * head_dim, head_dim, block_keys, segment.token_stride,
                                    count, args.scale, scores + h0 * kMaxBlockTokens, block_values, prefetch_count);
                return;
              }
            }
            score_block<kHeads>(query + h0 * head_dim, head_dim, block_keys, segment.token_stride, count,
                                args.scale, scores + h0 * kMaxBlockTokens, block_values, prefetch_count);
          });

          // 2. online softmax: bias, maximum, rescale, exp-weights
          const int padded = (count + L - 1) / L * L;
          for (int h = 0; h < num_heads; ++h) {
            float* row = scores + h * kMaxBlockTokens;
            if (args.alibi_slopes != nullptr) {
              const float slope = args.alibi_slopes[first_head + h];
              const float distance0 = static_cast<float>(segment.query_distance - block);
              for (int j = 0; j < count; ++j) row[j] -= slope * (distance0 - static_cast<float>(j));
            }
            for (int j = count; j < padded; ++j) row[j] = -HUGE_VALF;
            Vec running = detail::simd::load(row);
            for (int j = L; j < padded; j += L) running = detail::simd::max(running, detail::simd::load(row + j));
            factor[h] = state[h].rescale_to(detail::simd::reduce_max(running));
            const Vec shift = detail::simd::broadcast(state[h].max);
            Vec sum = detail::simd::zero();
            for (int j = 0; j < padded; j += L) {
              const Vec weight = detail::simd::exp(detail::simd::sub(detail::simd::load(row + j), shift));
              detail::simd::store(row + j, weight);
              sum = detail::simd::add(sum, weight);
            }
            state[h].sum += detail::simd::reduce_add(sum);
          }

          // 3. weighted values (prefetching ahead, see Prefetch)
          const Prefetch ahead = next_block(args, kv, next_kv, s, block, block_size);
          for_head_groups<kMaxGroup>(0, num_heads, [&](auto heads, int h0) {
            constexpr int kHeads = decltype(heads)::value;
            constexpr int kChunk = std::max(1, detail::simd::kAccumulators / kHeads);
            value_block<kHeads, kChunk>(scores + h0 * kMaxBlockTokens, factor + h0, block_values,
                                        segment.token_stride, count, out_rows + h0, head_dim, 0,
                                        h0 == 0 ? ahead : Prefetch{});
          });
        }
      }
      for (int h = 0; h < num_heads; ++h) {
        const float inverse = 1.0f / state[h].sum;
        for (int d = 0; d < head_dim; ++d) out_rows[h][d] *= inverse;
        out.log_sum_exp[first_head + h] = state[h].log_sum_exp();
      }
    }
  };

  template <class T>
  struct Vectorized<T, false> {
    static void attend_heads(const AttentionArgs<T>&, const AttentionOutput<compute_t<T>>&, int, int, int, int,
                             bool) {}
  };

  /// dot(query, key) in four independent sums. Written out rather than as
  /// an Eigen reduction: GCC 12.2 flags the AVX-512 reductions Eigen
  /// inlines here (PR 105593), which would break users' -Werror builds.
  template <class C, class T>
  static C dot(const C* query, const T* key, int head_dim) {
    C sum[4] = {0, 0, 0, 0};
    int d = 0;
    for (; d + 4 <= head_dim; d += 4) {
      for (int i = 0; i < 4; ++i) sum[i] += query[d + i] * detail::widen<C>(key[d + i]);
    }
    for (; d < head_dim; ++d) sum[0] += query[d] * detail::widen<C>(key[d]);
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
  }

  /// The portable path: the same blocked single-read algorithm written with
  /// Eigen expressions (vectorised for whatever Eigen supports).
  template <class T>
  static void attend_heads_eigen(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out, int kv,
                                 int first_head, int num_heads) {
    constexpr int kBlock = 32;
    using C = compute_t<T>;
    using Row = Eigen::Matrix<C, Eigen::Dynamic, 1>;
    using StoredRow = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    const int head_dim = args.head_dim;

    detail::SoftmaxState<C> state[kMaxGroup];
    C scores[kMaxGroup][kBlock];  // scores, then their exp-weights
    for (int h = 0; h < num_heads; ++h) {
      Eigen::Map<Row>(out.data + (first_head + h) * out.head_stride, head_dim).setZero();
    }

    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& segment = args.segments[s];
      const T* keys = segment.keys + kv * segment.head_stride;
      const T* values = segment.values + kv * segment.head_stride;
      for (int block = 0; block < segment.length; block += kBlock) {
        const int count = std::min(kBlock, segment.length - block);
        for (int j = 0; j < count; ++j) {
          const T* key = keys + (block + j) * segment.token_stride;
          for (int h = 0; h < num_heads; ++h) {
            scores[h][j] = args.scale * dot(segment.query + (first_head + h) * head_dim, key, head_dim);
          }
        }
        if (args.alibi_slopes != nullptr) {
          for (int h = 0; h < num_heads; ++h) {
            const C slope = args.alibi_slopes[first_head + h];
            for (int j = 0; j < count; ++j) {
              scores[h][j] -= slope * static_cast<C>(segment.query_distance - (block + j));
            }
          }
        }
        for (int h = 0; h < num_heads; ++h) {
          const C block_max = *std::max_element(scores[h], scores[h] + count);
          const C factor = state[h].rescale_to(block_max);
          if (factor != C(1)) {
            Eigen::Map<Row>(out.data + (first_head + h) * out.head_stride, head_dim) *= factor;
          }
          C sum = 0;
          for (int j = 0; j < count; ++j) {
            scores[h][j] = std::exp(scores[h][j] - state[h].max);
            sum += scores[h][j];
          }
          state[h].sum += sum;
        }
        for (int j = 0; j < count; ++j) {
          const auto value = Eigen::Map<const StoredRow>(values + (block + j) * segment.token_stride, head_dim)
                                 .template cast<C>();
          for (int h = 0; h < num_heads; ++h) {
            Eigen::Map<Row>(out.data + (first_head + h) * out.head_stride, head_dim) += scores[h][j] * value;
          }
        }
      }
    }
    for (int h = 0; h < num_heads; ++h) {
      Eigen::Map<Row>(out.data + (first_head + h) * out.head_stride, head_dim) /= state[h].sum;
      out.log_sum_exp[first_head + h] = state[h].log_sum_exp();
    }
  }
};

}  // namespace sinkkv

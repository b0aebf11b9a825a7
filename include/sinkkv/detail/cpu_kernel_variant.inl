// sinkkv::detail::<variant>: CpuKernel's algorithm for one instruction set.
//
// No include guard, on purpose: kernels/cpu.hpp includes this file once per
// variant, inside that variant's target region (simd_target.hpp), after
//   #define SINKKV_VARIANT <namespace>          e.g. avx2
//   #define SINKKV_VARIANT_HAS_VECTORS 0 or 1   SINKKV_VARIANT::simd exists
//   #define SINKKV_VARIANT_HAS_BF16_PAIRS 0/1   simd::dot_pairs exists
// so every function below is compiled for that instruction set, in that
// variant's own namespace. Nothing here may be a lambda (clang's target
// pragma does not reach lambdas), call Eigen, or call a float-valued std::
// inline function (see simd_common.hpp): they would run with the unit's
// baseline instructions, or be shared between variants.

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace SINKKV_VARIANT {

using Limits = CpuKernelLimits;

SINKKV_ALWAYS_INLINE int min_int(int a, int b) { return a < b ? a : b; }
SINKKV_ALWAYS_INLINE int max_int(int a, int b) { return a > b ? a : b; }

/// dot(query, key) in four independent sums.
template <class C, class T>
SINKKV_ALWAYS_INLINE C dot(const C* query, const T* key, int head_dim) {
  C sum[4] = {0, 0, 0, 0};
  int d = 0;
  for (; d + 4 <= head_dim; d += 4) {
    for (int i = 0; i < 4; ++i) sum[i] += query[d + i] * to_compute(key[d + i]);
  }
  for (; d < head_dim; ++d) sum[0] += query[d] * to_compute(key[d]);
  return (sum[0] + sum[1]) + (sum[2] + sum[3]);
}

/// The portable path: the same blocked single-read algorithm in plain C++
/// (which the compiler may vectorise for the variant's target). Used by the
/// scalar variant for everything, and by the vector variants for double
/// storage and head sizes that are not a multiple of the vector width.
template <class T>
struct Portable {
  using C = compute_t<T>;
  static constexpr int kBlock = 32;

  static void attend_heads(const AttentionArgs<T>& args, const AttentionOutput<C>& out, int kv, int first_head,
                           int num_heads) {
    const int head_dim = args.head_dim;
    SoftmaxState<C> state[Limits::kMaxGroup];
    C scores[Limits::kMaxGroup][kBlock];  // scores, then their exp-weights
    C* rows[Limits::kMaxGroup];
    for (int h = 0; h < num_heads; ++h) {
      rows[h] = out.data + (first_head + h) * out.head_stride;
      for (int d = 0; d < head_dim; ++d) rows[h][d] = C(0);
    }
    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& segment = args.segments[s];
      const T* keys = segment.keys + kv * segment.head_stride;
      const T* values = segment.values + kv * segment.head_stride;
      for (int block = 0; block < segment.length; block += kBlock) {
        const int count = min_int(kBlock, segment.length - block);
        for (int j = 0; j < count; ++j) {
          const T* key = keys + (block + j) * segment.token_stride;
          for (int h = 0; h < num_heads; ++h) {
            scores[h][j] = args.scale * dot(segment.query + (first_head + h) * head_dim, key, head_dim);
          }
        }
        if (args.alibi_slopes != nullptr) {
          for (int h = 0; h < num_heads; ++h) {
            const C slope = args.alibi_slopes[first_head + h];
            for (int j = 0; j < count; ++j) scores[h][j] -= slope * static_cast<C>(segment.query_distance - (block + j));
          }
        }
        for (int h = 0; h < num_heads; ++h) {
          // A NaN score is skipped by the maximum but makes its own weight,
          // hence the sum and the output, NaN (as the reference's).
          C block_max = -HUGE_VAL;
          for (int j = 0; j < count; ++j) block_max = scores[h][j] > block_max ? scores[h][j] : block_max;
          const C factor = state[h].rescale_to(block_max);
          if (factor != C(1)) {
            for (int d = 0; d < head_dim; ++d) rows[h][d] *= factor;
          }
          C sum = 0;
          for (int j = 0; j < count; ++j) {
            scores[h][j] = scalar_exp(scores[h][j] - state[h].max);
            sum += scores[h][j];
          }
          state[h].sum += sum;
        }
        for (int j = 0; j < count; ++j) {
          const T* value = values + (block + j) * segment.token_stride;
          for (int h = 0; h < num_heads; ++h) {
            const C weight = scores[h][j];
            for (int d = 0; d < head_dim; ++d) rows[h][d] += weight * to_compute(value[d]);
          }
        }
      }
    }
    for (int h = 0; h < num_heads; ++h) {
      const C inverse = C(1) / state[h].sum;
      for (int d = 0; d < head_dim; ++d) rows[h][d] *= inverse;
      out.log_sum_exp[first_head + h] = state[h].log_sum_exp();
    }
  }
};

#if SINKKV_VARIANT_HAS_VECTORS

/// The vector path for float compute (float, half and bfloat16 storage) and
/// head_dim a multiple of the vector width. Per KV head, tokens go in
/// blocks small enough to stay in L1 (Limits::block_tokens):
///   1. scores of the block for all the group's query heads, as register
///      tiles of (tokens x heads) dot products finished by one transposing
///      reduction (simd::reduce_lanes);
///   2. per head: ALiBi bias, block maximum, one rescale factor for the
///      running output, exp() of the block's scores (vectorised polynomial);
///   3. the weighted value rows added to the running output, as register
///      tiles of (heads x dimension chunk) accumulators.
template <class T>
struct Vectorized {
  static constexpr int L = simd::kLanes;
  static constexpr int kMaxBlockTokens = Limits::kMaxBlockTokens;
  static constexpr int kMaxGroup = Limits::kMaxGroup;
  using Vec = simd::Vec;
  /// Query heads per score tile: with L / 4 heads x 4 tokens, each query
  /// and key vector loaded feeds 4 FMAs, so the loads (kScoreHeads + 4 per
  /// 16 FMAs with AVX-512) stay under the FMA throughput.
  static constexpr int kScoreHeads = L / 4 > 1 ? L / 4 : 1;
  static constexpr bool kPairs = SINKKV_VARIANT_HAS_BF16_PAIRS && std::is_same_v<T, Eigen::bfloat16>;

  /// The operands of one score step, chosen by the query's type: float
  /// vectors (L dimensions, FMA), or, for bfloat16 dot products, bfloat16
  /// pairs (2L dimensions, VDPBF16PS) with the query rounded to bfloat16
  /// bits beforehand.
  SINKKV_ALWAYS_INLINE static Vec query_operand(const float* p) { return simd::load(p); }
  SINKKV_ALWAYS_INLINE static Vec key_operand(const T* p, const float* /*query type*/) { return simd::load(p); }
  SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, Vec query, Vec key) { return simd::fma(query, key, acc); }
#if SINKKV_VARIANT_HAS_BF16_PAIRS
  SINKKV_ALWAYS_INLINE static simd::BfloatPairs query_operand(const std::uint16_t* p) { return simd::load_pairs(p); }
  SINKKV_ALWAYS_INLINE static simd::BfloatPairs key_operand(const T* p, const std::uint16_t* /*query type*/) {
    return simd::load_pairs(p);
  }
  SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, simd::BfloatPairs query, simd::BfloatPairs key) {
    return simd::dot_pairs(acc, query, key);
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
    for (int t = 0; t < kTokens; ++t) row[t] = keys + (kFull ? t : min_int(t, valid - 1)) * token_stride;
    for (int i = 0; i < kHeads * kTokens; ++i) acc[i] = simd::zero();
    for (int d = 0; d < head_dim; d += kDims) {
      // An operand that feeds several multiply-adds is loaded once into a
      // register; one that feeds a single one is better folded into it as
      // a memory operand (pinning 16 key rows for one head would spill).
      Operand key[kTokens];
      for (int t = 0; t < kTokens; ++t) {
        key[t] = key_operand(row[t] + d, query);
        if constexpr (kHeads > 1) key[t] = simd::keep_in_register(key[t]);
      }
      for (int h = 0; h < kHeads; ++h) {
        Operand q = query_operand(query + h * head_dim + d);
        if constexpr (kTokens > 1) q = simd::keep_in_register(q);
        for (int t = 0; t < kTokens; ++t) acc[h * kTokens + t] = multiply_add(acc[h * kTokens + t], q, key[t]);
      }
    }
    const Vec sums = simd::mul(simd::reduce_lanes(acc), simd::broadcast(scale));
    // Head h's scores are lanes [h * kTokens, h * kTokens + valid): stored
    // straight from the register (reading them back one by one after a
    // full-width store stalls store-to-load forwarding).
    for (int h = 0; h < kHeads; ++h) {
      simd::store_lanes(scores + h * kMaxBlockTokens + j0 - h * kTokens, sums, h * kTokens, kFull ? kTokens : valid);
    }
  }

  /// Scores of `count` tokens for kHeads heads.
  /// Also prefetches row j of `prefetch_rows` (count rows) as it goes, so
  /// that the next phase finds them in L1 without a burst of misses.
  /// Query is float, or std::uint16_t for bfloat16 bits.
  template <int kHeads, class Query>
  SINKKV_NOINLINE static void score_block(const Query* query, int head_dim, const T* keys, std::ptrdiff_t token_stride,
                                          int count, float scale, float* scores, const T* prefetch_rows,
                                          int prefetch_count) {
    constexpr int kTokens = L / kHeads;
    const std::size_t row_bytes = static_cast<std::size_t>(head_dim) * sizeof(T);
    int j = 0;
    for (; j < count; j += kTokens) {
      for (int t = j; t < min_int(j + kTokens, prefetch_count); ++t) {
        simd::prefetch(prefetch_rows + t * token_stride, row_bytes);
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
  SINKKV_ALWAYS_INLINE static void value_tile(const float* weights, const float* factor, const T* values,
                                              std::ptrdiff_t token_stride, int count, float* const* out_rows, int d0,
                                              const Prefetch& ahead) {
    Vec acc[kHeads * kChunk];
    for (int h = 0; h < kHeads; ++h) {
      const Vec f = simd::broadcast(factor[h]);
      for (int c = 0; c < kChunk; ++c) acc[h * kChunk + c] = simd::mul(f, simd::load(out_rows[h] + d0 + c * L));
    }
    const T* row = values + d0;
    for (int j = 0; j < count; ++j, row += token_stride) {
      if (j < ahead.count) simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
      Vec value[kChunk];
      for (int c = 0; c < kChunk; ++c) {
        value[c] = simd::load(row + c * L);
        if constexpr (kHeads > 1) value[c] = simd::keep_in_register(value[c]);
      }
      for (int h = 0; h < kHeads; ++h) {
        const Vec w = simd::broadcast(weights[h * kMaxBlockTokens + j]);
        for (int c = 0; c < kChunk; ++c) acc[h * kChunk + c] = simd::fma(w, value[c], acc[h * kChunk + c]);
      }
    }
    for (int j = count; j < ahead.count; ++j) simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
    for (int h = 0; h < kHeads; ++h) {
      for (int c = 0; c < kChunk; ++c) simd::store(out_rows[h] + d0 + c * L, acc[h * kChunk + c]);
    }
  }

  /// Columns [v * L, head_dim) in chunks of kChunk vectors, the remainder
  /// in smaller chunks.
  template <int kHeads, int kChunk>
  SINKKV_NOINLINE static void value_block(const float* weights, const float* factor, const T* values,
                                          std::ptrdiff_t token_stride, int count, float* const* out_rows, int head_dim,
                                          int v, Prefetch ahead) {
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

  /// Runs job.run<kHeads>(first) over `num_heads` heads in sub-groups of
  /// kHeads in {16, 8, 4, 2, 1} (at most L): a score tile needs L / kHeads
  /// whole tokens. (A job struct, not a lambda: see the top of this file.)
  template <int kHeads, class Job>
  static void for_head_groups(int first, int num_heads, const Job& job) {
    if constexpr (kHeads > L) {
      for_head_groups<kHeads / 2>(first, num_heads, job);
    } else {
      for (; first + kHeads <= num_heads; first += kHeads) job.template run<kHeads>(first);
      if constexpr (kHeads > 1) {
        if (first < num_heads) for_head_groups<kHeads / 2>(first, num_heads, job);
      }
    }
  }

  /// Phase 1 for one head group; the first group also prefetches the
  /// block's values (for every row size: without it, 256-byte rows from
  /// DRAM ran up to 2.3x slower).
  template <class Query>
  struct ScoreJob {
    const Query* query;
    int head_dim;
    const T* keys;
    std::ptrdiff_t token_stride;
    int count;
    float scale;
    float* scores;
    const T* values;
    template <int kHeads>
    void run(int h0) const {
      score_block<kHeads>(query + h0 * head_dim, head_dim, keys, token_stride, count, scale,
                          scores + h0 * kMaxBlockTokens, values, h0 == 0 ? count : 0);
    }
  };

  /// Phase 3 for one head group.
  struct ValueJob {
    const float* weights;
    const float* factor;
    const T* values;
    std::ptrdiff_t token_stride;
    int count;
    float* const* out_rows;
    int head_dim;
    Prefetch ahead;
    template <int kHeads>
    void run(int h0) const {
      constexpr int kChunk = simd::kAccumulators / kHeads > 1 ? simd::kAccumulators / kHeads : 1;
      value_block<kHeads, kChunk>(weights + h0 * kMaxBlockTokens, factor + h0, values, token_stride, count,
                                  out_rows + h0, head_dim, 0, h0 == 0 ? ahead : Prefetch{});
    }
  };

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
          next.count = min_int(block_size, segment.length - first);
          return next;
        }
      }
    }
    return Prefetch{};
  }

  static void attend_heads(const AttentionArgs<T>& args, const AttentionOutput<float>& out, int kv, int first_head,
                           int num_heads, int next_kv, bool bfloat16_dot) {
    // The group's query rows rounded to bfloat16 (raw bits: an array of
    // Eigen::bfloat16 would be zero-filled on every call), for
    // bfloat16_dot; only instantiated with room where it can be used.
    alignas(64) std::uint16_t rounded_query[kPairs ? kMaxGroup * Limits::kMaxBfloat16DotHeadDim : 1];
    const int head_dim = args.head_dim;
    const int block_size = Limits::block_tokens(head_dim, sizeof(T));
    SoftmaxState<float> state[kMaxGroup];
    alignas(64) float scores[kMaxGroup * kMaxBlockTokens];  // [head][token]: scores, then exp-weights
    float factor[kMaxGroup];
    float* out_rows[kMaxGroup];
    for (int h = 0; h < num_heads; ++h) {
      out_rows[h] = out.data + (first_head + h) * out.head_stride;
      for (int d = 0; d < head_dim; ++d) out_rows[h][d] = 0.0f;
    }

    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& segment = args.segments[s];
      const T* keys = segment.keys + kv * segment.head_stride;
      const T* values = segment.values + kv * segment.head_stride;
      const float* query = segment.query + first_head * head_dim;
#if SINKKV_VARIANT_HAS_BF16_PAIRS
      if constexpr (kPairs) {
        if (bfloat16_dot) {
          for (int i = 0; i < num_heads * head_dim; i += 2 * L) {
            simd::store_rounded_pairs(rounded_query + i, simd::load(query + i), simd::load(query + i + L));
          }
        }
      }
#else
      (void)bfloat16_dot;
#endif
      for (int block = 0; block < segment.length; block += block_size) {
        const int count = min_int(block_size, segment.length - block);
        const T* block_keys = keys + block * segment.token_stride;
        const T* block_values = values + block * segment.token_stride;

        // 1. scores
        bool scored = false;
        if constexpr (kPairs) {
          if (bfloat16_dot) {
            const ScoreJob<std::uint16_t> job{rounded_query, head_dim, block_keys, segment.token_stride,
                                              count,         args.scale, scores,  block_values};
            for_head_groups<kScoreHeads>(0, num_heads, job);
            scored = true;
          }
        }
        if (!scored) {
          const ScoreJob<float> job{query, head_dim, block_keys, segment.token_stride, count, args.scale, scores,
                                    block_values};
          for_head_groups<kScoreHeads>(0, num_heads, job);
        }

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
          Vec running = simd::load(row);
          for (int j = L; j < padded; j += L) running = simd::max(running, simd::load(row + j));
          factor[h] = state[h].rescale_to(simd::reduce_max(running));
          const Vec shift = simd::broadcast(state[h].max);
          Vec sum = simd::zero();
          for (int j = 0; j < padded; j += L) {
            // A NaN score (NaN or infinite input) makes a NaN weight, so
            // the output is NaN as the reference's is (simd::exp keeps it).
            const Vec weight = simd::exp(simd::sub(simd::load(row + j), shift));
            simd::store(row + j, weight);
            sum = simd::add(sum, weight);
          }
          state[h].sum += simd::reduce_add(sum);
        }

        // 3. weighted values (prefetching ahead, see Prefetch)
        const ValueJob job{scores,       factor,   block_values, segment.token_stride,
                           count,        out_rows, head_dim,     next_block(args, kv, next_kv, s, block, block_size)};
        for_head_groups<kMaxGroup>(0, num_heads, job);
      }
    }
    for (int h = 0; h < num_heads; ++h) {
      const float inverse = 1.0f / state[h].sum;
      for (int d = 0; d < head_dim; ++d) out_rows[h][d] *= inverse;
      out.log_sum_exp[first_head + h] = state[h].log_sum_exp();
    }
  }
};

#endif  // SINKKV_VARIANT_HAS_VECTORS

/// Lanes of this variant's vectors (1: none).
inline constexpr int kVectorLanes =
#if SINKKV_VARIANT_HAS_VECTORS
    simd::kLanes;
#else
    1;
#endif

/// True when bfloat16 dot products take effect for storage T and this head size.
template <class T>
constexpr bool uses_bfloat16_dot(int head_dim) {
  return SINKKV_VARIANT_HAS_BF16_PAIRS && std::is_same_v<T, Eigen::bfloat16> && head_dim % 32 == 0 &&
         head_dim <= Limits::kMaxBfloat16DotHeadDim;
}

/// True when storage T with this head size takes the vector path.
template <class T>
constexpr bool uses_vector_path(int head_dim) {
  return kVectorLanes > 1 && std::is_same_v<compute_t<T>, float> && head_dim % kVectorLanes == 0;
}

/// CpuKernel's decode attention with this variant.
template <class T>
void attend(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out, bool bfloat16_dot) {
  const int group = args.group_size();
  constexpr int kMaxGroup = Limits::kMaxGroup;
#if SINKKV_VARIANT_HAS_VECTORS
  if constexpr (std::is_same_v<compute_t<T>, float>) {
    if (uses_vector_path<T>(args.head_dim)) {
      const bool pairs = bfloat16_dot && uses_bfloat16_dot<T>(args.head_dim);
      for (int kv = 0; kv < args.num_kv_heads; ++kv) {
        for (int first = 0; first < group; first += kMaxGroup) {
          // The KV head read after this pass, for prefetching across the boundary.
          const int next_kv = first + kMaxGroup < group ? kv : (kv + 1 < args.num_kv_heads ? kv + 1 : -1);
          Vectorized<T>::attend_heads(args, out, kv, kv * group + first, min_int(kMaxGroup, group - first), next_kv,
                                      pairs);
        }
      }
      return;
    }
  }
#endif
  (void)bfloat16_dot;
  for (int kv = 0; kv < args.num_kv_heads; ++kv) {
    for (int first = 0; first < group; first += kMaxGroup) {
      Portable<T>::attend_heads(args, out, kv, kv * group + first, min_int(kMaxGroup, group - first));
    }
  }
}

/// What CpuKernel's dispatcher calls (see detail::with_variant).
struct Variant {
  static constexpr int kVectorLanes = SINKKV_VARIANT::kVectorLanes;
  template <class T>
  static constexpr bool uses_bfloat16_dot(int head_dim) {
    return SINKKV_VARIANT::uses_bfloat16_dot<T>(head_dim);
  }
  template <class T>
  static constexpr bool uses_vector_path(int head_dim) {
    return SINKKV_VARIANT::uses_vector_path<T>(head_dim);
  }
  template <class T>
  static void attend(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out, bool bfloat16_dot) {
    SINKKV_VARIANT::attend<T>(args, out, bfloat16_dot);
  }
};

}  // namespace SINKKV_VARIANT
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

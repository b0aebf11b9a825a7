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

// ---- problems: which rows attend to which keys ------------------------------
//
// The kernel works on *rows*: one query row of one query head, all reading
// the same KV head. Decode has one row per query head of a group; a chunk
// has one per (query, head) pair. A problem tells the engines below, per
// segment, where the keys are, which query row each row uses, and which of
// the segment's tokens each row sees (a band [first, last)).

template <class T>
struct SegmentRows {
  const T* keys;  // token 0 of this KV head
  const T* values;
  std::ptrdiff_t token_stride;
  int length;
};

/// Decode: rows are query heads [first_head, first_head + num_rows) of KV
/// head kv; every row sees every token.
template <class T>
struct DecodeProblem {
  using C = compute_t<T>;
  const AttentionArgs<T>& args;
  const AttentionOutput<C>& out;
  int kv;
  int first_head;
  int num_rows;
  int next_kv;  ///< the KV head read after this pass (-1: none), for prefetching

  int rows() const { return num_rows; }
  /// Keys the kernel reads right after this problem (up to `count` rows,
  /// `stride` apart), or nullptr.
  const T* next_pass_keys(int block, std::ptrdiff_t& stride, int& count) const {
    if (next_kv < 0) return nullptr;
    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& seg = args.segments[s];
      if (seg.length > 0) {
        stride = seg.token_stride;
        count = seg.length < block ? seg.length : block;
        return seg.keys + next_kv * seg.head_stride;
      }
    }
    return nullptr;
  }
  int num_segments() const { return args.num_segments; }
  SegmentRows<T> segment(int s) const {
    const KVSegment<T>& seg = args.segments[s];
    return {seg.keys + kv * seg.head_stride, seg.values + kv * seg.head_stride, seg.token_stride, seg.length};
  }
  /// Segments with equal query sets share one packing of the query rows.
  int query_set(int s) const { return s; }
  const C* query_row(int s, int row) const { return args.segments[s].query + (first_head + row) * args.head_dim; }
  void band(int s, int /*row*/, int& first, int& last) const {
    first = 0;
    last = args.segments[s].length;
  }
  /// Distance of the segment's token 0 from the row's query (ALiBi).
  std::int64_t distance0(int s, int /*row*/) const { return args.segments[s].query_distance; }
  C slope(int row) const { return args.alibi_slopes != nullptr ? args.alibi_slopes[first_head + row] : C(0); }
  bool alibi() const { return args.alibi_slopes != nullptr; }
  C* out_row(int row) const { return out.data + (first_head + row) * out.head_stride; }
  C* lse(int row) const { return out.log_sum_exp + first_head + row; }
};

/// A chunk: rows are (query i, head h) for queries [first_query,
/// first_query + num_queries) and heads [first_head, first_head + num_heads)
/// of KV head kv's group, row = (i - first_query) * num_heads + h - first_head.
template <class T>
struct ChunkProblem {
  using C = compute_t<T>;
  const ChunkArgs<T>& args;
  const ChunkOutput<C>& out;
  int kv;
  int first_query;
  int num_queries;
  int first_head;  // within the group
  int num_heads;

  int rows() const { return num_queries * num_heads; }
  const T* next_pass_keys(int /*block*/, std::ptrdiff_t& /*stride*/, int& /*count*/) const { return nullptr; }
  int query(int row) const { return first_query + row / num_heads; }
  int head(int row) const { return kv * args.group_size() + first_head + row % num_heads; }
  int num_segments() const { return args.num_segments; }
  SegmentRows<T> segment(int s) const {
    const ChunkSegment<T>& seg = args.segments[s];
    return {seg.keys + kv * seg.head_stride, seg.values + kv * seg.head_stride, seg.token_stride, seg.length};
  }
  int query_set(int s) const { return args.segments[s].frame; }
  const C* query_row(int s, int row) const { return args.query_row(args.segments[s].frame, query(row), head(row)); }
  void band(int s, int row, int& first, int& last) const {
    const std::pair<int, int> visible = args.visible(args.segments[s], query(row));
    first = visible.first;
    last = visible.second;
  }
  std::int64_t distance0(int s, int row) const { return args.distance(args.segments[s], query(row), 0); }
  C slope(int row) const { return args.alibi_slopes != nullptr ? args.alibi_slopes[head(row)] : C(0); }
  bool alibi() const { return args.alibi_slopes != nullptr; }
  C* out_row(int row) const { return out.data + query(row) * out.query_stride + head(row) * out.head_stride; }
  C* lse(int row) const {
    return out.log_sum_exp + static_cast<std::ptrdiff_t>(query(row)) * args.num_query_heads + head(row);
  }
};

/// Normalises every row of a problem and writes its log-sum-exp; a row
/// that saw no key gets zeros and -infinity (the contract's empty result).
template <class C, class P>
void finish_rows(const P& p, const SoftmaxState<C>* state) {
  const int head_dim = p.args.head_dim;
  for (int row = 0; row < p.rows(); ++row) {
    C* out = p.out_row(row);
    if (state[row].sum == C(0) && state[row].max == -std::numeric_limits<C>::infinity()) {
      for (int d = 0; d < head_dim; ++d) out[d] = C(0);
      *p.lse(row) = -std::numeric_limits<C>::infinity();
      continue;
    }
    const C inverse = C(1) / state[row].sum;
    for (int d = 0; d < head_dim; ++d) out[d] *= inverse;
    *p.lse(row) = state[row].log_sum_exp();
  }
}

/// The portable engine: the blocked single-read online softmax in plain C++
/// (which the compiler may vectorise for the variant's target), for at most
/// Limits::kMaxGroup rows. Used by the scalar variant for everything, and by
/// the vector variants for double storage and head sizes that are not a
/// multiple of the vector width. A row reads only the tokens in its band.
template <class T>
struct Portable {
  using C = compute_t<T>;
  static constexpr int kBlock = 32;
  static constexpr int kMaxRows = Limits::kMaxGroup;

  template <class P>
  static void run(const P& p) {
    const int head_dim = p.args.head_dim;
    const C scale = p.args.scale;
    const int rows = p.rows();
    SoftmaxState<C> state[kMaxRows];
    C scores[kMaxRows][kBlock];  // scores, then their exp-weights
    int first[kMaxRows], last[kMaxRows];
    for (int row = 0; row < rows; ++row) {
      C* out = p.out_row(row);
      for (int d = 0; d < head_dim; ++d) out[d] = C(0);
    }
    for (int s = 0; s < p.num_segments(); ++s) {
      const SegmentRows<T> seg = p.segment(s);
      int lo = seg.length, hi = 0;
      for (int row = 0; row < rows; ++row) {
        p.band(s, row, first[row], last[row]);
        if (first[row] < last[row]) {
          lo = min_int(lo, first[row]);
          hi = max_int(hi, last[row]);
        }
      }
      for (int block = lo; block < hi; block += kBlock) {
        const int count = min_int(kBlock, hi - block);
        for (int row = 0; row < rows; ++row) {
          const int a = max_int(first[row] - block, 0), b = min_int(last[row] - block, count);
          if (a >= b) continue;
          const C* query = p.query_row(s, row);
          const C slope = p.slope(row);
          const C distance0 = static_cast<C>(p.distance0(s, row) - block);
          for (int j = a; j < b; ++j) {
            scores[row][j] = scale * dot(query, seg.keys + (block + j) * seg.token_stride, head_dim);
            if (p.alibi()) scores[row][j] -= slope * (distance0 - static_cast<C>(j));
          }
          // A NaN score is skipped by the maximum but makes its own weight,
          // hence the sum and the output, NaN (as the reference's).
          C block_max = -HUGE_VAL;
          for (int j = a; j < b; ++j) block_max = scores[row][j] > block_max ? scores[row][j] : block_max;
          const C factor = state[row].rescale_to(block_max);
          C* out = p.out_row(row);
          if (factor != C(1)) {
            for (int d = 0; d < head_dim; ++d) out[d] *= factor;
          }
          C sum = 0;
          for (int j = a; j < b; ++j) {
            scores[row][j] = scalar_exp(scores[row][j] - state[row].max);
            sum += scores[row][j];
          }
          state[row].sum += sum;
          for (int j = a; j < b; ++j) {
            const T* value = seg.values + (block + j) * seg.token_stride;
            const C weight = scores[row][j];
            for (int d = 0; d < head_dim; ++d) out[d] += weight * to_compute(value[d]);
          }
        }
      }
    }
    finish_rows(p, state);
  }
};

#if SINKKV_VARIANT_HAS_VECTORS

inline constexpr int log2_int(int n) { return n <= 1 ? 0 : 1 + log2_int(n / 2); }

/// The vector engine, for float compute (float, half and bfloat16 storage)
/// and head_dim a multiple of the vector width, one row tile (at most
/// kMaxRows rows: a decode group's query heads, or a chunk's query tile x
/// heads) at a time. Per segment, the rows' query vectors are packed once;
/// tokens then go in blocks small enough for L1 (block_tokens), each block's
/// keys and values read once for all the rows of the tile:
///   1. scores into scores[row][token], by one of two micro-kernels:
///      score_tile (rows in the lanes, a broadcast FMA per key element, no
///      horizontal reduction) when the rows fill the lanes, as in chunks;
///      dot_tile (rows x tokens dot products, one transposing reduction)
///      for the few rows of a decode group, where broadcast lanes would be
///      padding (measured: docs/performance.md);
///   2. per row: ALiBi, the band mask, block maximum; the running maxima
///      and their rescale factors for L rows at once; exp() of the scores;
///   3. the weighted value rows added to the running output, as register
///      tiles of (rows x dimension chunk) accumulators shared by rows that
///      see the same tokens; a row only ever reads value rows it sees (so a
///      NaN in a token a row does not see cannot reach it, as in
///      token-at-a-time attention).
/// The running output lives in the output rows themselves; everything else
/// is on the stack (Scratch, about 80 KiB): zero allocations.
template <class T>
struct Engine {
  static constexpr int L = simd::kLanes;
  using Vec = simd::Vec;
  /// Rows per tile, and the stride of a row of scores (tokens).
  static constexpr int kMaxRows = 64;
  static constexpr int kMaxBlock = 64;
  /// Floats for the packed query rows of one tile: padded rows x head_dim.
  static constexpr int kQueryBudget = 8192;
  /// Floats for a block of widened half/bfloat16 keys.
  static constexpr int kKeyBudget = 8192;
  static constexpr int kMaxHeadDim = kKeyBudget / L;
  static constexpr bool kFloatKeys = std::is_same_v<T, float>;
  /// Rows per dot-product tile: with L / 4 rows x 4 tokens, each query and
  /// key vector loaded feeds 4 FMAs.
  static constexpr int kDotRows = L / 4 > 1 ? L / 4 : 1;

  struct Scratch {
    alignas(64) float packed[kQueryBudget];              // query rows, transposed (or bfloat16 pairs)
    // [row][token] (dot tiles) or [token][row] (broadcast tiles): scores, then exp-weights
    alignas(64) float scores[kMaxRows * kMaxBlock];
    alignas(64) float keys[kFloatKeys ? 1 : kKeyBudget];    // [token][head_dim] widened keys
    alignas(64) float values[kFloatKeys ? 1 : kKeyBudget];  // [token][head_dim] widened values
  };

  /// Tokens per block: about 16 KiB of float key rows, a multiple of L.
  static int block_tokens(int head_dim) {
    const int fitted = 4096 / head_dim / L * L;
    return fitted < L ? L : (fitted > kMaxBlock ? kMaxBlock : fitted);
  }
  /// Largest row tile whose packed query rows fit kQueryBudget.
  static int max_tile_rows(int head_dim) {
    const int fitted = kQueryBudget / head_dim;
    return fitted >= kMaxRows ? kMaxRows : (fitted / L * L < L ? L : fitted / L * L);
  }
  // ---- 1. the score micro-kernel ---------------------------------------------

  SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, Vec query, Vec key, std::false_type /*float*/) {
    return simd::fma(query, key, acc);
  }
#if SINKKV_VARIANT_HAS_BF16_PAIRS
  SINKKV_ALWAYS_INLINE static Vec multiply_add(Vec acc, Vec query, Vec key, std::true_type /*bfloat16 pairs*/) {
    return simd::dot_pairs(acc, simd::as_pairs(query), simd::as_pairs(key));
  }
#endif

  /// Scores of up to L tokens (`valid`) against the L rows of one packed
  /// query vector set, stored transposed: scores[t * kMaxRows + row].
  ///
  /// The rows sit in the lanes, so a key element is one broadcast load
  /// multiplied into all L rows at once: each step (one dimension) is one
  /// packed-query load plus L broadcast FMAs into L token accumulators,
  /// with no horizontal reduction at all, and each accumulator is already a
  /// token's scores for L rows (the softmax then runs down the tokens, lanes
  /// being rows). With bfloat16 pairs (kPairs), a step takes 2 dimensions
  /// through VDPBF16PS (the broadcast is then a bfloat16 pair). A partial
  /// tile repeats its last valid key; those scores are never read.
  template <bool kPairs, bool kFull>
  SINKKV_ALWAYS_INLINE static void score_tile(const float* packed, int steps, const char* keys,
                                              std::ptrdiff_t key_stride, int valid, float* scores) {
    Vec acc[L];
    const char* row[L];
    for (int t = 0; t < L; ++t) row[t] = keys + (kFull ? t : min_int(t, valid - 1)) * key_stride;
    for (int t = 0; t < L; ++t) acc[t] = simd::zero();
    for (int k = 0; k < steps; ++k) {
      const Vec query = simd::load(packed + k * L);
      for (int t = 0; t < L; ++t) {
        acc[t] = multiply_add(acc[t], query, simd::broadcast_load(row[t] + 4 * k), std::integral_constant<bool, kPairs>{});
      }
    }
    for (int t = 0; t < L; ++t) simd::store(scores + t * kMaxRows, acc[t]);
  }

  /// Scores of `count` tokens for one packed row vector set; also
  /// prefetches `prefetch_count` value rows (the block's, so that phase 3
  /// finds them in L1).
  template <bool kPairs>
  SINKKV_NOINLINE static void score_block(const float* packed, int steps, const char* keys, std::ptrdiff_t key_stride,
                                          int count, float* scores, const T* prefetch_rows,
                                          std::ptrdiff_t prefetch_stride, int prefetch_count, std::size_t row_bytes) {
    int t0 = 0;
    for (; t0 + L <= count; t0 += L) {
      for (int t = t0; t < min_int(t0 + L, prefetch_count); ++t) {
        simd::prefetch(prefetch_rows + t * prefetch_stride, row_bytes);
      }
      score_tile<kPairs, true>(packed, steps, keys + t0 * key_stride, key_stride, L, scores + t0 * kMaxRows);
    }
    if (t0 < count) {
      for (int t = t0; t < min_int(count, prefetch_count); ++t) {
        simd::prefetch(prefetch_rows + t * prefetch_stride, row_bytes);
      }
      score_tile<kPairs, false>(packed, steps, keys + t0 * key_stride, key_stride, count - t0,
                                scores + t0 * kMaxRows);
    }
  }

  // ---- 1'. the dot-product micro-kernel, for tiles of fewer than L rows -----

  /// The operands of one dot-product step, chosen by the query's type:
  /// float vectors (L dimensions, FMA), or bfloat16 pairs (2L dimensions,
  /// VDPBF16PS) with the query rounded to bfloat16 bits beforehand.
  SINKKV_ALWAYS_INLINE static Vec query_operand(const float* p) { return simd::load(p); }
  SINKKV_ALWAYS_INLINE static Vec key_operand(const T* p, const float* /*query type*/) { return simd::load(p); }
  SINKKV_ALWAYS_INLINE static Vec dot_multiply_add(Vec acc, Vec query, Vec key) { return simd::fma(query, key, acc); }
#if SINKKV_VARIANT_HAS_BF16_PAIRS
  SINKKV_ALWAYS_INLINE static simd::BfloatPairs query_operand(const std::uint16_t* p) { return simd::load_pairs(p); }
  SINKKV_ALWAYS_INLINE static simd::BfloatPairs key_operand(const T* p, const std::uint16_t* /*query type*/) {
    return simd::load_pairs(p);
  }
  SINKKV_ALWAYS_INLINE static Vec dot_multiply_add(Vec acc, simd::BfloatPairs query, simd::BfloatPairs key) {
    return simd::dot_pairs(acc, query, key);
  }
#endif

  /// Scores of tokens [j0, j0 + valid) (valid <= kTokens) against kHeads
  /// rows: a kHeads x kTokens register tile of dot products over the whole
  /// row (key vectors loaded, and widened, once for all kHeads rows),
  /// finished by one transposing reduction (simd::reduce_lanes). With fewer
  /// rows than lanes this beats score_tile, whose broadcast lanes would
  /// mostly be padding. A partial tile (kFull false) repeats the last valid
  /// row and discards its scores; full tiles skip that clamping, whose
  /// pointer arithmetic alone cost a third of the tile's time (GPR
  /// pressure) on Zen 5. `query` holds the kHeads query rows, head_dim
  /// apart, as float or as bfloat16 bits.
  template <int kHeads, bool kFull, class Query>
  SINKKV_ALWAYS_INLINE static void dot_tile(const Query* query, int head_dim, const T* keys,
                                            std::ptrdiff_t token_stride, int valid, float* scores, int j0) {
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
        for (int t = 0; t < kTokens; ++t) acc[h * kTokens + t] = dot_multiply_add(acc[h * kTokens + t], q, key[t]);
      }
    }
    const Vec sums = simd::reduce_lanes(acc);
    // Row h's scores are lanes [h * kTokens, h * kTokens + valid): stored
    // straight from the register (reading them back one by one after a
    // full-width store stalls store-to-load forwarding).
    for (int h = 0; h < kHeads; ++h) {
      simd::store_lanes(scores + h * kMaxBlock + j0 - h * kTokens, sums, h * kTokens, kFull ? kTokens : valid);
    }
  }

  /// Scores of `count` tokens for kHeads rows; the first head group also
  /// prefetches the block's value rows.
  template <int kHeads, class Query>
  SINKKV_NOINLINE static void dot_block(const Query* query, int head_dim, const T* keys, std::ptrdiff_t token_stride,
                                        int count, float* scores, const T* prefetch_rows, int prefetch_count) {
    constexpr int kTokens = L / kHeads;
    const std::size_t row_bytes = static_cast<std::size_t>(head_dim) * sizeof(T);
    int j = 0;
    for (; j < count; j += kTokens) {
      for (int t = j; t < min_int(j + kTokens, prefetch_count); ++t) {
        simd::prefetch(prefetch_rows + t * token_stride, row_bytes);
      }
      if (j + kTokens > count) break;
      dot_tile<kHeads, true>(query, head_dim, keys + j * token_stride, token_stride, kTokens, scores, j);
    }
    if (j < count) dot_tile<kHeads, false>(query, head_dim, keys + j * token_stride, token_stride, count - j, scores, j);
  }

  /// Runs dot_block over rows [first, num_rows) in groups of kHeads in
  /// {L/4, ..., 2, 1}: a tile needs L / kHeads whole tokens.
  template <int kHeads, class Query>
  static void dot_rows(int first, int num_rows, const Query* query, int head_dim, const T* keys,
                       std::ptrdiff_t token_stride, int count, float* scores, const T* values) {
    for (; first + kHeads <= num_rows; first += kHeads) {
      dot_block<kHeads>(query + first * head_dim, head_dim, keys, token_stride, count, scores + first * kMaxBlock,
                        values, first == 0 ? count : 0);
    }
    if constexpr (kHeads > 1) {
      if (first < num_rows) dot_rows<kHeads / 2>(first, num_rows, query, head_dim, keys, token_stride, count, scores,
                                                 values);
    }
  }

  // ---- 3. the value micro-kernel ---------------------------------------------

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

  /// Weight of row h, token j in the scores buffer: [row][token] after
  /// dot tiles, [token][row] after broadcast tiles (kTransposed).
  template <bool kTransposed>
  SINKKV_ALWAYS_INLINE static const float& weight(const float* weights, int h, int j) {
    return kTransposed ? weights[j * kMaxRows + h] : weights[h * kMaxBlock + j];
  }

  /// out[h][chunk] = factor[h] * out[h][chunk] + sum_j w[h][j] * value_j[chunk]
  /// for kRows rows and a chunk of kChunk vectors at column d0; values of
  /// type V (stored, or widened to float). Prefetch row j is requested
  /// beside value row j (rows past `count` after the loop).
  template <int kRows, int kChunk, bool kTransposed, class V>
  SINKKV_ALWAYS_INLINE static void value_tile(const float* weights, const float* factor, const V* values,
                                              std::ptrdiff_t token_stride, int count, float* const* out_rows, int d0,
                                              const Prefetch& ahead) {
    Vec acc[kRows * kChunk];
    for (int h = 0; h < kRows; ++h) {
      const Vec f = simd::broadcast(factor[h]);
      for (int c = 0; c < kChunk; ++c) acc[h * kChunk + c] = simd::mul(f, simd::load(out_rows[h] + d0 + c * L));
    }
    const V* row = values + d0;
    for (int j = 0; j < count; ++j, row += token_stride) {
      if (j < ahead.count) simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
      Vec value[kChunk];
      for (int c = 0; c < kChunk; ++c) {
        value[c] = simd::load(row + c * L);
        if constexpr (kRows > 1) value[c] = simd::keep_in_register(value[c]);
      }
      for (int h = 0; h < kRows; ++h) {
        const Vec w = simd::broadcast(weight<kTransposed>(weights, h, j));
        for (int c = 0; c < kChunk; ++c) acc[h * kChunk + c] = simd::fma(w, value[c], acc[h * kChunk + c]);
      }
    }
    for (int j = count; j < ahead.count; ++j) simd::prefetch(ahead.keys + j * ahead.token_stride, ahead.row_bytes);
    for (int h = 0; h < kRows; ++h) {
      for (int c = 0; c < kChunk; ++c) simd::store(out_rows[h] + d0 + c * L, acc[h * kChunk + c]);
    }
  }

  /// Columns [v * L, head_dim) in chunks of kChunk vectors, the remainder
  /// in smaller chunks.
  template <int kRows, int kChunk, bool kTransposed, class V>
  SINKKV_NOINLINE static void value_block(const float* weights, const float* factor, const V* values,
                                          std::ptrdiff_t token_stride, int count, float* const* out_rows, int head_dim,
                                          int v, Prefetch ahead) {
    const int num_vectors = head_dim / L;
    for (; v + kChunk <= num_vectors; v += kChunk) {
      value_tile<kRows, kChunk, kTransposed>(weights, factor, values, token_stride, count, out_rows, v * L, ahead);
      ahead = Prefetch{};  // once per block
    }
    if constexpr (kChunk > 1) {
      if (v < num_vectors) {
        value_block<kRows, kChunk / 2, kTransposed>(weights, factor, values, token_stride, count, out_rows, head_dim,
                                                    v, ahead);
      }
    }
  }

  /// Phase 3 for rows [r0, r0 + n), which see the same tokens [a, b) of the
  /// block (weights from token a on): groups of up to kRows rows (at most
  /// the accumulator count) share each value load.
  template <int kRows, bool kTransposed, class V>
  static void value_groups(int r0, int n, int a, int b, const float* scores, const float* factor, const V* values,
                           std::ptrdiff_t token_stride, float* const* out_rows, int head_dim, Prefetch& ahead) {
    if constexpr (kRows > simd::kAccumulators) {
      value_groups<kRows / 2, kTransposed>(r0, n, a, b, scores, factor, values, token_stride, out_rows, head_dim,
                                           ahead);
    } else {
      constexpr int kChunk = simd::kAccumulators / kRows > 1 ? simd::kAccumulators / kRows : 1;
      for (; n >= kRows; r0 += kRows, n -= kRows) {
        const float* weights = kTransposed ? scores + a * kMaxRows + r0 : scores + r0 * kMaxBlock + a;
        value_block<kRows, kChunk, kTransposed>(weights, factor + r0, values + a * token_stride, token_stride, b - a,
                                                out_rows + r0, head_dim, 0, ahead);
        ahead = Prefetch{};
      }
      if constexpr (kRows > 1) {
        if (n > 0) {
          value_groups<kRows / 2, kTransposed>(r0, n, a, b, scores, factor, values, token_stride, out_rows, head_dim,
                                               ahead);
        }
      }
    }
  }

  // ---- the row tile ------------------------------------------------------------

  /// Packs the rows' query vectors of segment s for the score tiles,
  /// float rows multiplied by the scale (bfloat16 pairs are scaled after
  /// the dot product, as the reference scales the rounded query):
  ///  * kBroadcast, float: packed[v][d][lane] = query of row v * L + lane,
  ///    dim d (zero for padding rows);
  ///  * kBroadcast, pairs: packed[v][k][lane] = that row's dims 2k, 2k + 1
  ///    rounded to bfloat16;
  ///  * dot tiles: the rows one after the other, [row][head_dim], as float
  ///    or as bfloat16 bits.
  template <bool kBroadcast, bool kPairs, class P>
  static void pack_queries(const P& p, int s, float* packed) {
    const int head_dim = p.args.head_dim;
    const float scale = p.args.scale;
    const int rows = p.rows();
    if constexpr (!kBroadcast) {
      for (int row = 0; row < rows; ++row) {
        const float* query = p.query_row(s, row);
        if constexpr (kPairs) {
          std::uint16_t* bits = reinterpret_cast<std::uint16_t*>(packed) + row * head_dim;
          for (int d = 0; d < head_dim; ++d) bits[d] = float_to_bfloat16_bits(query[d]);
        } else {
          for (int d = 0; d < head_dim; ++d) packed[row * head_dim + d] = scale * query[d];
        }
      }
    } else {
      const int vectors = (rows + L - 1) / L;
      const int steps = kPairs ? head_dim / 2 : head_dim;
      for (int v = 0; v < vectors; ++v) {
        for (int lane = 0; lane < L; ++lane) {
          const int row = v * L + lane;
          const float* query = row < rows ? p.query_row(s, row) : nullptr;
          for (int k = 0; k < steps; ++k) {
            float* slot = packed + (v * steps + k) * L + lane;
            if constexpr (kPairs) {
              std::uint16_t pair[2] = {0, 0};
              if (query != nullptr) {
                pair[0] = float_to_bfloat16_bits(query[2 * k]);
                pair[1] = float_to_bfloat16_bits(query[2 * k + 1]);
              }
              std::memcpy(slot, pair, sizeof pair);
            } else {
              *slot = query != nullptr ? scale * query[k] : 0.0f;
            }
          }
        }
      }
    }
  }

  /// Each row's visible tokens of the current block, [first, last).
  struct RowBands {
    int first[kMaxRows];
    int last[kMaxRows];
  };

  /// Phase 2 for scores [row][token] (dot tiles): per row, ALiBi, the band
  /// mask and the block maximum; the running maxima and rescale factors L
  /// rows at a time; per row, the exp-weights and their sum.
  template <bool kPairs, class P>
  static void softmax_rows(const P& p, int s, int block, int count, int rows, const RowBands& bands, float* scores,
                           float* running_max, float* running_sum, float* factor) {
    alignas(64) float block_max[kMaxRows];
    const int padded = (count + L - 1) / L * L;
    for (int row = 0; row < kMaxRows; ++row) block_max[row] = -HUGE_VALF;
    for (int row = 0; row < rows; ++row) {
      const int a = bands.first[row], b = bands.last[row];
      if (a >= b) continue;
      float* w = scores + row * kMaxBlock;
      if constexpr (kPairs) {  // the scale was folded into float queries when packing
        const Vec scale = simd::broadcast(p.args.scale);
        for (int j = 0; j < padded; j += L) simd::store(w + j, simd::mul(simd::load(w + j), scale));
      }
      if (p.alibi()) {
        const float slope = p.slope(row);
        const float distance0 = static_cast<float>(p.distance0(s, row) - block);
        for (int j = a; j < b; ++j) w[j] -= slope * (distance0 - static_cast<float>(j));
      }
      for (int j = 0; j < a; ++j) w[j] = -HUGE_VALF;
      for (int j = b; j < padded; ++j) w[j] = -HUGE_VALF;
      Vec running = simd::load(w);
      for (int j = L; j < padded; j += L) running = simd::max(running, simd::load(w + j));
      block_max[row] = simd::reduce_max(running);
    }
    update_maxima(rows, block_max, running_max, factor);
    for (int row = 0; row < rows; ++row) {
      if (bands.first[row] >= bands.last[row]) continue;
      float* w = scores + row * kMaxBlock;
      const Vec shift = simd::broadcast(running_max[row]);
      Vec sum = simd::zero();
      for (int j = 0; j < padded; j += L) {
        // A NaN score (NaN or infinite input) makes a NaN weight, so the
        // output is NaN as the reference's is (simd::exp keeps it).
        const Vec weight = simd::exp(simd::sub(simd::load(w + j), shift));
        simd::store(w + j, weight);
        sum = simd::add(sum, weight);
      }
      running_sum[row] = running_sum[row] * factor[row] + simd::reduce_add(sum);
    }
  }

  /// Phase 2 for scores [token][row] (broadcast tiles), L rows per vector,
  /// all vertical: ALiBi and the block maximum, rescale factors, exp-weights
  /// and their sums down the tokens; no horizontal reduction. Rows whose
  /// band does not cover the block get -inf outside it first.
  template <bool kPairs, class P>
  static void softmax_lanes(const P& p, int s, int block, int count, int rows, const RowBands& bands, float* scores,
                            float* running_max, float* running_sum, float* factor) {
    alignas(64) float block_max[kMaxRows], slopes[kMaxRows], distances[kMaxRows], shifts[kMaxRows];
    for (int row = 0; row < rows; ++row) {
      const int a = bands.first[row], b = bands.last[row];
      if (a == 0 && b == count) continue;
      for (int j = 0; j < a; ++j) scores[j * kMaxRows + row] = -HUGE_VALF;
      for (int j = b; j < count; ++j) scores[j * kMaxRows + row] = -HUGE_VALF;
    }
    const bool alibi = p.alibi();
    if (alibi) {
      for (int row = 0; row < kMaxRows; ++row) {
        slopes[row] = row < rows ? p.slope(row) : 0.0f;
        distances[row] = row < rows ? static_cast<float>(p.distance0(s, row) - block) : 0.0f;
      }
    }
    for (int r = 0; r < rows; r += L) {
      float* column = scores + r;
      const Vec scale = simd::broadcast(p.args.scale), slope = simd::load(slopes + r);
      const Vec distance0 = simd::load(distances + r);
      Vec maximum = simd::broadcast(-HUGE_VALF);
      for (int j = 0; j < count; ++j) {
        Vec w = simd::load(column + j * kMaxRows);
        if constexpr (kPairs) w = simd::mul(w, scale);
        // ALiBi on masked (-inf) scores leaves them -inf.
        if (alibi) w = simd::sub(w, simd::mul(slope, simd::sub(distance0, simd::broadcast(static_cast<float>(j)))));
        if (kPairs || alibi) simd::store(column + j * kMaxRows, w);
        maximum = simd::max(w, maximum);  // a NaN score is skipped here, not below
      }
      simd::store(block_max + r, maximum);
    }
    update_maxima(rows, block_max, running_max, factor);
    // Rows that see nothing of this block (all -inf here) shift by 0, so
    // their weights are 0 even before they have a maximum; a row that sees
    // only -inf scores keeps the reference's NaN (exp(-inf + inf)).
    for (int row = 0; row < kMaxRows; ++row) {
      shifts[row] = row < rows && bands.first[row] < bands.last[row] ? running_max[row] : 0.0f;
    }
    for (int r = 0; r < rows; r += L) {
      float* column = scores + r;
      const Vec shift = simd::load(shifts + r);
      Vec sum = simd::zero();
      for (int j = 0; j < count; ++j) {
        const Vec weight = simd::exp(simd::sub(simd::load(column + j * kMaxRows), shift));
        simd::store(column + j * kMaxRows, weight);
        sum = simd::add(sum, weight);
      }
      simd::store(running_sum + r, simd::add(simd::mul(simd::load(running_sum + r), simd::load(factor + r)), sum));
    }
  }

  /// The running maxima raised to the block maxima, L rows at a time, and
  /// the factors that rescale what was accumulated before (1 for rows that
  /// have seen nothing yet).
  static void update_maxima(int rows, const float* block_max, float* running_max, float* factor) {
    for (int r = 0; r < rows; r += L) {
      // A NaN block maximum keeps the old maximum (max takes its second
      // operand then; NEON's NaN instead makes every weight NaN, also NaN
      // out): the NaN score still makes its own weight NaN.
      const Vec old_max = simd::load(running_max + r);
      const Vec new_max = simd::max(simd::load(block_max + r), old_max);
      simd::store(factor + r, simd::exp(simd::sub(old_max, new_max)));
      simd::store(running_max + r, new_max);
    }
    for (int row = 0; row < rows; ++row) {
      if (running_max[row] == -HUGE_VALF) factor[row] = 1.0f;  // nothing seen yet (exp(-inf + inf))
    }
  }

  /// Phase 3: rows that see the same tokens of this block (every row in
  /// decode, a query's heads in a chunk, all rows away from the bands'
  /// edges) share their value tiles; a row reads only the value rows it sees.
  template <bool kTransposed, class V>
  static void add_values(int rows, const RowBands& bands, const float* scores, const float* factor, const V* values,
                         std::ptrdiff_t token_stride, float* const* out_rows, int head_dim, Prefetch ahead) {
    for (int r0 = 0; r0 < rows;) {
      int r1 = r0 + 1;
      while (r1 < rows && bands.first[r1] == bands.first[r0] && bands.last[r1] == bands.last[r0]) ++r1;
      if (bands.first[r0] < bands.last[r0]) {  // else nothing seen here: factor 1, nothing to add
        // Float values (stored or widened): 4-row tiles need the fewest
        // loads per FMA; stored half/bfloat16 values: bigger row groups
        // widen each value vector for more rows.
        constexpr int kRows = std::is_same_v<V, float> && kTransposed ? 4 : 16;
        value_groups<kRows, kTransposed>(r0, r1 - r0, bands.first[r0], bands.last[r0], scores, factor, values,
                                         token_stride, out_rows, head_dim, ahead);
      }
      r0 = r1;
    }
  }

  /// Attention of every row of p (at most max_tile_rows(head_dim)):
  /// scores from broadcast tiles (kBroadcast: rows in lanes) or dot-product
  /// tiles; kPairs: bfloat16 dot products.
  template <bool kBroadcast, bool kPairs, class P>
  static void run_tile(const P& p) {
    const int head_dim = p.args.head_dim;
    const int rows = p.rows();
    const int vectors = (rows + L - 1) / L;
    const int steps = kPairs ? head_dim / 2 : head_dim;
    const int block_size = block_tokens(head_dim);
    Scratch scratch;
    alignas(64) float running_max[kMaxRows], running_sum[kMaxRows], factor[kMaxRows];
    for (int row = 0; row < kMaxRows; ++row) {
      running_max[row] = -HUGE_VALF;
      running_sum[row] = 0.0f;
    }
    float* out_rows[kMaxRows];
    RowBands segment_bands, bands;
    for (int row = 0; row < rows; ++row) {
      out_rows[row] = p.out_row(row);
      for (int d = 0; d < head_dim; ++d) out_rows[row][d] = 0.0f;
    }
    int packed_set = -1;
    for (int s = 0; s < p.num_segments(); ++s) {
      const SegmentRows<T> seg = p.segment(s);
      int lo = seg.length, hi = 0;
      for (int row = 0; row < rows; ++row) {
        p.band(s, row, segment_bands.first[row], segment_bands.last[row]);
        if (segment_bands.first[row] < segment_bands.last[row]) {
          lo = min_int(lo, segment_bands.first[row]);
          hi = max_int(hi, segment_bands.last[row]);
        }
      }
      if (lo >= hi) continue;
      if (p.query_set(s) != packed_set) {
        pack_queries<kBroadcast, kPairs>(p, s, scratch.packed);
        packed_set = p.query_set(s);
      }
      const std::size_t row_bytes = static_cast<std::size_t>(head_dim) * sizeof(T);
      for (int block = lo; block < hi; block += block_size) {
        const int count = min_int(block_size, hi - block);
        const T* block_keys = seg.keys + block * seg.token_stride;
        const T* block_values = seg.values + block * seg.token_stride;

        // 1. scores
        if constexpr (kBroadcast) {
          // Keys as float rows (stored, or widened here once for all
          // rows), or raw bfloat16 pairs.
          const char* keys = reinterpret_cast<const char*>(block_keys);
          std::ptrdiff_t key_stride = seg.token_stride * static_cast<std::ptrdiff_t>(sizeof(T));
          if constexpr (!kFloatKeys && !kPairs) {
            for (int t = 0; t < count; ++t) {
              const T* from = block_keys + t * seg.token_stride;
              float* to = scratch.keys + t * head_dim;
              for (int d = 0; d < head_dim; d += L) simd::store(to + d, simd::load(from + d));
            }
            keys = reinterpret_cast<const char*>(scratch.keys);
            key_stride = head_dim * static_cast<std::ptrdiff_t>(sizeof(float));
          }
          for (int v = 0; v < vectors; ++v) {
            score_block<kPairs>(scratch.packed + v * steps * L, steps, keys, key_stride, count,
                                scratch.scores + v * L, block_values, seg.token_stride,
                                v == 0 ? count : 0, row_bytes);
          }
        } else if constexpr (kPairs) {
          dot_rows<kDotRows>(0, rows, reinterpret_cast<const std::uint16_t*>(scratch.packed), head_dim, block_keys,
                             seg.token_stride, count, scratch.scores, block_values);
        } else {
          dot_rows<kDotRows>(0, rows, static_cast<const float*>(scratch.packed), head_dim, block_keys,
                             seg.token_stride, count, scratch.scores, block_values);
        }

        // 2. online softmax
        for (int row = 0; row < rows; ++row) {
          bands.first[row] = max_int(segment_bands.first[row] - block, 0);
          bands.last[row] = min_int(segment_bands.last[row] - block, count);
          if (bands.first[row] >= bands.last[row]) bands.first[row] = bands.last[row] = 0;
        }
        if constexpr (kBroadcast) {
          softmax_lanes<kPairs>(p, s, block, count, rows, bands, scratch.scores, running_max, running_sum, factor);
        } else {
          softmax_rows<kPairs>(p, s, block, count, rows, bands, scratch.scores, running_max, running_sum, factor);
        }

        // 3. weighted values (prefetching the next block's keys)
        Prefetch ahead;
        ahead.row_bytes = row_bytes;
        if (block + block_size < hi) {
          ahead.keys = block_keys + block_size * seg.token_stride;
          ahead.token_stride = seg.token_stride;
          ahead.count = min_int(block_size, hi - block - block_size);
        } else {
          // The first block after this segment: the next segment's, else
          // the next pass's (decode: the next KV head). Crossing them keeps
          // short caches, whose heads are a few blocks each, from starting
          // every head cold.
          const T* next = nullptr;
          for (int n = s + 1; n < p.num_segments() && next == nullptr; ++n) {
            const SegmentRows<T> following = p.segment(n);
            if (following.length > 0) {
              next = following.keys;
              ahead.token_stride = following.token_stride;
              ahead.count = min_int(block_size, following.length);
            }
          }
          if (next == nullptr) next = p.next_pass_keys(block_size, ahead.token_stride, ahead.count);
          ahead.keys = next;
          if (next == nullptr) ahead.count = 0;
        }
        // Values of type T, or widened once for all rows when many rows
        // would otherwise widen each value vector again (broadcast tiles).
        if constexpr (kBroadcast && !kFloatKeys) {
          for (int t = 0; t < count; ++t) {
            const T* from = block_values + t * seg.token_stride;
            float* to = scratch.values + t * head_dim;
            for (int d = 0; d < head_dim; d += L) simd::store(to + d, simd::load(from + d));
          }
          add_values<kBroadcast>(rows, bands, scratch.scores, factor, static_cast<const float*>(scratch.values),
                                 static_cast<std::ptrdiff_t>(head_dim), out_rows, head_dim, ahead);
        } else {
          add_values<kBroadcast>(rows, bands, scratch.scores, factor, block_values, seg.token_stride, out_rows,
                                 head_dim, ahead);
        }
      }
    }
    SoftmaxState<float> state[kMaxRows];
    for (int row = 0; row < rows; ++row) {
      state[row].max = running_max[row];
      state[row].sum = running_sum[row];
    }
    finish_rows(p, state);
  }

  /// Runs p (rows <= max_tile_rows): broadcast tiles when the rows fill
  /// the lanes, dot-product tiles otherwise (decode's few query heads per
  /// KV head; measured faster there, see docs/performance.md).
  template <bool kPairs, class P>
  static void run(const P& p) {
    if (p.rows() >= L) {
      run_tile<true, kPairs>(p);
    } else {
      run_tile<false, kPairs>(p);
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
#if SINKKV_VARIANT_HAS_VECTORS
  return std::is_same_v<compute_t<T>, float> && head_dim % kVectorLanes == 0 &&
         head_dim <= Engine<float>::kMaxHeadDim;
#else
  (void)head_dim;
  return false;
#endif
}

/// Runs problem p on the vector engine (true) or not at all (false: the
/// caller takes the portable path).
template <class T, class P>
bool run_vector(const P& p, bool bfloat16_dot) {
#if SINKKV_VARIANT_HAS_VECTORS
  if constexpr (std::is_same_v<compute_t<T>, float>) {
    if (uses_vector_path<T>(p.args.head_dim)) {
#if SINKKV_VARIANT_HAS_BF16_PAIRS
      if constexpr (std::is_same_v<T, Eigen::bfloat16>) {
        if (bfloat16_dot && uses_bfloat16_dot<T>(p.args.head_dim)) {
          Engine<T>::template run<true>(p);
          return true;
        }
      }
#endif
      Engine<T>::template run<false>(p);
      return true;
    }
  }
#endif
  (void)p;
  (void)bfloat16_dot;
  return false;
}

/// Rows per tile for this head size: the vector engine's budget, or the
/// portable engine's.
template <class T>
int tile_rows(int head_dim) {
#if SINKKV_VARIANT_HAS_VECTORS
  if (uses_vector_path<T>(head_dim)) return Engine<T>::max_tile_rows(head_dim);
#endif
  (void)head_dim;
  return Limits::kMaxGroup;
}

/// CpuKernel's decode attention with this variant.
template <class T>
void attend(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out, bool bfloat16_dot) {
  const int group = args.group_size();
  const int per_pass = tile_rows<T>(args.head_dim);
  for (int kv = 0; kv < args.num_kv_heads; ++kv) {
    for (int first = 0; first < group; first += per_pass) {
      // The KV head read after this pass, for prefetching across the boundary.
      const int next_kv = first + per_pass < group ? kv : (kv + 1 < args.num_kv_heads ? kv + 1 : -1);
      const DecodeProblem<T> p{args, out, kv, kv * group + first, min_int(per_pass, group - first), next_kv};
      if (!run_vector<T>(p, bfloat16_dot)) Portable<T>::run(p);
    }
  }
}

/// CpuKernel's chunk attention with this variant, for queries
/// [first_query, first_query + num_queries) of the chunk: per KV head,
/// query tiles of as many (query, head) rows as fit one row tile, each
/// reading the keys of its queries' bands once.
template <class T>
void attend_chunk(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out, int first_query, int num_queries,
                  bool bfloat16_dot) {
  const int group = args.group_size();
  const int per_tile = tile_rows<T>(args.head_dim);
  const int heads = min_int(group, per_tile);  // heads per tile (all of the group when it fits)
  const int queries = max_int(1, per_tile / heads);
  for (int kv = 0; kv < args.num_kv_heads; ++kv) {
    for (int q0 = first_query; q0 < first_query + num_queries; q0 += queries) {
      const int nq = min_int(queries, first_query + num_queries - q0);
      for (int h0 = 0; h0 < group; h0 += heads) {
        const ChunkProblem<T> p{args, out, kv, q0, nq, h0, min_int(heads, group - h0)};
        if (!run_vector<T>(p, bfloat16_dot)) Portable<T>::run(p);
      }
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
  template <class T>
  static void attend_chunk(const ChunkArgs<T>& args, const ChunkOutput<compute_t<T>>& out, int first_query,
                           int num_queries, bool bfloat16_dot) {
    SINKKV_VARIANT::attend_chunk<T>(args, out, first_query, num_queries, bfloat16_dot);
  }
};

}  // namespace SINKKV_VARIANT
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

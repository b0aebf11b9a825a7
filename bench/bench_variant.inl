// Benchmark code that needs vectors, once per instruction-set variant (as
// include/sinkkv/detail/cpu_kernel_variant.inl, and included the same way
// by bench_support.hpp): the read-bandwidth and FMA probes, and the
// ggml-structured baseline. They run the variant CpuKernel runs, so a
// generic build's probes measure the same machine as a native build's.
// No include guard, no lambdas (clang's target pragma does not reach them).

namespace sinkkv::bench::SINKKV_VARIANT {

#if SINKKV_VARIANT_HAS_VECTORS
namespace simd = ::sinkkv::detail::SINKKV_VARIANT::simd;
inline constexpr int kLanes = simd::kLanes;
#else
inline constexpr int kLanes = 1;
#endif

/// One pass summing `n` floats with 8 independent vector accumulators, read
/// as kStreams interleaved sequential streams over consecutive parts of the
/// buffer (a kernel reads K and V as two), each prefetched kPrefetchBytes
/// ahead (0: left to the hardware prefetchers).
template <int kStreams, int kPrefetchBytes>
float sum_floats(const float* p, std::size_t n) {
  static_assert(kStreams == 1 || kStreams == 2 || kStreams == 4 || kStreams == 8, "8 accumulators split evenly");
  const std::size_t per_stream = n / kStreams;
  float total = 0;
  std::size_t i = 0;
#if SINKKV_VARIANT_HAS_VECTORS
  constexpr std::size_t L = simd::kLanes;
  constexpr int kVectors = 8 / kStreams;  // per stream per step
  constexpr std::size_t kStep = kVectors * L;
  simd::Vec acc[8];
  for (auto& a : acc) a = simd::zero();
  for (; i + kStep <= per_stream; i += kStep) {
    for (int stream = 0; stream < kStreams; ++stream) {
      const float* q = p + stream * per_stream + i;
      if constexpr (kPrefetchBytes > 0) {
        if (i + kPrefetchBytes / sizeof(float) + kStep <= per_stream) {
          simd::prefetch(q + kPrefetchBytes / sizeof(float), kStep * sizeof(float));
        }
      }
      for (int k = 0; k < kVectors; ++k) {
        acc[stream * kVectors + k] = simd::add(acc[stream * kVectors + k], simd::load(q + k * L));
      }
    }
  }
  for (int k = 1; k < 8; ++k) acc[0] = simd::add(acc[0], acc[k]);
  total = simd::reduce_add(acc[0]);
#endif
  for (int stream = 0; stream < kStreams; ++stream) {
    for (std::size_t j = i; j < per_stream; ++j) total += p[stream * per_stream + j];
  }
  for (std::size_t j = kStreams * per_stream; j < n; ++j) total += p[j];
  return total;
}

/// Float FMA rate (flops/s, 2 per lane per FMA) of one core with this
/// variant's vectors: 12 independent accumulator chains, best of 7 timings
/// of >= 20 ms of thread CPU time. (The portable variant: scalar
/// multiply-adds.)
inline double fma_rate() {
  constexpr int kChains = 12;
  double best = 0;
  for (int trial = 0; trial < 7; ++trial) {
#if SINKKV_VARIANT_HAS_VECTORS
    simd::Vec acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = simd::broadcast(1.0f + 1e-3f * static_cast<float>(c));
    const simd::Vec a = simd::broadcast(0.999999f), b = simd::broadcast(1e-7f);
#else
    float acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = 1.0f + 1e-3f * static_cast<float>(c);
    const float a = 0.999999f, b = 1e-7f;
#endif
    const double start = thread_cpu_seconds();
    long iterations = 0;
    double elapsed = 0;
    do {
      for (int rep = 0; rep < 1000; ++rep) {
        for (int c = 0; c < kChains; ++c) {
#if SINKKV_VARIANT_HAS_VECTORS
          acc[c] = simd::fma(acc[c], a, b);
#else
          acc[c] = acc[c] * a + b;
#endif
        }
      }
      iterations += 1000;
      elapsed = thread_cpu_seconds() - start;
    } while (elapsed < 0.02);
#if SINKKV_VARIANT_HAS_VECTORS
    for (int c = 1; c < kChains; ++c) acc[0] = simd::add(acc[0], acc[c]);
    float out = simd::reduce_add(acc[0]);
#else
    float out = 0;
    for (int c = 0; c < kChains; ++c) out += acc[c];
#endif
    benchmark::DoNotOptimize(out);
    best = std::max(best, static_cast<double>(iterations) * kChains * 2 * kLanes / elapsed);
  }
  return best;
}

/// ggml's CPU flash-attention structure (ggml_compute_forward_flash_attn_ext
/// for one query row): per query head, per cached token, a vector dot
/// product, a scalar online-softmax update (rescale the accumulator when the
/// maximum grows) and a vector multiply-add of the value row; K/V re-read
/// once per query head. Needs head_dim % kLanes == 0.
template <class T>
void reread_baseline(const AttentionArgs<T>& args, const AttentionOutput<float>& out) {
#if SINKKV_VARIANT_HAS_VECTORS
  constexpr int L = simd::kLanes;
  const int dim = args.head_dim;
  for (int q = 0; q < args.num_query_heads; ++q) {
    const int kv = args.kv_head_of(q);
    float* acc = out.data + q * out.head_stride;
    for (int d = 0; d < dim; ++d) acc[d] = 0.0f;
    float max_score = -HUGE_VALF, sum = 0;
    for (int g = 0; g < args.num_segments; ++g) {
      const KVSegment<T>& seg = args.segments[g];
      const float* query = seg.query + q * dim;
      for (int j = 0; j < seg.length; ++j) {
        const T* key = seg.keys + kv * seg.head_stride + j * seg.token_stride;
        simd::Vec dot = simd::zero();
        for (int d = 0; d < dim; d += L) dot = simd::fma(simd::load(query + d), simd::load(key + d), dot);
        const float score = args.scale * simd::reduce_add(dot);
        float ms = 1, vs = 1;
        if (score > max_score) {
          ms = std::exp(max_score - score);
          max_score = score;
          const simd::Vec m = simd::broadcast(ms);
          for (int d = 0; d < dim; d += L) simd::store(acc + d, simd::mul(m, simd::load(acc + d)));
        } else {
          vs = std::exp(score - max_score);
        }
        const T* value = seg.values + kv * seg.head_stride + j * seg.token_stride;
        const simd::Vec w = simd::broadcast(vs);
        for (int d = 0; d < dim; d += L) simd::store(acc + d, simd::fma(w, simd::load(value + d), simd::load(acc + d)));
        sum = sum * ms + vs;
      }
    }
    const float inverse = 1.0f / sum;
    for (int d = 0; d < dim; ++d) acc[d] *= inverse;
    out.log_sum_exp[q] = max_score + std::log(sum);
  }
#else
  ReferenceKernel{}(args, out);
#endif
}

/// The key-layout experiment (issue 14), score phase of one KV head:
/// `heads` query rows (scale folded in) against `tokens` keys.
///
/// tiled_scores: keys stored tiled for this variant, K^T per tile of
/// kLanes tokens ([tile][head_dim][kLanes], as vLLM's CPU backend once
/// blocked its cache): one vector load serves kLanes tokens, a query
/// element is one broadcast for kTiles tiles, and scores come out
/// [head][token] with no horizontal reduction. kHeads x kTiles accumulators.
template <int kHeads, int kTiles>
void tiled_pass(const float* query, int head_dim, const float* keys, int tokens, int first_tile, float* scores) {
#if SINKKV_VARIANT_HAS_VECTORS
  constexpr int L = simd::kLanes;
  simd::Vec acc[kHeads * kTiles];
  for (auto& a : acc) a = simd::zero();
  const float* tile = keys + static_cast<std::ptrdiff_t>(first_tile) * head_dim * L;
  for (int d = 0; d < head_dim; ++d) {
    simd::Vec key[kTiles];
    for (int k = 0; k < kTiles; ++k) key[k] = simd::load(tile + (static_cast<std::ptrdiff_t>(k) * head_dim + d) * L);
    for (int h = 0; h < kHeads; ++h) {
      const simd::Vec q = simd::broadcast(query[h * head_dim + d]);
      for (int k = 0; k < kTiles; ++k) acc[h * kTiles + k] = simd::fma(q, key[k], acc[h * kTiles + k]);
    }
  }
  for (int h = 0; h < kHeads; ++h) {
    for (int k = 0; k < kTiles; ++k) simd::store(scores + h * tokens + (first_tile + k) * L, acc[h * kTiles + k]);
  }
#else
  (void)query, (void)head_dim, (void)keys, (void)tokens, (void)first_tile, (void)scores;
#endif
}

/// Heads in groups of kHeads (a power of two), tiles kTiles at a time.
/// @pre heads a power of two <= 16; tokens a multiple of kLanes * kTiles.
template <int kHeads>
void tiled_heads(const float* query, int heads, int head_dim, const float* keys, int tokens, float* scores) {
  if constexpr (kHeads > 1) {
    if (heads < kHeads) return tiled_heads<kHeads / 2>(query, heads, head_dim, keys, tokens, scores);
  }
#if SINKKV_VARIANT_HAS_VECTORS
  constexpr int kAcc = simd::kAccumulators;
  constexpr int kTiles = kAcc / kHeads > 4 ? 4 : (kAcc / kHeads < 1 ? 1 : kAcc / kHeads);
  for (int h0 = 0; h0 < heads; h0 += kHeads) {
    for (int tile = 0; tile < tokens / kLanes; tile += kTiles) {
      tiled_pass<kHeads, kTiles>(query + h0 * head_dim, head_dim, keys, tokens, tile, scores + h0 * tokens);
    }
  }
#else
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < tokens; ++t) {
      float dot = 0;
      for (int d = 0; d < head_dim; ++d) dot += query[h * head_dim + d] * keys[t * head_dim + d];
      scores[h * tokens + t] = dot;
    }
  }
#endif
}

/// rowmajor_scores: the same scores from row-major keys ([token][head_dim])
/// with CpuKernel's own decode micro-kernel (dot-product tiles and their
/// transposing reduction), block by block as the kernel calls it,
/// prefetching one block ahead.
/// scores: [heads][64] per block, overwritten block after block.
inline void rowmajor_scores(const float* query, int heads, int head_dim, const float* keys, int tokens,
                            float* scores) {
#if SINKKV_VARIANT_HAS_VECTORS
  using Engine = ::sinkkv::detail::SINKKV_VARIANT::Engine<float>;
  const int block = Engine::block_tokens(head_dim);
  for (int b = 0; b < tokens; b += block) {
    // The kernel prefetches the next block's keys while it sums values;
    // here the score pass itself prefetches them (the last block re-reads
    // its own rows).
    const std::ptrdiff_t next = b + block < tokens ? b + block : b;
    Engine::dot_rows<Engine::kDotRows>(0, heads, query, head_dim, keys + static_cast<std::ptrdiff_t>(b) * head_dim,
                                       head_dim, block < tokens - b ? block : tokens - b, scores,
                                       keys + next * head_dim);
  }
#else
  tiled_heads<16>(query, heads, head_dim, keys, tokens, scores);
#endif
}

/// What bench_support dispatches to.
struct Variant {
  static constexpr int kVectorLanes = kLanes;
  template <int kStreams, int kPrefetchBytes>
  static float sum(const float* p, std::size_t n) {
    return sum_floats<kStreams, kPrefetchBytes>(p, n);
  }
  static double fma() { return fma_rate(); }
  template <class T>
  static void reread(const AttentionArgs<T>& args, const AttentionOutput<float>& out) {
    reread_baseline(args, out);
  }
  static void tiled(const float* query, int heads, int head_dim, const float* keys, int tokens, float* scores) {
    tiled_heads<16>(query, heads, head_dim, keys, tokens, scores);
  }
  static void rowmajor(const float* query, int heads, int head_dim, const float* keys, int tokens, float* scores) {
    rowmajor_scores(query, heads, head_dim, keys, tokens, scores);
  }
};

}  // namespace sinkkv::bench::SINKKV_VARIANT

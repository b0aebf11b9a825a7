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
/// of >= 20 ms. (The portable variant: scalar multiply-adds.)
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
    const auto start = Clock::now();
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
      elapsed = seconds_since(start);
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
};

}  // namespace sinkkv::bench::SINKKV_VARIANT

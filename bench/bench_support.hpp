// Benchmark support: machine probes (read bandwidth per working-set size,
// FMA peak), a fast double-precision attention oracle, result checks, and
// the statistics every benchmark reports (median plus best-of-N).
#pragma once

#include <benchmark/benchmark.h>

#include <sinkkv/attention.hpp>
#include <sinkkv/detail/element.hpp>
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/reference.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <time.h>

namespace sinkkv::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// CPU time of the calling thread, seconds: what the FMA probe and the
/// one-thread chunk rows are timed with, so that time the shared machine
/// gives to other processes does not count as ours.
inline double thread_cpu_seconds() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

/// 64-byte aligned, zero-initialised buffer (no value-initialisation cost
/// hidden in timing: filled once by the caller).
template <class T>
struct AlignedBuffer {
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data;
  std::size_t size = 0;
  explicit AlignedBuffer(std::size_t n) : size(n) {
    const std::size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    data.reset(static_cast<T*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
    if (!data) {
      std::fprintf(stderr, "out of memory allocating %zu bytes\n", bytes);
      std::abort();
    }
    std::memset(static_cast<void*>(data.get()), 0, bytes);
  }
  T* get() const { return data.get(); }
};

}  // namespace sinkkv::bench

// ---- vector code, once per instruction-set variant (bench_variant.inl) ------
#if SINKKV_VARIANT_AVX512_BF16
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512_BF16)
#define SINKKV_VARIANT avx512_bf16
#define SINKKV_VARIANT_HAS_VECTORS 1
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif
#if SINKKV_VARIANT_AVX512
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512)
#define SINKKV_VARIANT avx512
#define SINKKV_VARIANT_HAS_VECTORS 1
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif
#if SINKKV_VARIANT_AVX2
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX2)
#define SINKKV_VARIANT avx2
#define SINKKV_VARIANT_HAS_VECTORS 1
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif
#if SINKKV_VARIANT_SSE2
SINKKV_TARGET_BEGIN(SINKKV_TARGET_SSE2)
#define SINKKV_VARIANT sse2
#define SINKKV_VARIANT_HAS_VECTORS 1
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
SINKKV_TARGET_END
#endif
#if SINKKV_VARIANT_NEON
#define SINKKV_VARIANT neon
#define SINKKV_VARIANT_HAS_VECTORS 1
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT
#endif
#define SINKKV_VARIANT scalar
#define SINKKV_VARIANT_HAS_VECTORS 0
#include "bench_variant.inl"
#undef SINKKV_VARIANT_HAS_VECTORS
#undef SINKKV_VARIANT

namespace sinkkv::bench {

/// The variant CpuKernel runs in this process (SINKKV_CPU_ISA or the best).
inline InstructionSet kernel_variant() { return CpuKernel{}.instruction_set(); }

/// Calls f(V{}) with V the bench Variant of instruction set `isa`.
template <class F>
decltype(auto) with_variant(InstructionSet isa, F&& f) {
  switch (isa) {
#if SINKKV_VARIANT_AVX512_BF16
    case InstructionSet::kAvx512Bf16: return f(avx512_bf16::Variant{});
#endif
#if SINKKV_VARIANT_AVX512
    case InstructionSet::kAvx512: return f(avx512::Variant{});
#endif
#if SINKKV_VARIANT_AVX2
    case InstructionSet::kAvx2: return f(avx2::Variant{});
#endif
#if SINKKV_VARIANT_SSE2
    case InstructionSet::kSse2: return f(sse2::Variant{});
#endif
#if SINKKV_VARIANT_NEON
    case InstructionSet::kNeon: return f(neon::Variant{});
#endif
    default: return f(scalar::Variant{});
  }
}

/// One pass summing `n` floats (see bench_variant.inl), with the kernel's variant.
template <int kStreams, int kPrefetchBytes>
inline float sum_floats(const float* p, std::size_t n) {
  return with_variant(kernel_variant(),
                      [&](auto v) { return decltype(v)::template sum<kStreams, kPrefetchBytes>(p, n); });
}

/// Read bandwidths measured so far in this process, by working-set bytes.
inline std::map<std::size_t, double>& measured_bandwidths() {
  static std::map<std::size_t, double> measured;
  return measured;
}

/// Bytes/s of sum_floats<kStreams, kPrefetchBytes> over p[0, n), warm: the
/// best of 5 timings of repeated passes (each timing at least 20 ms).
template <int kStreams, int kPrefetchBytes>
inline double best_read_rate(const float* p, std::size_t n) {
  float sink = sum_floats<kStreams, kPrefetchBytes>(p, n);  // warm-up
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) {
    const auto start = Clock::now();
    std::size_t passes = 0;
    double elapsed = 0;
    do {
      sink += sum_floats<kStreams, kPrefetchBytes>(p, n);
      ++passes;
      elapsed = seconds_since(start);
    } while (elapsed < 0.02);
    best = std::max(best, static_cast<double>(passes * n * sizeof(float)) / elapsed);
  }
  benchmark::DoNotOptimize(sink);
  return best;
}

/// Sustained read bandwidth (bytes/s) for a working set of `bytes`, warm:
/// the best of several read patterns (1, 2 or 4 interleaved streams, with
/// and without software prefetch), each the best of 5 timings of repeated
/// passes over one buffer (best_read_rate). One plain stream alone read
/// about a quarter less than four prefetched ones at 32 MiB on Zen 5 (51 vs
/// 69 GB/s), and at 128 MiB less than CpuKernel itself once reached.
/// Cached per size: measured once per process.
inline double read_bandwidth(std::size_t bytes) {
  std::map<std::size_t, double>& cache = measured_bandwidths();
  const auto it = cache.find(bytes);
  if (it != cache.end()) return it->second;
  const std::size_t n = std::max<std::size_t>(bytes / sizeof(float), 1024);
  AlignedBuffer<float> buffer(n);
  for (std::size_t i = 0; i < n; ++i) buffer.get()[i] = static_cast<float>(i & 1023) * 1e-3f;
  const float* p = buffer.get();
  const double best = std::max({best_read_rate<1, 0>(p, n), best_read_rate<2, 0>(p, n), best_read_rate<4, 0>(p, n),
                                best_read_rate<1, 1024>(p, n), best_read_rate<2, 1024>(p, n),
                                best_read_rate<4, 2048>(p, n)});
  cache[bytes] = best;
  return best;
}

/// The bandwidth a roofline bound for `bytes` should use: read_bandwidth(bytes),
/// raised to the best measured so far for any larger working set. Reading
/// less data is never slower in steady state, so a lower figure means that
/// probe was disturbed (on the shared development VM a 32 MiB probe once
/// read 31.6 GB/s while 64 MiB read 57.8 GB/s in the same run), and a bound
/// built on it would flatter every kernel of that size.
inline double bound_bandwidth(std::size_t bytes) {
  double best = read_bandwidth(bytes);
  for (auto it = measured_bandwidths().upper_bound(bytes); it != measured_bandwidths().end(); ++it) {
    best = std::max(best, it->second);
  }
  return best;
}

/// Peak float FMA rate (flops/s, 2 per lane per FMA) of one core with the
/// variant CpuKernel runs (so a generic and a native build measure the same
/// peak): 12 independent accumulator chains, best of 7 timings in thread
/// CPU time. Measured once per process.
inline double fma_peak() {
  static const double peak = with_variant(kernel_variant(), [](auto v) { return decltype(v)::fma(); });
  return peak;
}

/// Dense softmax attention in double, three passes with the scores kept:
/// O(heads * tokens * head_dim), so it can check 65,536-token problems that
/// ReferenceKernel (O(... * head_dim^2) by design) would take minutes on.
/// Checked against ReferenceKernel on small problems at startup.
template <class T>
void dense_oracle(const AttentionArgs<T>& args, std::vector<double>& out, std::vector<double>& lse) {
  const int total = args.num_tokens();
  out.assign(static_cast<std::size_t>(args.num_query_heads) * args.head_dim, 0.0);
  lse.assign(static_cast<std::size_t>(args.num_query_heads), 0.0);
  std::vector<double> scores(static_cast<std::size_t>(total));
  for (int q = 0; q < args.num_query_heads; ++q) {
    const int kv = args.kv_head_of(q);
    int index = 0;
    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& seg = args.segments[s];
      for (int j = 0; j < seg.length; ++j) {
        const T* key = seg.keys + kv * seg.head_stride + j * seg.token_stride;
        double dot = 0;
        for (int d = 0; d < args.head_dim; ++d) {
          dot += detail::to_double(seg.query[q * args.head_dim + d]) * detail::to_double(key[d]);
        }
        double score = detail::to_double(args.scale) * dot;
        if (args.alibi_slopes != nullptr) {
          score -= detail::to_double(args.alibi_slopes[q]) * static_cast<double>(seg.query_distance - j);
        }
        scores[static_cast<std::size_t>(index++)] = score;
      }
    }
    const double max_score = *std::max_element(scores.begin(), scores.end());
    double sum = 0;
    for (double& s : scores) sum += (s = std::exp(s - max_score));
    index = 0;
    double* row = out.data() + static_cast<std::size_t>(q) * args.head_dim;
    for (int s = 0; s < args.num_segments; ++s) {
      const KVSegment<T>& seg = args.segments[s];
      for (int j = 0; j < seg.length; ++j) {
        const T* value = seg.values + kv * seg.head_stride + j * seg.token_stride;
        const double w = scores[static_cast<std::size_t>(index++)] / sum;
        for (int d = 0; d < args.head_dim; ++d) row[d] += w * detail::to_double(value[d]);
      }
    }
    lse[static_cast<std::size_t>(q)] = max_score + std::log(sum);
  }
}

/// Largest |got - want| / (atol + rtol |want|); <= 1 passes.
template <class C>
double worst_error(const C* got, std::ptrdiff_t head_stride, const C* got_lse, const std::vector<double>& want,
                   const std::vector<double>& want_lse, int heads, int head_dim, double tolerance) {
  double worst = 0;
  for (int h = 0; h < heads; ++h) {
    for (int d = 0; d < head_dim; ++d) {
      const double w = want[static_cast<std::size_t>(h) * head_dim + d];
      const double g = static_cast<double>(got[h * head_stride + d]);
      worst = std::max(worst, std::abs(g - w) / (tolerance + tolerance * std::abs(w)));
    }
    const double w = want_lse[static_cast<std::size_t>(h)];
    worst = std::max(worst, std::abs(static_cast<double>(got_lse[h]) - w) / (tolerance + tolerance * std::abs(w)));
  }
  return worst;
}

/// Median (Google Benchmark's) plus best-of-N: "min" of times, "max" of
/// rates and roofline fractions, every benchmark reports both.
inline void add_best_of_n(benchmark::internal::Benchmark* b) {
  b->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
  b->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

/// Removes `--sinkkv_smoke` from argv; true if it was there.
inline bool take_smoke_flag(int& argc, char** argv) {
  bool found = false;
  int out = 0;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sinkkv_smoke") == 0) {
      found = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return found;
}

}  // namespace sinkkv::bench

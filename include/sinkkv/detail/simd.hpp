// sinkkv::detail::simd: the few float vector operations the fast CPU kernel
// needs, for the widest instruction set the *user's* compiler flags enable.
//
// The library is header-only, so the flags of the translation unit decide:
//   -mavx512f (e.g. -march=native on Zen 4/5, Sapphire Rapids): 16 lanes
//   -mavx2 -mfma (Haswell and later, Zen 1+):                     8 lanes
//   plain x86-64 (SSE2 only, no flags):                           4 lanes
//   anything else:                                                no Vec; the
//     kernel falls back to its Eigen path (kAvailable == false).
// Half-precision loads use F16C (AVX-512F implies it) when enabled and a
// scalar conversion otherwise; bfloat16 loads are a 16-bit shift everywhere.
// Every path computes in float with the same algorithm, so results differ
// between ISAs only by the order of float additions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

// Kernel phases that must get the register allocator to themselves: inlined
// into one large function, GCC 12 spills accumulators and parks pointers in
// vector registers, which halved the FMA rate of the score loop.
// Their inner tiles, and the reductions they call, must be inlined in turn,
// or their accumulator arrays go through memory.
#if defined(__GNUC__) || defined(__clang__)
#define SINKKV_NOINLINE __attribute__((noinline))
#define SINKKV_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SINKKV_NOINLINE
#define SINKKV_ALWAYS_INLINE inline
#endif

namespace sinkkv::detail::simd {

static_assert(sizeof(Eigen::half) == 2 && sizeof(Eigen::bfloat16) == 2,
              "sinkkv: Eigen::half and Eigen::bfloat16 must be 16-bit for the vector loads");

/// Asks for the `bytes` bytes at `p` to be brought into every cache level
/// (as _MM_HINT_T0), one 64-byte line at a time. A no-op where the compiler
/// has no prefetch builtin.
/// Forced inline: GCC 12 sees no side effect in __builtin_prefetch, so a
/// wrapper left out of line looks pure and calls to it are deleted as dead
/// code (that silently removed all the value-phase prefetches of CpuKernel
/// once its value tile was inlined; tests/codegen/prefetch_check.cmake now
/// guards against it).
SINKKV_ALWAYS_INLINE void prefetch(const void* p, std::size_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const char* bytes_p = static_cast<const char*>(p);
  for (std::size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(bytes_p + offset, 0, 3);
#else
  (void)p;
  (void)bytes;
#endif
}

/// Returns v, but makes the compiler hold it in a register: a value used by
/// several FMAs is then loaded once instead of being folded into each FMA as
/// a memory operand (which GCC 12 does, doubling the load-port traffic).
template <class V>
inline V keep_in_register(V v) {
#if defined(__GNUC__) || defined(__clang__)
  asm("" : "+v"(v));
#endif
  return v;
}

/// exp(x) coefficients (Cephes expf, |rel. error| < 2 ulp on [-87, 88]).
struct ExpConstants {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kMax = 88.3762626647949f;
  static constexpr float kMin = -87.3365447504019f;  // below: exp underflows to 0
  static constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                         kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
};

#if defined(__AVX512F__)

inline constexpr bool kAvailable = true;
inline constexpr int kLanes = 16;
/// Vector registers the kernel may use as accumulators in one tile.
inline constexpr int kAccumulators = 16;
inline constexpr const char* kIsa = "avx512f";
using Vec = __m512;

// GCC 12.1/12.2 (PR 105593) warns "__Y is used uninitialized" inside most
// unmasked AVX-512 intrinsics (they pass _mm512_undefined_ps() as the merge
// source) wherever they are inlined, which breaks -Werror builds. The
// all-lanes masked forms below name their merge source and compile to the
// same unmasked instructions.
inline constexpr __mmask16 kAllLanes = 0xFFFF;

inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec broadcast(float x) { return _mm512_set1_ps(x); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec load(const Eigen::half* p) {
  return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), kAllLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec load(const Eigen::bfloat16* p) {
  const __m512i none = _mm512_setzero_si512();
  const __m512i wide =
      _mm512_mask_cvtepu16_epi32(none, kAllLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_mask_slli_epi32(none, kAllLanes, wide, 16));
}
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
/// Stores lanes [first, first + count) of v to p[first..first + count).
inline void store_lanes(float* p, Vec v, int first, int count) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>(((1u << count) - 1u) << first), v);
}
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec max(Vec a, Vec b) { return _mm512_mask_max_ps(a, kAllLanes, a, b); }
inline Vec min(Vec a, Vec b) { return _mm512_mask_min_ps(a, kAllLanes, a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
template <int kHalf>
inline __m256 half_of(Vec v) {
  return _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, _mm512_castps_pd(v), kHalf));
}
inline float reduce_add(Vec v) {
  const __m256 y = _mm256_add_ps(half_of<0>(v), half_of<1>(v));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
inline float reduce_max(Vec v) {
  const __m256 y = _mm256_max_ps(half_of<0>(v), half_of<1>(v));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

/// exp of every lane; exactly 0 far below kMin (and for -inf).
inline Vec exp(Vec x) {
  using K = ExpConstants;
  x = max(min(x, broadcast(K::kMax)), broadcast(-104.0f));
  const Vec n = _mm512_mask_roundscale_ps(x, kAllLanes, _mm512_mul_ps(x, broadcast(K::kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm512_fnmadd_ps(n, broadcast(K::kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, broadcast(K::kLn2Lo), r);
  Vec p = broadcast(K::kP0);
  p = fma(p, r, broadcast(K::kP1));
  p = fma(p, r, broadcast(K::kP2));
  p = fma(p, r, broadcast(K::kP3));
  p = fma(p, r, broadcast(K::kP4));
  p = fma(p, r, broadcast(K::kP5));
  const Vec y = fma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, broadcast(1.0f)));
  return _mm512_mask_scalef_ps(y, kAllLanes, y, n);  // y * 2^n, gradual underflow to 0
}

/// Lane k of the result is the sum of the lanes of v[k] (16 dot products
/// finished with 15 adds and 30 shuffles instead of 16 full reductions).
SINKKV_ALWAYS_INLINE Vec reduce_lanes(const Vec* v) {
  Vec a[8];
  for (int i = 0; i < 8; ++i) {
    const Vec x = v[2 * i], y = v[2 * i + 1];
    a[i] = _mm512_add_ps(_mm512_mask_unpacklo_ps(x, kAllLanes, x, y), _mm512_mask_unpackhi_ps(x, kAllLanes, x, y));
  }
  Vec b[4];  // per 128-bit lane: partial sums of v[4i..4i+3]
  for (int i = 0; i < 4; ++i) {
    const Vec x = a[2 * i], y = a[2 * i + 1];
    b[i] = _mm512_add_ps(_mm512_mask_shuffle_ps(x, kAllLanes, x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_mask_shuffle_ps(x, kAllLanes, x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  Vec c[2];
  for (int i = 0; i < 2; ++i) {
    const Vec x = b[2 * i], y = b[2 * i + 1];
    c[i] = _mm512_add_ps(_mm512_mask_shuffle_f32x4(x, kAllLanes, x, y, 0x88),
                         _mm512_mask_shuffle_f32x4(x, kAllLanes, x, y, 0xDD));
  }
  return _mm512_add_ps(_mm512_mask_shuffle_f32x4(c[0], kAllLanes, c[0], c[1], 0x88),
                       _mm512_mask_shuffle_f32x4(c[0], kAllLanes, c[0], c[1], 0xDD));
}

#if defined(__AVX512BF16__)
/// bfloat16 dot products (VDPBF16PS): 32 bfloat16 pairs per instruction.
inline constexpr bool kBfloat16Dot = true;
using BfloatPairs = __m512bh;
/// 32 bfloat16 values at p (bfloat16 storage, or raw bits).
inline BfloatPairs load_pairs(const void* p) { return reinterpret_cast<BfloatPairs>(_mm512_loadu_si512(p)); }
/// acc[i] += a[2i] * b[2i] + a[2i + 1] * b[2i + 1], in float.
inline Vec dot_pairs(Vec acc, BfloatPairs a, BfloatPairs b) { return _mm512_dpbf16_ps(acc, a, b); }
/// 32 floats rounded to nearest-even bfloat16, stored at p as raw bits.
inline void store_rounded_pairs(std::uint16_t* p, Vec low, Vec high) {
  _mm512_storeu_si512(static_cast<void*>(p), reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low)));
}
#else
inline constexpr bool kBfloat16Dot = false;
#endif

#elif defined(__AVX2__) && defined(__FMA__)

inline constexpr bool kAvailable = true;
inline constexpr int kLanes = 8;
inline constexpr int kAccumulators = 8;
inline constexpr const char* kIsa = "avx2+fma";
inline constexpr bool kBfloat16Dot = false;
using Vec = __m256;

inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec broadcast(float x) { return _mm256_set1_ps(x); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec load(const Eigen::half* p) {
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  alignas(32) float wide[8];
  for (int i = 0; i < 8; ++i) wide[i] = static_cast<float>(p[i]);
  return _mm256_load_ps(wide);
#endif
}
inline Vec load(const Eigen::bfloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline void store_lanes(float* p, Vec v, int first, int count) {
  alignas(32) float lanes[kLanes];
  store(lanes, v);
  for (int i = first; i < first + count; ++i) p[i] = lanes[i];
}
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float reduce_add(Vec v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
inline float reduce_max(Vec v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
inline Vec exp(Vec x) {
  using K = ExpConstants;
  const Vec underflow = _mm256_cmp_ps(x, broadcast(K::kMin), _CMP_LT_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, broadcast(K::kMax)), broadcast(K::kMin));
  const Vec n = _mm256_round_ps(_mm256_mul_ps(x, broadcast(K::kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm256_fnmadd_ps(n, broadcast(K::kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, broadcast(K::kLn2Lo), r);
  Vec p = broadcast(K::kP0);
  p = fma(p, r, broadcast(K::kP1));
  p = fma(p, r, broadcast(K::kP2));
  p = fma(p, r, broadcast(K::kP3));
  p = fma(p, r, broadcast(K::kP4));
  p = fma(p, r, broadcast(K::kP5));
  const Vec y = fma(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, broadcast(1.0f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(bits)));
}
SINKKV_ALWAYS_INLINE Vec reduce_lanes(const Vec* v) {
  Vec a[4];
  for (int i = 0; i < 4; ++i) {
    a[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  Vec b[2];
  for (int i = 0; i < 2; ++i) {
    b[i] = _mm256_add_ps(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm256_add_ps(_mm256_permute2f128_ps(b[0], b[1], 0x20), _mm256_permute2f128_ps(b[0], b[1], 0x31));
}

#elif defined(__SSE2__) || defined(_M_X64)

inline constexpr bool kAvailable = true;
inline constexpr int kLanes = 4;
inline constexpr int kAccumulators = 8;
inline constexpr const char* kIsa = "sse2";
inline constexpr bool kBfloat16Dot = false;
using Vec = __m128;

inline Vec zero() { return _mm_setzero_ps(); }
inline Vec broadcast(float x) { return _mm_set1_ps(x); }
inline Vec load(const float* p) { return _mm_loadu_ps(p); }
inline Vec load(const Eigen::half* p) {
  return _mm_setr_ps(static_cast<float>(p[0]), static_cast<float>(p[1]), static_cast<float>(p[2]),
                     static_cast<float>(p[3]));
}
inline Vec load(const Eigen::bfloat16* p) {
  const __m128i narrow = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), narrow));
}
inline void store(float* p, Vec v) { _mm_storeu_ps(p, v); }
inline void store_lanes(float* p, Vec v, int first, int count) {
  alignas(32) float lanes[kLanes];
  store(lanes, v);
  for (int i = first; i < first + count; ++i) p[i] = lanes[i];
}
inline Vec add(Vec a, Vec b) { return _mm_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm_mul_ps(a, b); }
inline Vec max(Vec a, Vec b) { return _mm_max_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline float reduce_add(Vec v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
inline float reduce_max(Vec v) {
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
inline Vec exp(Vec x) {
  using K = ExpConstants;
  const Vec underflow = _mm_cmplt_ps(x, broadcast(K::kMin));
  x = _mm_max_ps(_mm_min_ps(x, broadcast(K::kMax)), broadcast(K::kMin));
  const __m128i ni = _mm_cvtps_epi32(_mm_mul_ps(x, broadcast(K::kLog2e)));  // round to nearest
  const Vec n = _mm_cvtepi32_ps(ni);
  Vec r = _mm_sub_ps(x, _mm_mul_ps(n, broadcast(K::kLn2Hi)));
  r = _mm_sub_ps(r, _mm_mul_ps(n, broadcast(K::kLn2Lo)));
  Vec p = broadcast(K::kP0);
  p = fma(p, r, broadcast(K::kP1));
  p = fma(p, r, broadcast(K::kP2));
  p = fma(p, r, broadcast(K::kP3));
  p = fma(p, r, broadcast(K::kP4));
  p = fma(p, r, broadcast(K::kP5));
  const Vec y = fma(p, _mm_mul_ps(r, r), _mm_add_ps(r, broadcast(1.0f)));
  const __m128i bits = _mm_slli_epi32(_mm_add_epi32(ni, _mm_set1_epi32(127)), 23);
  return _mm_andnot_ps(underflow, _mm_mul_ps(y, _mm_castsi128_ps(bits)));
}
SINKKV_ALWAYS_INLINE Vec reduce_lanes(const Vec* v) {
  const Vec t0 = _mm_unpacklo_ps(v[0], v[1]), t1 = _mm_unpackhi_ps(v[0], v[1]);
  const Vec t2 = _mm_unpacklo_ps(v[2], v[3]), t3 = _mm_unpackhi_ps(v[2], v[3]);
  const Vec a = _mm_add_ps(t0, t1);  // [v0 0+2, v1 0+2, v0 1+3, v1 1+3]
  const Vec b = _mm_add_ps(t2, t3);
  return _mm_add_ps(_mm_movelh_ps(a, b), _mm_movehl_ps(b, a));
}

#else

inline constexpr bool kAvailable = false;
inline constexpr int kLanes = 1;
inline constexpr int kAccumulators = 1;
inline constexpr const char* kIsa = "none (Eigen fallback)";
inline constexpr bool kBfloat16Dot = false;

#endif

}  // namespace sinkkv::detail::simd

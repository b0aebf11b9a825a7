// sinkkv::detail::avx2::simd: the float vector operations of the AVX2
// variant (8 lanes; AVX2 + FMA + F16C), compiled under its target attribute
// whatever the unit's flags.
#pragma once

#include "simd_common.hpp"

#if SINKKV_VARIANT_AVX2
#include <immintrin.h>

SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX2)
namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace avx2::simd {

using detail::prefetch;

inline constexpr int kLanes = 8;
inline constexpr int kAccumulators = 8;
inline constexpr bool kBfloat16Dot = false;
using Vec = __m256;

/// Returns v, but makes the compiler hold it in a vector register: a value
/// used by several FMAs is then loaded once instead of being folded into
/// each FMA as a memory operand (which GCC 12 does, doubling the load-port
/// traffic).
SINKKV_ALWAYS_INLINE Vec keep_in_register(Vec v) {
#if defined(__GNUC__) || defined(__clang__)
  asm("" : "+v"(v));
#endif
  return v;
}
SINKKV_ALWAYS_INLINE Vec zero() { return _mm256_setzero_ps(); }
SINKKV_ALWAYS_INLINE Vec broadcast(float x) { return _mm256_set1_ps(x); }
SINKKV_ALWAYS_INLINE Vec load(const float* p) { return _mm256_loadu_ps(p); }
SINKKV_ALWAYS_INLINE Vec load(const Eigen::half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SINKKV_ALWAYS_INLINE Vec load(const Eigen::bfloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
SINKKV_ALWAYS_INLINE void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
SINKKV_ALWAYS_INLINE void store_lanes(float* p, Vec v, int first, int count) {
  alignas(32) float lanes[kLanes];
  store(lanes, v);
  for (int i = first; i < first + count; ++i) p[i] = lanes[i];
}
SINKKV_ALWAYS_INLINE Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
/// max/min lane by lane; where either input is NaN the result is b.
SINKKV_ALWAYS_INLINE Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
SINKKV_ALWAYS_INLINE float reduce_add(Vec v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
SINKKV_ALWAYS_INLINE float reduce_max(Vec v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
/// The 4 bytes at p (a float, or a pair of bfloat16) in every lane: a
/// broadcast load, which FMAs may take as a memory operand.
SINKKV_ALWAYS_INLINE Vec broadcast_load(const void* p) {
  float x;
  std::memcpy(&x, p, sizeof x);
  return _mm256_set1_ps(x);
}
/// exp of every lane for x <= 88.37; exactly 0 below kMin (and for -inf);
/// NaN stays NaN (the clamps keep their NaN operand).
SINKKV_ALWAYS_INLINE Vec exp(Vec x) {
  using K = ExpConstants;
  const Vec underflow = _mm256_cmp_ps(x, broadcast(K::kMin), _CMP_LT_OQ);
  x = max(broadcast(K::kMin), min(broadcast(K::kMax), x));
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
/// Lane k of the result is the sum of the lanes of v[k], k < 8.
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

}  // namespace avx2::simd
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
SINKKV_TARGET_END

#endif  // SINKKV_VARIANT_AVX2

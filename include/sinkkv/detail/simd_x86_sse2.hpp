// sinkkv::detail::sse2::simd: the float vector operations of the SSE2
// variant (4 lanes, the x86-64 baseline: no FMA, no F16C).
#pragma once

#include "simd_common.hpp"

#if SINKKV_VARIANT_SSE2
#include <emmintrin.h>

SINKKV_TARGET_BEGIN(SINKKV_TARGET_SSE2)
namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace sse2::simd {

using detail::prefetch;

inline constexpr int kLanes = 4;
inline constexpr int kAccumulators = 8;
inline constexpr bool kBfloat16Dot = false;
using Vec = __m128;

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
SINKKV_ALWAYS_INLINE Vec zero() { return _mm_setzero_ps(); }
SINKKV_ALWAYS_INLINE Vec broadcast(float x) { return _mm_set1_ps(x); }
SINKKV_ALWAYS_INLINE Vec load(const float* p) { return _mm_loadu_ps(p); }
/// Four IEEE halves widened exactly with integer SSE2 (no F16C): see
/// half_bits_to_float in simd_common.hpp for the method.
SINKKV_ALWAYS_INLINE Vec load(const Eigen::half* p) {
  const __m128i bits = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128());
  const __m128i shifted = _mm_slli_epi32(_mm_and_si128(bits, _mm_set1_epi32(0x7FFF)), 13);
  Vec magnitude = _mm_mul_ps(_mm_castsi128_ps(shifted), _mm_castsi128_ps(_mm_set1_epi32(0x77800000)));
  const Vec was_inf_or_nan = _mm_cmpge_ps(magnitude, _mm_castsi128_ps(_mm_set1_epi32(0x47800000)));
  magnitude = _mm_or_ps(magnitude, _mm_and_ps(was_inf_or_nan, _mm_castsi128_ps(_mm_set1_epi32(0x7F800000))));
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(bits, _mm_set1_epi32(0x8000)), 16);
  return _mm_or_ps(magnitude, _mm_castsi128_ps(sign));
}
SINKKV_ALWAYS_INLINE Vec load(const Eigen::bfloat16* p) {
  const __m128i narrow = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), narrow));
}
SINKKV_ALWAYS_INLINE void store(float* p, Vec v) { _mm_storeu_ps(p, v); }
SINKKV_ALWAYS_INLINE void store_lanes(float* p, Vec v, int first, int count) {
  alignas(16) float lanes[kLanes];
  store(lanes, v);
  for (int i = first; i < first + count; ++i) p[i] = lanes[i];
}
SINKKV_ALWAYS_INLINE Vec add(Vec a, Vec b) { return _mm_add_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return _mm_sub_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return _mm_mul_ps(a, b); }
/// max/min lane by lane; where either input is NaN the result is b.
SINKKV_ALWAYS_INLINE Vec max(Vec a, Vec b) { return _mm_max_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec min(Vec a, Vec b) { return _mm_min_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
SINKKV_ALWAYS_INLINE float reduce_add(Vec v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
SINKKV_ALWAYS_INLINE float reduce_max(Vec v) {
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
/// The 4 bytes at p (a float, or a pair of bfloat16) in every lane: a
/// broadcast load, which FMAs may take as a memory operand.
SINKKV_ALWAYS_INLINE Vec broadcast_load(const void* p) {
  float x;
  std::memcpy(&x, p, sizeof x);
  return _mm_set1_ps(x);
}
/// exp of every lane for x <= 88.37; exactly 0 below kMin (and for -inf);
/// NaN stays NaN (the clamps keep their NaN operand).
SINKKV_ALWAYS_INLINE Vec exp(Vec x) {
  using K = ExpConstants;
  const Vec underflow = _mm_cmplt_ps(x, broadcast(K::kMin));
  x = max(broadcast(K::kMin), min(broadcast(K::kMax), x));
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
/// Lane k of the result is the sum of the lanes of v[k], k < 4.
SINKKV_ALWAYS_INLINE Vec reduce_lanes(const Vec* v) {
  const Vec t0 = _mm_unpacklo_ps(v[0], v[1]), t1 = _mm_unpackhi_ps(v[0], v[1]);
  const Vec t2 = _mm_unpacklo_ps(v[2], v[3]), t3 = _mm_unpackhi_ps(v[2], v[3]);
  const Vec a = _mm_add_ps(t0, t1);  // [v0 0+2, v1 0+2, v0 1+3, v1 1+3]
  const Vec b = _mm_add_ps(t2, t3);
  return _mm_add_ps(_mm_movelh_ps(a, b), _mm_movehl_ps(b, a));
}

}  // namespace sse2::simd
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
SINKKV_TARGET_END

#endif  // SINKKV_VARIANT_SSE2

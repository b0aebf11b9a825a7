// sinkkv::detail::avx512::simd and avx512_bf16::simd: the float vector
// operations of the AVX-512 variants (16 lanes; F/BW/VL/DQ, with F16C and
// FMA), compiled under their target attribute whatever the unit's flags.
#pragma once

#include "simd_common.hpp"

#if SINKKV_VARIANT_AVX512 || SINKKV_VARIANT_AVX512_BF16
#include <immintrin.h>

SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512)
namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace avx512::simd {

using detail::prefetch;

inline constexpr int kLanes = 16;
/// Vector registers the kernel may use as accumulators in one tile.
inline constexpr int kAccumulators = 16;
inline constexpr bool kBfloat16Dot = false;
using Vec = __m512;

// GCC 12.1/12.2 (PR 105593) warns "__Y is used uninitialized" inside most
// unmasked AVX-512 intrinsics (they pass _mm512_undefined_ps() as the merge
// source) wherever they are inlined, which breaks -Werror builds. The
// all-lanes masked forms below name their merge source and compile to the
// same unmasked instructions.
inline constexpr __mmask16 kAllLanes = 0xFFFF;

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
SINKKV_ALWAYS_INLINE Vec zero() { return _mm512_setzero_ps(); }
SINKKV_ALWAYS_INLINE Vec broadcast(float x) { return _mm512_set1_ps(x); }
SINKKV_ALWAYS_INLINE Vec load(const float* p) { return _mm512_loadu_ps(p); }
SINKKV_ALWAYS_INLINE Vec load(const Eigen::half* p) {
  return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), kAllLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
SINKKV_ALWAYS_INLINE Vec load(const Eigen::bfloat16* p) {
  const __m512i none = _mm512_setzero_si512();
  const __m512i wide =
      _mm512_mask_cvtepu16_epi32(none, kAllLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_mask_slli_epi32(none, kAllLanes, wide, 16));
}
SINKKV_ALWAYS_INLINE void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
/// Stores lanes [first, first + count) of v to p[first..first + count).
SINKKV_ALWAYS_INLINE void store_lanes(float* p, Vec v, int first, int count) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>(((1u << count) - 1u) << first), v);
}
SINKKV_ALWAYS_INLINE Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
SINKKV_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
/// max/min lane by lane; where either input is NaN the result is b (x86
/// semantics), so min(limit, x) keeps a NaN x.
SINKKV_ALWAYS_INLINE Vec max(Vec a, Vec b) { return _mm512_mask_max_ps(a, kAllLanes, a, b); }
SINKKV_ALWAYS_INLINE Vec min(Vec a, Vec b) { return _mm512_mask_min_ps(a, kAllLanes, a, b); }
SINKKV_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
template <int kHalf>
SINKKV_ALWAYS_INLINE __m256 half_of(Vec v) {
  return _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, _mm512_castps_pd(v), kHalf));
}
SINKKV_ALWAYS_INLINE float reduce_add(Vec v) {
  const __m256 y = _mm256_add_ps(half_of<0>(v), half_of<1>(v));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
SINKKV_ALWAYS_INLINE float reduce_max(Vec v) {
  const __m256 y = _mm256_max_ps(half_of<0>(v), half_of<1>(v));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

/// The 4 bytes at p (a float, or a pair of bfloat16) in every lane: a
/// broadcast load, which FMAs may take as a memory operand.
SINKKV_ALWAYS_INLINE Vec broadcast_load(const void* p) {
  float x;
  std::memcpy(&x, p, sizeof x);
  return _mm512_set1_ps(x);
}
/// exp of every lane for x <= 88.37; exactly 0 far below kMin (and for
/// -inf); NaN stays NaN (the clamps keep their NaN operand).
SINKKV_ALWAYS_INLINE Vec exp(Vec x) {
  using K = ExpConstants;
  x = max(broadcast(-104.0f), min(broadcast(K::kMax), x));
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

}  // namespace avx512::simd
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
SINKKV_TARGET_END

#if SINKKV_VARIANT_AVX512_BF16
SINKKV_TARGET_BEGIN(SINKKV_TARGET_AVX512_BF16)
namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace avx512_bf16::simd {

// Everything of the AVX-512 variant (inlined here: its target is a subset),
// plus bfloat16 pair dot products.
using namespace avx512::simd;

/// bfloat16 dot products (VDPBF16PS): 32 bfloat16 pairs per instruction.
inline constexpr bool kBfloat16Dot = true;
using BfloatPairs = __m512bh;
using avx512::simd::keep_in_register;
SINKKV_ALWAYS_INLINE BfloatPairs keep_in_register(BfloatPairs v) {
  asm("" : "+v"(v));
  return v;
}
/// 32 bfloat16 values at p (bfloat16 storage, or raw bits).
SINKKV_ALWAYS_INLINE BfloatPairs load_pairs(const void* p) {
  return reinterpret_cast<BfloatPairs>(_mm512_loadu_si512(p));
}
/// The same 64 bytes seen as 32 bfloat16 values.
SINKKV_ALWAYS_INLINE BfloatPairs as_pairs(Vec v) { return reinterpret_cast<BfloatPairs>(v); }
/// acc[i] += a[2i] * b[2i] + a[2i + 1] * b[2i + 1], in float.
SINKKV_ALWAYS_INLINE Vec dot_pairs(Vec acc, BfloatPairs a, BfloatPairs b) { return _mm512_dpbf16_ps(acc, a, b); }
/// 32 floats rounded to nearest-even bfloat16, stored at p as raw bits.
SINKKV_ALWAYS_INLINE void store_rounded_pairs(std::uint16_t* p, Vec low, Vec high) {
  _mm512_storeu_si512(static_cast<void*>(p), reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low)));
}

}  // namespace avx512_bf16::simd
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail
SINKKV_TARGET_END
#endif

#endif  // SINKKV_VARIANT_AVX512 || SINKKV_VARIANT_AVX512_BF16

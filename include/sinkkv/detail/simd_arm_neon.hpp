// sinkkv::detail::neon::simd: the float vector operations of the AArch64
// Advanced SIMD (NEON) variant, 4 lanes. NEON is part of every AArch64 CPU,
// so this variant needs no target attribute and no run-time check.
#pragma once

#include "simd_common.hpp"

#if SINKKV_VARIANT_NEON
#include <arm_neon.h>

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {
namespace neon::simd {

using detail::prefetch;

inline constexpr int kLanes = 4;
inline constexpr int kAccumulators = 16;  // 32 vector registers
inline constexpr bool kBfloat16Dot = false;
using Vec = float32x4_t;

/// Returns v, but makes the compiler hold it in a vector register: a value
/// used by several FMAs is then loaded once instead of being folded into
/// each FMA as a memory operand (which GCC 12 does, doubling the load-port
/// traffic).
SINKKV_ALWAYS_INLINE Vec keep_in_register(Vec v) {
#if defined(__GNUC__) || defined(__clang__)
  asm("" : "+w"(v));
#endif
  return v;
}
SINKKV_ALWAYS_INLINE Vec zero() { return vdupq_n_f32(0.0f); }
SINKKV_ALWAYS_INLINE Vec broadcast(float x) { return vdupq_n_f32(x); }
SINKKV_ALWAYS_INLINE Vec load(const float* p) { return vld1q_f32(p); }
SINKKV_ALWAYS_INLINE Vec load(const Eigen::half* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p))));
}
SINKKV_ALWAYS_INLINE Vec load(const Eigen::bfloat16* p) {
  const uint32x4_t wide = vmovl_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)));
  return vreinterpretq_f32_u32(vshlq_n_u32(wide, 16));
}
SINKKV_ALWAYS_INLINE void store(float* p, Vec v) { vst1q_f32(p, v); }
SINKKV_ALWAYS_INLINE void store_lanes(float* p, Vec v, int first, int count) {
  float lanes[kLanes];
  store(lanes, v);
  for (int i = first; i < first + count; ++i) p[i] = lanes[i];
}
SINKKV_ALWAYS_INLINE Vec add(Vec a, Vec b) { return vaddq_f32(a, b); }
SINKKV_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return vsubq_f32(a, b); }
SINKKV_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return vmulq_f32(a, b); }
/// max/min lane by lane; NaN in either input gives NaN (FMAX/FMIN).
SINKKV_ALWAYS_INLINE Vec max(Vec a, Vec b) { return vmaxq_f32(a, b); }
SINKKV_ALWAYS_INLINE Vec min(Vec a, Vec b) { return vminq_f32(a, b); }
SINKKV_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
SINKKV_ALWAYS_INLINE float reduce_add(Vec v) { return vaddvq_f32(v); }
SINKKV_ALWAYS_INLINE float reduce_max(Vec v) { return vmaxvq_f32(v); }
/// The 4 bytes at p (a float, or a pair of bfloat16) in every lane: a
/// broadcast load, which FMAs may take as a memory operand.
SINKKV_ALWAYS_INLINE Vec broadcast_load(const void* p) {
  float x;
  std::memcpy(&x, p, sizeof x);
  return vdupq_n_f32(x);
}
/// exp of every lane for x <= 88.37; exactly 0 below kMin (and for -inf);
/// NaN stays NaN.
SINKKV_ALWAYS_INLINE Vec exp(Vec x) {
  using K = ExpConstants;
  const uint32x4_t underflow = vcltq_f32(x, broadcast(K::kMin));
  x = max(broadcast(K::kMin), min(broadcast(K::kMax), x));
  const Vec n = vrndnq_f32(vmulq_f32(x, broadcast(K::kLog2e)));
  Vec r = vfmsq_f32(x, n, broadcast(K::kLn2Hi));
  r = vfmsq_f32(r, n, broadcast(K::kLn2Lo));
  Vec p = broadcast(K::kP0);
  p = fma(p, r, broadcast(K::kP1));
  p = fma(p, r, broadcast(K::kP2));
  p = fma(p, r, broadcast(K::kP3));
  p = fma(p, r, broadcast(K::kP4));
  p = fma(p, r, broadcast(K::kP5));
  const Vec y = fma(p, vmulq_f32(r, r), vaddq_f32(r, broadcast(1.0f)));
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  const Vec scaled = vmulq_f32(y, vreinterpretq_f32_s32(bits));
  return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(scaled), underflow));
}
/// Lane k of the result is the sum of the lanes of v[k], k < 4.
SINKKV_ALWAYS_INLINE Vec reduce_lanes(const Vec* v) {
  return vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]));
}

}  // namespace neon::simd
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

#endif  // SINKKV_VARIANT_NEON

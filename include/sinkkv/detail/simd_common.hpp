// sinkkv::detail: helpers every instruction-set variant of the CPU kernel
// shares: prefetch, register pinning, exp() constants, and float/half/
// bfloat16 conversions that call nothing outside sinkkv's tagged namespace.
//
// Why the last point matters: Eigen's half conversion is an inline function
// whose body uses F16C when the including unit is built with -mf16c. Left
// out of line (-O0, or the inliner's choice) it is one symbol for the whole
// program, so a generic unit may run the F16C copy of another unit. The
// conversions here live in the ABI-tagged namespace (see simd_target.hpp)
// and are plain bit arithmetic, correct for every finite value, infinity
// and NaN, on any CPU.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <Eigen/Core>

#include "simd_target.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

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

/// exp and log of a scalar through the C library's functions directly (the
/// std:: overloads are inline wrappers, i.e. shared symbols; see above).
SINKKV_ALWAYS_INLINE float scalar_exp(float x) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_expf(x);
#else
  return std::exp(x);
#endif
}
SINKKV_ALWAYS_INLINE double scalar_exp(double x) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_exp(x);
#else
  return std::exp(x);
#endif
}
SINKKV_ALWAYS_INLINE float scalar_log(float x) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_logf(x);
#else
  return std::log(x);
#endif
}
SINKKV_ALWAYS_INLINE double scalar_log(double x) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_log(x);
#else
  return std::log(x);
#endif
}

SINKKV_ALWAYS_INLINE std::uint32_t float_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}
SINKKV_ALWAYS_INLINE float bits_float(std::uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// IEEE half (binary16) bits to float, exact for every input: the 15 bits
/// below the sign shifted into a float's exponent and mantissa fields and
/// scaled by 2^112 re-biases the exponent (denormal halves become normal
/// floats through the same multiply); exponents that were all ones
/// (infinity, NaN) get the float's all-ones exponent back.
SINKKV_ALWAYS_INLINE float half_bits_to_float(std::uint16_t h) {
  const float magnitude = bits_float(static_cast<std::uint32_t>(h & 0x7FFFu) << 13) * bits_float(0x77800000u);
  std::uint32_t bits = float_bits(magnitude);
  if (magnitude >= bits_float(0x47800000u)) bits |= 0x7F800000u;  // >= 2^16: was infinity or NaN
  return bits_float(bits | (static_cast<std::uint32_t>(h & 0x8000u) << 16));
}

/// A stored element widened to its compute type (float for half and
/// bfloat16, itself otherwise), without calling Eigen.
SINKKV_ALWAYS_INLINE float to_compute(float x) { return x; }
SINKKV_ALWAYS_INLINE double to_compute(double x) { return x; }
SINKKV_ALWAYS_INLINE float to_compute(Eigen::half x) {
  std::uint16_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return half_bits_to_float(bits);
}
SINKKV_ALWAYS_INLINE float to_compute(Eigen::bfloat16 x) {
  std::uint16_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits_float(static_cast<std::uint32_t>(bits) << 16);
}

/// Round-to-nearest-even float to bfloat16 bits (NaN stays NaN).
SINKKV_ALWAYS_INLINE std::uint16_t float_to_bfloat16_bits(float x) {
  const std::uint32_t bits = float_bits(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

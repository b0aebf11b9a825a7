// sinkkv::detail: storage element types and their arithmetic type.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "abi_namespace.hpp"
#include "simd_common.hpp"  // half_bits_to_float, to_compute, float_to_bfloat16_bits

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// What a storage type computes in: half types are stored compactly and
/// widened to float for arithmetic; double stays double.
template <class T>
struct ElementTraits {
  static constexpr bool kSupported = false;
};
template <>
struct ElementTraits<float> {
  static constexpr bool kSupported = true;
  using compute_type = float;
  static constexpr const char* kName = "float";
};
template <>
struct ElementTraits<double> {
  static constexpr bool kSupported = true;
  using compute_type = double;
  static constexpr const char* kName = "double";
};
template <>
struct ElementTraits<Eigen::half> {
  static constexpr bool kSupported = true;
  using compute_type = float;
  static constexpr const char* kName = "half";
};
template <>
struct ElementTraits<Eigen::bfloat16> {
  static constexpr bool kSupported = true;
  using compute_type = float;
  static constexpr const char* kName = "bfloat16";
};

/// Round-to-nearest-even float to IEEE half bits: overflow to infinity,
/// subnormal halves, NaN stays NaN (quieted, top payload bits kept, as F16C
/// does). Plain integer and float arithmetic, so that, unlike Eigen::half's
/// converting constructor (F16C code in a unit built with -mf16c, one symbol
/// program-wide when left out of line), it never runs another unit's
/// instructions (see abi_namespace.hpp).
inline std::uint16_t float_to_half_bits(float x) {
  std::uint32_t magnitude = float_bits(x) & 0x7FFFFFFFu;
  const auto sign = static_cast<std::uint16_t>((float_bits(x) >> 16) & 0x8000u);
  if (magnitude > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: infinity
  if (magnitude < 0x38800000u) {
    // Below 2^-14 the half is subnormal: adding 0.5f lines its last bit up
    // with the float's and lets the FPU round to nearest even.
    const std::uint32_t sum = float_bits(bits_float(magnitude) + 0.5f);
    return static_cast<std::uint16_t>(sign | (sum - 0x3F000000u));
  }
  const std::uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xC8000FFFu + odd;  // re-bias the exponent (-112 << 23), round half to even
  return static_cast<std::uint16_t>(sign | (magnitude >> 13));
}

/// A float rounded to storage type T (float, double, half, bfloat16).
template <class T>
inline T from_float(float value) {
  if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
    const std::uint16_t bits =
        std::is_same_v<T, Eigen::half> ? float_to_half_bits(value) : float_to_bfloat16_bits(value);
    T result;
    std::memcpy(static_cast<void*>(&result), &bits, sizeof bits);
    return result;
  } else {
    return static_cast<T>(value);
  }
}

/// Any supported element (or any arithmetic type) as a double.
template <class T>
inline double to_double(T value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<double>(value);
  } else {
    return static_cast<double>(to_compute(value));
  }
}

/// A double rounded to a storage or compute type (through float for the
/// 16-bit types, as Eigen's constructors round).
template <class T>
inline T from_double(double value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<T>(value);
  } else {
    return from_float<T>(static_cast<float>(value));
  }
}

/// Widens a stored element to the type a kernel computes in.
template <class C, class T>
inline C widen(T value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<C>(value);
  } else {
    return static_cast<C>(to_compute(value));
  }
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

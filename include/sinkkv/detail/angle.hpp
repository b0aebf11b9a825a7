// sinkkv::detail: rotary angles for arbitrarily long streams.
#pragma once

#include <cmath>
#include <cstdint>

#include "abi_namespace.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

// 2*pi split into a double and its rounding remainder (Cody-Waite style), so
// a reduction can subtract k*2*pi with ~106 bits of precision.
inline constexpr double kTwoPiHigh = 6.283185307179586232;
inline constexpr double kTwoPiLow = 2.449293598294706e-16;

/// position * inv_frequency reduced to [-pi, pi].
///
/// Why not std::sin(position * inv_frequency): at position 4e6 the product
/// alone carries an absolute error near 5e-10 rad and grows linearly with the
/// stream; tables sized to a maximum position simply run out. Here the
/// product is formed exactly as a double-double (FMA), and 2*pi is removed in
/// extended precision, so the angle is accurate to a few 1e-16 rad for every
/// position below 2^53.
inline double rotary_angle(std::uint64_t position, double inv_frequency) {
  const double t = static_cast<double>(position);
  const double product = t * inv_frequency;
  const double product_error = std::fma(t, inv_frequency, -product);  // exact remainder
  const double turns = std::nearbyint(product / kTwoPiHigh);
  double angle = std::fma(-turns, kTwoPiHigh, product);  // exact while the result is small
  angle = std::fma(-turns, kTwoPiLow, angle);
  angle += product_error;
  constexpr double kPi = kTwoPiHigh / 2;
  if (angle > kPi) angle -= kTwoPiHigh;
  if (angle < -kPi) angle += kTwoPiHigh;
  return angle;
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

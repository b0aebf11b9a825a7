// Test support: per-element-type tolerances, explained.
#pragma once

#include <Eigen/Core>

namespace sinkkv::testing {

/// |actual - expected| <= atol + rtol * |expected| for attention outputs
/// whose values are drawn from U(-1, 1). The dominant error is the storage
/// rounding of keys and values (unit roundoff u): a score error of about
/// u * |q| |k| / sqrt(d) moves the softmax weights by that much relatively,
/// and the stored values add u. float: u = 6e-8; half: u = 4.9e-4;
/// bfloat16: u = 3.9e-3; double: 1.1e-16 (the float query rounding still
/// applies there only if inputs were float; ours are exact doubles).
template <class T>
struct Tolerance;
template <>
struct Tolerance<double> {
  static constexpr double kAbsolute = 1e-10, kRelative = 1e-10;
};
template <>
struct Tolerance<float> {
  static constexpr double kAbsolute = 2e-5, kRelative = 2e-5;
};
template <>
struct Tolerance<Eigen::half> {
  static constexpr double kAbsolute = 1e-2, kRelative = 1e-2;
};
template <>
struct Tolerance<Eigen::bfloat16> {
  static constexpr double kAbsolute = 6e-2, kRelative = 6e-2;
};

}  // namespace sinkkv::testing

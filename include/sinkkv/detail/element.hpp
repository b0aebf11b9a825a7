// sinkkv::detail: storage element types and their arithmetic type.
#pragma once

#include <type_traits>

#include <Eigen/Core>

namespace sinkkv::detail {

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

/// Any supported element (or any arithmetic type) as a double.
template <class T>
inline double to_double(T value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<double>(value);
  } else {
    return static_cast<double>(static_cast<float>(value));
  }
}

/// A double rounded to a storage or compute type.
template <class T>
inline T from_double(double value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<T>(value);
  } else {
    return T(static_cast<float>(value));
  }
}

/// Widens a stored element to the type a kernel computes in.
template <class C, class T>
inline C widen(T value) {
  if constexpr (std::is_arithmetic_v<T>) {
    return static_cast<C>(value);
  } else {
    return static_cast<C>(static_cast<float>(value));
  }
}

}  // namespace sinkkv::detail

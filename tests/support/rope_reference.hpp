// Test support: RoPE variants written out from their published formulas,
// and rotary angles in extended precision. Shares no code with
// include/sinkkv/rope*.hpp (it reads a RopeScaling's fields, nothing more):
// each scheme is transcribed from its source in its own way (the YaRN
// paper's wavelength / rotation-count terms, Meta's `apply_scaling`
// branches), so a slip in the library shows as a mismatch.
#pragma once

#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <sinkkv/rope_scaling.hpp>

namespace sinkkv::testing {

inline constexpr long double kReferenceTwoPi = 6.283185307179586476925286766559005768394L;
inline constexpr double kReferencePi = 3.141592653589793238462643383279502884;

/// theta_i = theta^(-2i/d) (Su et al., RoFormer), i = 0 .. d/2 - 1.
inline std::vector<double> reference_plain_frequencies(double theta, int rotary_dim) {
  std::vector<double> result;
  for (int i = 0; i < rotary_dim / 2; ++i) result.push_back(1.0 / std::pow(theta, (2.0 * i) / rotary_dim));
  return result;
}

/// Position interpolation: position p is encoded as p / s.
inline std::vector<double> reference_linear_frequencies(double theta, int rotary_dim, double s) {
  std::vector<double> result = reference_plain_frequencies(theta, rotary_dim);
  for (double& f : result) f = f / s;
  return result;
}

/// NTK-aware: base b' = b * s^(|D| / (|D| - 2)).
inline std::vector<double> reference_ntk_aware_frequencies(double theta, int rotary_dim, double s) {
  const double d = rotary_dim;
  return reference_plain_frequencies(theta * std::pow(s, d / (d - 2)), rotary_dim);
}

/// Llama 3.x, as Meta's `apply_scaling` states it: per frequency, its
/// wavelength 2 pi / f against old_context_len / high_freq_factor (keep) and
/// old_context_len / low_freq_factor (divide by the factor), smoothed in
/// between with smooth = (old_context_len / wavelength - low) / (high - low).
inline std::vector<double> reference_llama3_frequencies(double theta, int rotary_dim, double factor, double low,
                                                        double high, double old_context_len) {
  std::vector<double> result;
  for (double f : reference_plain_frequencies(theta, rotary_dim)) {
    const double wavelength = 2 * kReferencePi / f;
    if (wavelength < old_context_len / high) {
      result.push_back(f);
    } else if (wavelength > old_context_len / low) {
      result.push_back(f / factor);
    } else {
      const double smooth = (old_context_len / wavelength - low) / (high - low);
      result.push_back(f * ((1 - smooth) / factor + smooth));
    }
  }
  return result;
}

/// YaRN "NTK-by-parts" (Peng et al. 2023, section 3.2, with the reference
/// implementation's ramp): pair i turns r_i = L / lambda_i times over the
/// original context L, lambda_i = 2 pi theta^(2i/d). Solving r_i = beta gives
/// the pair index i(beta) = d ln(L / (2 pi beta)) / (2 ln theta). Pairs up to
/// i(beta_fast) keep their frequency, pairs from i(beta_slow) are divided by
/// s, linearly in i between; `truncate` widens the ramp to whole pairs
/// (floor / ceil); the ends are clamped to [0, d - 1].
inline std::vector<double> reference_yarn_frequencies(double theta, int rotary_dim, double s, double L,
                                                      double beta_fast, double beta_slow, bool truncate) {
  const double d = rotary_dim;
  const auto index_where_turns = [&](double beta) {
    return d * std::log(L / (2 * kReferencePi * beta)) / (2 * std::log(theta));
  };
  double start = index_where_turns(beta_fast);
  double end = index_where_turns(beta_slow);
  if (truncate) {
    start = std::floor(start);
    end = std::ceil(end);
  }
  if (start < 0) start = 0;
  if (end > d - 1) end = d - 1;
  if (end == start) end += 0.001;
  std::vector<double> result;
  const std::vector<double> plain = reference_plain_frequencies(theta, rotary_dim);
  for (int i = 0; i < rotary_dim / 2; ++i) {
    double gamma = (i - start) / (end - start);  // 0: extrapolate (keep), 1: interpolate (divide by s)
    if (gamma < 0) gamma = 0;
    if (gamma > 1) gamma = 1;
    result.push_back(plain[static_cast<std::size_t>(i)] * (1 - gamma) + plain[static_cast<std::size_t>(i)] / s * gamma);
  }
  return result;
}

/// YaRN's sqrt(1/t) = 0.1 ln(s) + 1, with DeepSeek's coefficient m.
inline double reference_yarn_mscale(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * std::log(s) + 1.0; }

/// The inverse frequencies of a RopeScaling's scheme from the formulas above
/// (reads only the description's parameters), for oracles that must follow
/// whatever variant a configuration names.
inline std::vector<double> reference_frequencies(const RopeScaling& scaling, double theta, int rotary_dim) {
  switch (scaling.kind) {
    case RopeScaling::Kind::kNone:
      return reference_plain_frequencies(theta, rotary_dim);
    case RopeScaling::Kind::kLinear:
      return reference_linear_frequencies(theta, rotary_dim, scaling.factor);
    case RopeScaling::Kind::kNtkAware:
      return rotary_dim == 2 ? std::vector<double>{1.0}
                             : reference_ntk_aware_frequencies(theta, rotary_dim, scaling.factor);
    case RopeScaling::Kind::kLlama3:
      return reference_llama3_frequencies(theta, rotary_dim, scaling.factor, scaling.low_freq_factor,
                                          scaling.high_freq_factor, scaling.original_max_positions);
    case RopeScaling::Kind::kYarn:
      return reference_yarn_frequencies(theta, rotary_dim, scaling.factor, scaling.original_max_positions,
                                        scaling.beta_fast, scaling.beta_slow, scaling.truncate);
    case RopeScaling::Kind::kExplicit:
      return scaling.explicit_inv_frequencies;
  }
  return {};
}

/// The factor each rotated coordinate is multiplied by: the override, else
/// YaRN's (Hugging Face's rule for mscale / mscale_all_dim), else 1.
inline double reference_attention_factor(const RopeScaling& scaling) {
  if (scaling.attention_factor) return *scaling.attention_factor;
  if (scaling.kind != RopeScaling::Kind::kYarn) return 1.0;
  if (scaling.mscale != 0 && scaling.mscale_all_dim != 0) {
    return reference_yarn_mscale(scaling.factor, scaling.mscale) /
           reference_yarn_mscale(scaling.factor, scaling.mscale_all_dim);
  }
  return reference_yarn_mscale(scaling.factor, 1.0);
}

/// position * f reduced to (-pi, pi], in long double with every step exact
/// but the last few roundings (~1e-18 rad), for positions below 2^34. The
/// product is split so that each part is exact in a 64-bit mantissa, and
/// 2 pi is removed in four pieces (three of 30 bits: k * piece is exact).
/// Needs long double with at least 64 mantissa bits (x86-64, arm64 Linux).
inline long double reference_angle(std::uint64_t position, double f) {
  assert(position < (std::uint64_t{1} << 34));
  int exponent = 0;
  const double mantissa = std::frexp(f, &exponent);
  const double f_high = std::ldexp(std::floor(std::ldexp(mantissa, 26)), exponent - 26);
  const double f_low = f - f_high;  // exact: the remaining 27 bits
  const long double p = static_cast<long double>(position);
  const long double x_high = p * f_high;  // 34 + 26 bits: exact
  const long double x_low = p * f_low;    // 34 + 27 bits: exact
  constexpr long double kPiece1 = 0x1.921fb54p+2L;
  constexpr long double kPiece2 = 0x1.10b46118p-28L;
  constexpr long double kPiece3 = 0x1.313198ap-59L;
  constexpr long double kPiece4 = 0x1.701b839a25205p-90L;
  const long double turns = std::nearbyint((x_high + x_low) / kReferenceTwoPi);
  long double angle = x_high - turns * kPiece1;  // exact (both multiples of a fine quantum, close together)
  angle += x_low;
  angle -= turns * kPiece2;
  angle -= turns * kPiece3;
  angle -= turns * kPiece4;
  if (angle > kReferenceTwoPi / 2) angle -= kReferenceTwoPi;
  if (angle <= -kReferenceTwoPi / 2) angle += kReferenceTwoPi;
  return angle;
}

inline bool long_double_has_64_bit_mantissa() { return std::numeric_limits<long double>::digits >= 64; }

/// Distance between two angles on the circle.
inline double angle_distance(long double a, long double b) {
  return static_cast<double>(std::fabs(std::remainder(a - b, kReferenceTwoPi)));
}

}  // namespace sinkkv::testing

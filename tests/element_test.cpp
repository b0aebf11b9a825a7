// detail/element.hpp: sinkkv's own float <-> half / bfloat16 conversions
// (which replaced Eigen's, whose F16C copy could be shared with a generic
// unit: issue 12, finding 2) against round-to-nearest-even computed exactly
// in double.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include <gtest/gtest.h>

#include <sinkkv/detail/element.hpp>

namespace sinkkv::detail {
namespace {

template <class T>
std::uint16_t bits_of(T value) {
  std::uint16_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

/// The value of IEEE half bits, decoded field by field.
double half_value(std::uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0x1F) return mantissa == 0 ? sign * INFINITY : NAN;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

/// |x| rounded to `bits` significant bits, to nearest even, with the
/// smallest exponent `min_exponent` (subnormals below it); infinity above
/// `largest` plus half its last place.
double round_magnitude(float x, int bits, int min_exponent, double largest) {
  const double magnitude = std::fabs(static_cast<double>(x));
  if (magnitude == 0.0) return 0.0;
  int exponent;
  std::frexp(magnitude, &exponent);  // magnitude in [2^(exponent-1), 2^exponent)
  const double place = std::ldexp(1.0, std::max(exponent - 1, min_exponent) - (bits - 1));
  const double rounded = std::nearbyint(magnitude / place) * place;  // exact: |x| has 24 bits
  return rounded > largest ? INFINITY : rounded;
}

/// Float bit patterns: a stride through all of them, plus every value near
/// a half's rounding boundary (each half, each midpoint, one float either side).
std::vector<float> sample_floats() {
  std::vector<float> xs;
  for (std::uint64_t u = 0; u <= 0xFFFFFFFFull; u += 4099) {
    float x;
    const auto bits = static_cast<std::uint32_t>(u);
    std::memcpy(&x, &bits, sizeof x);
    xs.push_back(x);
  }
  for (std::uint32_t h = 0; h < 0x7C00; ++h) {
    for (double point : {half_value(static_cast<std::uint16_t>(h)),
                         (half_value(static_cast<std::uint16_t>(h)) + half_value(static_cast<std::uint16_t>(h + 1))) / 2}) {
      const auto x = static_cast<float>(point);
      for (float y : {x, std::nextafter(x, 0.0f), std::nextafter(x, INFINITY)}) {
        xs.push_back(y);
        xs.push_back(-y);
      }
    }
  }
  return xs;
}

TEST(ElementConversion, FloatToHalfRoundsToNearestEven) {
  for (float x : sample_floats()) {
    const std::uint16_t got = bits_of(from_float<Eigen::half>(x));
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(half_value(got))) << x;
      continue;
    }
    const double want = round_magnitude(x, 11, -14, 65504.0);
    ASSERT_EQ(half_value(got), std::signbit(x) ? -want : want) << "x = " << x << ", got bits " << got;
    ASSERT_EQ(std::signbit(half_value(got)), std::signbit(x)) << x;
  }
}

TEST(ElementConversion, FloatToBfloat16RoundsToNearestEven) {
  const double largest = std::ldexp(255.0, 120);  // 0x7F7F
  for (float x : sample_floats()) {
    const std::uint16_t got = bits_of(from_float<Eigen::bfloat16>(x));
    float value;
    const std::uint32_t widened = static_cast<std::uint32_t>(got) << 16;
    std::memcpy(&value, &widened, sizeof value);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(value)) << x;
      continue;
    }
    const double want = round_magnitude(x, 8, -126, largest);
    ASSERT_EQ(static_cast<double>(value), std::signbit(x) ? -want : want) << "x = " << x;
  }
}

TEST(ElementConversion, EveryHalfWidensExactlyAndRoundTrips) {
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    Eigen::half half;
    std::memcpy(static_cast<void*>(&half), &bits, sizeof bits);
    const double want = half_value(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(to_double(half))) << h;
      continue;
    }
    ASSERT_EQ(to_double(half), want) << h;
    ASSERT_EQ(widen<float>(half), static_cast<float>(want)) << h;
    ASSERT_EQ(bits_of(from_double<Eigen::half>(want)), bits) << h;
  }
}

}  // namespace
}  // namespace sinkkv::detail

// ALiBi slopes against the values published with the method.
#include <cmath>

#include <gtest/gtest.h>

#include <sinkkv/alibi.hpp>

namespace sinkkv {
namespace {

TEST(AlibiSlopes, PowerOfTwoHeadsGetGeometricSequence) {
  const std::vector<double> slopes = alibi_slopes(8);
  ASSERT_EQ(slopes.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(slopes[i], 1.0 / std::pow(2.0, i + 1)) << "head " << i;
}

TEST(AlibiSlopes, OtherHeadCountsInterleaveTheNextPowerOfTwo) {
  // 12 heads: the 8 slopes of 8 heads, then slopes 1, 3, 5, 7 (0-based odd
  // ones) of 16 heads: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const std::vector<double> slopes = alibi_slopes(12);
  ASSERT_EQ(slopes.size(), 12u);
  EXPECT_DOUBLE_EQ(slopes[7], 1.0 / 256);
  EXPECT_DOUBLE_EQ(slopes[8], std::pow(2.0, -0.5));
  EXPECT_DOUBLE_EQ(slopes[11], std::pow(2.0, -3.5));
}

TEST(AlibiSlopes, ZeroHeadsIsAnError) { EXPECT_THROW(alibi_slopes(0), Error); }

}  // namespace
}  // namespace sinkkv

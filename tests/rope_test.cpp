// RoPE: angles exact for long streams, both pair layouts, partial rotary.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/rope.hpp>

#include "support/oracle.hpp"

namespace sinkkv {
namespace {

// Independent reference angle: long double (64-bit mantissa on x86-64)
// product and reduction, good to ~1e-19 * position.
long double reference_angle(std::uint64_t position, double inv_frequency) {
  const long double two_pi = 6.283185307179586476925286766559L;
  long double angle = std::fmod(static_cast<long double>(position) * inv_frequency, two_pi);
  if (angle > two_pi / 2) angle -= two_pi;
  return angle;
}

TEST(RotaryAngle, MatchesExtendedPrecisionFarIntoTheStream) {
  const std::uint64_t positions[] = {0, 1, 4095, 4'000'000, 5'000'003, (std::uint64_t{1} << 32) + 17,
                                     1'000'000'000'000ULL};
  for (double inv_frequency : {1.0, 0.75, 1e-4, 3.1e-7}) {
    for (std::uint64_t position : positions) {
      const double angle = detail::rotary_angle(position, inv_frequency);
      const long double want = reference_angle(position, inv_frequency);
      // Angles wrap at +-pi: compare on the circle.
      const double difference = std::remainder(static_cast<double>(static_cast<long double>(angle) - want), 2 * M_PI);
      EXPECT_LE(std::abs(difference), 4e-16 + 2e-19 * static_cast<double>(position))
          << "position " << position << " inv_frequency " << inv_frequency;
    }
  }
}

TEST(Rope, AdjacentPairsRotateCoordinates2iAnd2iPlus1) {
  const Rope rope({10000.0, 0, RopeLayout::kAdjacentPairs}, 8);
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_position(rotation, 3);
  const std::vector<double> row = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<double> out(8);
  rope.rotate(rotation, [&](int d) { return row[d]; }, out.data());
  const std::vector<double> want = testing::oracle_rotate(row, 3, {10000.0, 0, RopeLayout::kAdjacentPairs});
  for (int d = 0; d < 8; ++d) EXPECT_NEAR(out[d], want[d], 1e-12) << "dim " << d;
  EXPECT_NEAR(out[0], 1 * std::cos(3.0) - 2 * std::sin(3.0), 1e-12);  // pair 0 turns by 3 rad
}

TEST(Rope, SplitHalvesRotateCoordinatesIAndIPlusHalf) {
  const Rope rope({10000.0, 0, RopeLayout::kSplitHalves}, 8);
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_position(rotation, 5);
  const std::vector<double> row = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<double> out(8);
  rope.rotate(rotation, [&](int d) { return row[d]; }, out.data());
  EXPECT_NEAR(out[0], 1 * std::cos(5.0) - 5 * std::sin(5.0), 1e-12);
  EXPECT_NEAR(out[4], 1 * std::sin(5.0) + 5 * std::cos(5.0), 1e-12);
}

TEST(Rope, PartialRotaryLeavesTrailingDimensionsUnchanged) {
  const Rope rope({10000.0, 4, RopeLayout::kSplitHalves}, 8);
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_position(rotation, 9);
  const std::vector<double> row = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<double> out(8);
  rope.rotate(rotation, [&](int d) { return row[d]; }, out.data());
  const std::vector<double> want = testing::oracle_rotate(row, 9, {10000.0, 4, RopeLayout::kSplitHalves});
  for (int d = 0; d < 8; ++d) EXPECT_NEAR(out[d], want[d], 1e-12) << "dim " << d;
  for (int d = 4; d < 8; ++d) EXPECT_EQ(out[d], row[d]);
}

TEST(Rope, ScoresDependOnlyOnDistanceEvenMillionsOfTokensIn) {
  // q rotated to a stream index and k to another give the same dot product
  // as both rotated to small cache positions the same distance apart.
  const Rope rope({10000.0, 0, RopeLayout::kAdjacentPairs}, 16);
  std::vector<double> q(16), k(16);
  for (int d = 0; d < 16; ++d) {
    q[d] = std::sin(1.0 + d);
    k[d] = std::cos(2.0 * d);
  }
  auto rotated_dot = [&](std::uint64_t query_position, std::uint64_t key_position) {
    Rope::Rotation rq = rope.make_rotation(), rk = rope.make_rotation();
    rope.set_position(rq, query_position);
    rope.set_position(rk, key_position);
    std::vector<double> a(16), b(16);
    rope.rotate(rq, [&](int d) { return q[d]; }, a.data());
    rope.rotate(rk, [&](int d) { return k[d]; }, b.data());
    double dot = 0;
    for (int d = 0; d < 16; ++d) dot += a[d] * b[d];
    return dot;
  };
  const double near_origin = rotated_dot(37, 4);
  EXPECT_NEAR(rotated_dot(4'000'037, 4'000'004), near_origin, 1e-12);
  EXPECT_NEAR(rotated_dot((std::uint64_t{1} << 33) + 33, std::uint64_t{1} << 33), near_origin, 1e-11);
}

TEST(Rope, OddOrOversizedRotaryDimensionIsRejected) {
  EXPECT_THROW(Rope({10000.0, 0, RopeLayout::kAdjacentPairs}, 7), Error);
  EXPECT_THROW(Rope({10000.0, 10, RopeLayout::kAdjacentPairs}, 8), Error);
  EXPECT_THROW(Rope({1.0, 0, RopeLayout::kAdjacentPairs}, 8), Error);
}

// Issue 12, finding 8: theta = inf gave inverse frequencies 1, 0, 0, ...
// (pair 0 turning, every other pair frozen) without a word.
TEST(Rope, InfiniteThetaIsRejected) {
  EXPECT_THROW(Rope({std::numeric_limits<double>::infinity(), 0, RopeLayout::kAdjacentPairs}, 8), Error);
}

}  // namespace
}  // namespace sinkkv

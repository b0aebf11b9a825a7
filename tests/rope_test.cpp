// RoPE: angles exact for long streams, both pair layouts, partial rotary.
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/rope.hpp>

#include "support/oracle.hpp"
#include "support/rope_reference.hpp"

namespace sinkkv {
namespace {

// The one place that says how a Rope gets a variant's scaling.
Rope scaled_rope(double theta, int rotary_dim, RopeLayout layout, int head_dim, const RopeScaling& scaling) {
  return Rope({theta, rotary_dim, layout, scaling}, head_dim);
}

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

TEST(Rope, NanThetaIsRejected) {
  EXPECT_THROW(Rope({std::numeric_limits<double>::quiet_NaN(), 0, RopeLayout::kAdjacentPairs}, 8), Error);
}

TEST(Rope, InvalidScalingIsRejected) {
  EXPECT_THROW(scaled_rope(10000.0, 0, RopeLayout::kAdjacentPairs, 8,
                           RopeScaling::linear(std::numeric_limits<double>::quiet_NaN())),
               Error);
}

// ---- every variant: frequencies, angles far into the stream, rotation ----

struct Variant {
  std::string name;
  double theta;
  int head_dim;
  RopeScaling scaling;
  std::vector<double> expected_frequencies;  // from tests/support/rope_reference.hpp
  double expected_attention_factor;
};

void PrintTo(const Variant& variant, std::ostream* out) { *out << variant.name; }

RopeScaling untruncated(RopeScaling scaling) {
  scaling.truncate = false;
  return scaling;
}

std::vector<Variant> variants() {
  return {
      {"Llama2", 10000.0, 128, RopeScaling::none(), testing::reference_plain_frequencies(10000.0, 128), 1.0},
      {"Qwen2", 1e6, 128, RopeScaling::none(), testing::reference_plain_frequencies(1e6, 128), 1.0},
      {"Linear4", 10000.0, 128, RopeScaling::linear(4.0), testing::reference_linear_frequencies(10000.0, 128, 4.0),
       1.0},
      {"NtkAware8", 10000.0, 64, RopeScaling::ntk_aware(8.0),
       testing::reference_ntk_aware_frequencies(10000.0, 64, 8.0), 1.0},
      {"Llama31", 500000.0, 128, RopeScaling::llama3(),
       testing::reference_llama3_frequencies(500000.0, 128, 8.0, 1.0, 4.0, 8192.0), 1.0},
      {"Llama32", 500000.0, 64, RopeScaling::llama3(32.0),
       testing::reference_llama3_frequencies(500000.0, 64, 32.0, 1.0, 4.0, 8192.0), 1.0},
      {"YarnQwen25", 1e6, 128, RopeScaling::yarn(4.0, 32768.0),
       testing::reference_yarn_frequencies(1e6, 128, 4.0, 32768.0, 32.0, 1.0, true),
       testing::reference_yarn_mscale(4.0, 1.0)},
      {"YarnGptOss", 150000.0, 64, untruncated(RopeScaling::yarn(32.0, 4096.0)),
       testing::reference_yarn_frequencies(150000.0, 64, 32.0, 4096.0, 32.0, 1.0, false),
       testing::reference_yarn_mscale(32.0, 1.0)},
      {"Explicit", 10000.0, 8, RopeScaling::explicit_frequencies({1.0, 0.3, 7e-5, 0.0}, 1.2),
       {1.0, 0.3, 7e-5, 0.0}, 1.2},
  };
}

class RopeVariant : public ::testing::TestWithParam<Variant> {
 protected:
  Rope rope() const {
    return scaled_rope(GetParam().theta, 0, RopeLayout::kAdjacentPairs, GetParam().head_dim, GetParam().scaling);
  }
};

// Positions far past any table, up to the 1e9 tokens of a long-running stream.
const std::uint64_t kFarPositions[] = {0,         1,          4095,        10'000,        100'000,      1'000'000,
                                       4'000'000, 16'777'217, 100'000'000, 1'000'000'000, (std::uint64_t{1} << 33) + 5};

TEST_P(RopeVariant, FrequenciesFollowThePublishedFormula) {
  const Rope r = rope();
  ASSERT_EQ(r.num_pairs(), static_cast<int>(GetParam().expected_frequencies.size()));
  for (int pair = 0; pair < r.num_pairs(); ++pair) {
    const double want = GetParam().expected_frequencies[static_cast<std::size_t>(pair)];
    EXPECT_NEAR(r.inv_frequency(pair), want, 1e-14 * want) << "pair " << pair;
  }
}

TEST_P(RopeVariant, AttentionFactorFollowsThePublishedFormula) {
  EXPECT_NEAR(rope().attention_factor(), GetParam().expected_attention_factor, 1e-15);
}

// cos and sin of every pair's angle against an extended-precision reduction
// of position * inv_frequency: naive double would be off by up to 6e-8 rad
// at 1e9 tokens.
TEST_P(RopeVariant, AnglesStayExactUpTo1e9Tokens) {
  if (!testing::long_double_has_64_bit_mantissa()) GTEST_SKIP() << "long double is not extended precision here";
  const Rope r = rope();
  Rope::Rotation rotation = r.make_rotation();
  for (std::uint64_t position : kFarPositions) {
    r.set_position(rotation, position);
    for (int pair = 0; pair < r.num_pairs(); ++pair) {
      const long double angle = testing::reference_angle(position, r.inv_frequency(pair));
      EXPECT_NEAR(rotation.cos(pair), static_cast<double>(std::cos(angle)), 1e-15)
          << "position " << position << " pair " << pair;
      EXPECT_NEAR(rotation.sin(pair), static_cast<double>(std::sin(angle)), 1e-15)
          << "position " << position << " pair " << pair;
    }
  }
}

TEST_P(RopeVariant, RotatedRowIsTheFormulaTimesTheAttentionFactor) {
  if (!testing::long_double_has_64_bit_mantissa()) GTEST_SKIP() << "long double is not extended precision here";
  const Rope r = rope();
  const int dim = GetParam().head_dim;
  std::vector<double> row(static_cast<std::size_t>(dim)), out(row.size());
  for (int d = 0; d < dim; ++d) row[static_cast<std::size_t>(d)] = std::sin(0.7 * d + 0.3);
  Rope::Rotation rotation = r.make_rotation();
  for (std::uint64_t position : {std::uint64_t{7}, std::uint64_t{1'000'003}, std::uint64_t{999'999'937}}) {
    r.set_position(rotation, position);
    r.rotate(rotation, [&](int d) { return row[static_cast<std::size_t>(d)]; }, out.data());
    for (int i = 0; i < dim / 2; ++i) {
      // The Rope's own frequencies (checked above): a frequency one ulp
      // off moves the angle by 1e-7 rad at 1e9 tokens.
      const long double angle = testing::reference_angle(position, r.inv_frequency(i));
      const long double x = row[static_cast<std::size_t>(2 * i)], y = row[static_cast<std::size_t>(2 * i + 1)];
      const long double m = GetParam().expected_attention_factor;
      EXPECT_NEAR(out[static_cast<std::size_t>(2 * i)],
                  static_cast<double>(m * (x * std::cos(angle) - y * std::sin(angle))), 1e-13)
          << "position " << position << " pair " << i;
      EXPECT_NEAR(out[static_cast<std::size_t>(2 * i + 1)],
                  static_cast<double>(m * (x * std::sin(angle) + y * std::cos(angle))), 1e-13)
          << "position " << position << " pair " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, RopeVariant, ::testing::ValuesIn(variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

// ---- the attention factor ----

// YaRN with partial rotary: the factor multiplies the rotated coordinates
// only (Hugging Face multiplies cos and sin; the pass-through half is
// concatenated as is).
TEST(Rope, AttentionFactorScalesRotatedCoordinatesOnly) {
  const RopeScaling yarn = RopeScaling::yarn(4.0, 32768.0);
  const Rope rope = scaled_rope(1e6, 8, RopeLayout::kSplitHalves, 16, yarn);
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_position(rotation, 0);  // angle 0: only the factor remains
  std::vector<double> row(16), out(16);
  for (int d = 0; d < 16; ++d) row[static_cast<std::size_t>(d)] = 1.0 + d;
  rope.rotate(rotation, [&](int d) { return row[static_cast<std::size_t>(d)]; }, out.data());
  const double factor = 0.1 * std::log(4.0) + 1;
  for (std::size_t d = 0; d < 8; ++d) EXPECT_NEAR(out[d], factor * row[d], 1e-14) << "dim " << d;
  for (std::size_t d = 8; d < 16; ++d) EXPECT_EQ(out[d], row[d]) << "dim " << d;
}

// Applied once to q and once to k, the factor scales every rotated score by
// its square (YaRN's 1/t = (0.1 ln s + 1)^2 on the logits).
TEST(Rope, AttentionFactorScalesScoresByItsSquare) {
  const RopeScaling yarn = RopeScaling::yarn(8.0, 4096.0);
  const Rope scaled = scaled_rope(10000.0, 0, RopeLayout::kAdjacentPairs, 32, yarn);
  std::vector<double> frequencies;
  for (int pair = 0; pair < scaled.num_pairs(); ++pair) frequencies.push_back(scaled.inv_frequency(pair));
  const Rope unscaled =
      scaled_rope(10000.0, 0, RopeLayout::kAdjacentPairs, 32, RopeScaling::explicit_frequencies(frequencies));
  std::vector<double> q(32), k(32);
  for (int d = 0; d < 32; ++d) {
    q[static_cast<std::size_t>(d)] = std::cos(0.3 * d);
    k[static_cast<std::size_t>(d)] = std::sin(1.0 + 0.5 * d);
  }
  const auto score = [&](const Rope& r) {
    Rope::Rotation rq = r.make_rotation(), rk = r.make_rotation();
    r.set_position(rq, 5'000'017);
    r.set_position(rk, 5'000'000);
    std::vector<double> a(32), b(32);
    r.rotate(rq, [&](int d) { return q[static_cast<std::size_t>(d)]; }, a.data());
    r.rotate(rk, [&](int d) { return k[static_cast<std::size_t>(d)]; }, b.data());
    double dot = 0;
    for (int d = 0; d < 32; ++d) dot += a[static_cast<std::size_t>(d)] * b[static_cast<std::size_t>(d)];
    return dot;
  };
  const double factor = 0.1 * std::log(8.0) + 1;
  EXPECT_NEAR(score(scaled), factor * factor * score(unscaled), 1e-12);
}

// ---- turning an already rotated row by a difference of positions ----

std::vector<double> rotated_to(const Rope& rope, const std::vector<double>& row, std::uint64_t position) {
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_position(rotation, position);
  std::vector<double> out(row.size());
  rope.rotate(rotation, [&](int d) { return row[static_cast<std::size_t>(d)]; }, out.data());
  return out;
}

std::vector<double> turned_by(const Rope& rope, const std::vector<double>& row, std::int64_t difference) {
  Rope::Rotation rotation = rope.make_rotation();
  rope.set_difference(rotation, difference);
  std::vector<double> out(row.size());
  rope.rotate(rotation, [&](int d) { return row[static_cast<std::size_t>(d)]; }, out.data());
  return out;
}

std::vector<double> test_row(int dim) {
  std::vector<double> row(static_cast<std::size_t>(dim));
  for (int d = 0; d < dim; ++d) row[static_cast<std::size_t>(d)] = std::cos(1.3 * d) + 0.25;
  return row;
}

void expect_rows_near(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t d = 0; d < actual.size(); ++d) EXPECT_NEAR(actual[d], expected[d], tolerance) << "dim " << d;
}

// The sink-frame query of an engine that rotates its own queries: encoded at
// stream index a (billions in), turned by cache position b - a (negative).
TEST(Rope, TurningBackByTheDifferenceEqualsRotatingToTheSmallPosition) {
  const Rope rope = scaled_rope(500000.0, 0, RopeLayout::kSplitHalves, 128, RopeScaling::llama3());
  const std::vector<double> row = test_row(128);
  const std::uint64_t a = 4'000'000'123, b = 1'027;
  const std::int64_t difference = static_cast<std::int64_t>(b) - static_cast<std::int64_t>(a);
  expect_rows_near(turned_by(rope, rotated_to(rope, row, a), difference), rotated_to(rope, row, b), 1e-12);
}

TEST(Rope, TurningForwardByTheDifferenceEqualsRotatingToTheLargePosition) {
  const Rope rope({10000.0, 0, RopeLayout::kAdjacentPairs}, 64);
  const std::vector<double> row = test_row(64);
  const std::uint64_t a = 1'000'000'007, b = (std::uint64_t{1} << 40) + 3;
  expect_rows_near(turned_by(rope, rotated_to(rope, row, a), static_cast<std::int64_t>(b - a)),
                   rotated_to(rope, row, b), 1e-12);
}

// A turn carries no attention factor: the row keeps the one it was encoded
// with, exactly once.
TEST(Rope, TurningKeepsTheAttentionFactorAppliedOnce) {
  const Rope rope = scaled_rope(1e6, 0, RopeLayout::kSplitHalves, 128, RopeScaling::yarn(4.0, 32768.0));
  const std::vector<double> row = test_row(128);
  const std::uint64_t a = 2'500'000'001, b = 3;
  const std::int64_t difference = static_cast<std::int64_t>(b) - static_cast<std::int64_t>(a);
  expect_rows_near(turned_by(rope, rotated_to(rope, row, a), difference), rotated_to(rope, row, b), 1e-12);
}

TEST(Rope, TurningByZeroLeavesTheRow) {
  const Rope rope = scaled_rope(10000.0, 32, RopeLayout::kAdjacentPairs, 64, RopeScaling::yarn(4.0, 4096.0));
  const std::vector<double> row = test_row(64);
  EXPECT_EQ(turned_by(rope, row, 0), row);
}

// Pairs turned by -d and +d undo each other.
TEST(Rope, TurningBackAndForthRestoresTheRow) {
  const Rope rope({10000.0, 0, RopeLayout::kAdjacentPairs}, 64);
  const std::vector<double> row = test_row(64);
  const std::int64_t difference = -7'777'777'777;
  expect_rows_near(turned_by(rope, turned_by(rope, row, difference), -difference), row, 1e-14);
}

}  // namespace
}  // namespace sinkkv

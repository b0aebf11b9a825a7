// RopeScaling: each variant's inverse frequencies and attention factor
// against its published formula (tests/support/rope_reference.hpp), and a
// clear error for every bad parameter.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/rope_scaling.hpp>

#include "support/rope_reference.hpp"

namespace sinkkv {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
const int kHeadDims[] = {2, 16, 64, 80, 96, 128, 256};

// Both are double computations of the same formula in a different order: a
// few ulps apart.
void expect_frequencies_near(const std::vector<double>& actual, const std::vector<double>& expected,
                             const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-14 * expected[i]) << what << ", pair " << i;
  }
}

// The error is thrown and its message carries `needle` (the bad value or
// the parameter's name).
void expect_error_naming(const std::function<void()>& action, const std::string& needle) {
  try {
    action();
    ADD_FAILURE() << "no sinkkv::Error; expected one naming '" << needle << "'";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
        << "message '" << error.what() << "' does not name '" << needle << "'";
  }
}

TEST(RopeScaling, NoneGivesThetaToTheMinus2iOverD) {
  for (int d : kHeadDims) {
    for (double theta : {10000.0, 500000.0, 1e6}) {
      expect_frequencies_near(RopeScaling::none().inv_frequencies(theta, d),
                              testing::reference_plain_frequencies(theta, d),
                              "d " + std::to_string(d) + " theta " + std::to_string(theta));
    }
  }
}

TEST(RopeScaling, NoneKeepsTheAttentionFactorAtOne) {
  EXPECT_EQ(RopeScaling::none().effective_attention_factor(), 1.0);
}

TEST(RopeScaling, LinearDividesEveryFrequencyByTheFactor) {
  for (int d : kHeadDims) {
    expect_frequencies_near(RopeScaling::linear(4.0).inv_frequencies(10000.0, d),
                            testing::reference_linear_frequencies(10000.0, d, 4.0), "d " + std::to_string(d));
  }
}

TEST(RopeScaling, NtkAwareMatchesTheScaledBase) {
  for (int d : kHeadDims) {
    if (d == 2) continue;  // d / (d - 2) is undefined; see the next test
    expect_frequencies_near(RopeScaling::ntk_aware(8.0).inv_frequencies(10000.0, d),
                            testing::reference_ntk_aware_frequencies(10000.0, d, 8.0), "d " + std::to_string(d));
  }
}

TEST(RopeScaling, NtkAwareWithOnePairKeepsFrequencyOne) {
  EXPECT_EQ(RopeScaling::ntk_aware(8.0).inv_frequencies(10000.0, 2), std::vector<double>{1.0});
}

// The design goal NTK-aware scaling is derived from: the highest frequency
// is kept and the lowest one is interpolated by exactly the factor.
TEST(RopeScaling, NtkAwareKeepsTheHighestAndInterpolatesTheLowestFrequencyByTheFactor) {
  const int d = 128;
  const std::vector<double> scaled = RopeScaling::ntk_aware(16.0).inv_frequencies(10000.0, d);
  const std::vector<double> plain = testing::reference_plain_frequencies(10000.0, d);
  EXPECT_EQ(scaled.front(), 1.0);
  // Pair d/2 - 1 is scaled by s^(-(d-2)/(d-2)) = 1/s.
  EXPECT_NEAR(scaled.back(), plain.back() / 16.0, 1e-14 * plain.back());
}

TEST(RopeScaling, Llama3MatchesMetasApplyScaling) {
  for (int d : kHeadDims) {
    for (double theta : {10000.0, 500000.0}) {
      expect_frequencies_near(RopeScaling::llama3(8.0, 1.0, 4.0, 8192.0).inv_frequencies(theta, d),
                              testing::reference_llama3_frequencies(theta, d, 8.0, 1.0, 4.0, 8192.0),
                              "d " + std::to_string(d) + " theta " + std::to_string(theta));
    }
  }
}

TEST(RopeScaling, Llama32FactorAndOtherBandsMatchMetasApplyScaling) {
  expect_frequencies_near(RopeScaling::llama3(32.0, 2.0, 6.0, 4096.0).inv_frequencies(500000.0, 64),
                          testing::reference_llama3_frequencies(500000.0, 64, 32.0, 2.0, 6.0, 4096.0), "");
}

// Llama 3.1 8B (head_dim 128, theta 500000): counted by hand from the rule
// (wavelength below 2048 kept, above 8192 divided by 8): pairs 0-28 kept,
// 29-34 blended, 35-63 divided.
TEST(RopeScaling, Llama31DefaultsKeep29PairsBlend6AndInterpolate29) {
  const std::vector<double> scaled = RopeScaling::llama3().inv_frequencies(500000.0, 128);
  const std::vector<double> plain = testing::reference_plain_frequencies(500000.0, 128);
  for (int i = 0; i < 64; ++i) {
    const double ratio = scaled[static_cast<std::size_t>(i)] / plain[static_cast<std::size_t>(i)];
    if (i <= 28) {
      EXPECT_NEAR(ratio, 1.0, 1e-14) << "pair " << i;
    } else if (i <= 34) {
      EXPECT_GT(ratio, 1.0 / 8) << "pair " << i;
      EXPECT_LT(ratio, 1.0) << "pair " << i;
    } else {
      EXPECT_NEAR(ratio, 1.0 / 8, 1e-14) << "pair " << i;
    }
  }
}

TEST(RopeScaling, Llama3KeepsTheAttentionFactorAtOne) {
  EXPECT_EQ(RopeScaling::llama3().effective_attention_factor(), 1.0);
}

TEST(RopeScaling, YarnMatchesThePaperWithTruncatedRamp) {
  for (int d : kHeadDims) {
    for (double theta : {10000.0, 1e6}) {
      expect_frequencies_near(RopeScaling::yarn(4.0, 32768.0).inv_frequencies(theta, d),
                              testing::reference_yarn_frequencies(theta, d, 4.0, 32768.0, 32.0, 1.0, true),
                              "d " + std::to_string(d) + " theta " + std::to_string(theta));
    }
  }
}

TEST(RopeScaling, YarnMatchesThePaperWithUntruncatedRamp) {
  RopeScaling gpt_oss = RopeScaling::yarn(32.0, 4096.0);
  gpt_oss.truncate = false;
  for (int d : kHeadDims) {
    expect_frequencies_near(gpt_oss.inv_frequencies(150000.0, d),
                            testing::reference_yarn_frequencies(150000.0, d, 32.0, 4096.0, 32.0, 1.0, false),
                            "d " + std::to_string(d));
  }
}

TEST(RopeScaling, YarnWithOtherBetasMatchesThePaper) {
  expect_frequencies_near(RopeScaling::yarn(16.0, 2048.0, 64.0, 2.0).inv_frequencies(10000.0, 128),
                          testing::reference_yarn_frequencies(10000.0, 128, 16.0, 2048.0, 64.0, 2.0, true), "");
}

// Qwen2.5 with YaRN (theta 1e6, head_dim 128, factor 4, L 32768): pair
// i(32) = 23.6 and i(1) = 39.7, truncated to 23 and 40 (computed by hand).
TEST(RopeScaling, YarnQwen25KeepsPairsUpTo23AndInterpolatesFrom40) {
  const std::vector<double> scaled = RopeScaling::yarn(4.0, 32768.0).inv_frequencies(1e6, 128);
  const std::vector<double> plain = testing::reference_plain_frequencies(1e6, 128);
  for (int i = 0; i < 64; ++i) {
    const double ratio = scaled[static_cast<std::size_t>(i)] / plain[static_cast<std::size_t>(i)];
    if (i <= 23) {
      EXPECT_NEAR(ratio, 1.0, 1e-14) << "pair " << i;
    } else if (i < 40) {  // linear in i: 1 - (i - 23) / 17 of the way from 1 to 1/4
      const double interpolate = (i - 23) / 17.0;
      EXPECT_NEAR(ratio, (1 - interpolate) + interpolate / 4, 1e-14) << "pair " << i;
    } else {
      EXPECT_NEAR(ratio, 0.25, 1e-14) << "pair " << i;
    }
  }
}

TEST(RopeScaling, YarnAttentionFactorIsPoint1LnFactorPlus1) {
  EXPECT_NEAR(RopeScaling::yarn(4.0, 32768.0).effective_attention_factor(), 0.1 * std::log(4.0) + 1, 1e-15);
  EXPECT_NEAR(RopeScaling::yarn(32.0, 4096.0).effective_attention_factor(), 0.1 * std::log(32.0) + 1, 1e-15);
}

TEST(RopeScaling, YarnAttentionFactorIsOneWithoutExtension) {
  EXPECT_EQ(RopeScaling::yarn(1.0, 4096.0).effective_attention_factor(), 1.0);
  EXPECT_EQ(RopeScaling::yarn(0.5, 4096.0).effective_attention_factor(), 1.0);
}

// DeepSeek-style: the rotary part gets mscale(s, mscale) / mscale(s,
// mscale_all_dim); DeepSeek-V3 (mscale = mscale_all_dim = 1) therefore gets 1.
TEST(RopeScaling, YarnWithMscaleAndMscaleAllDimUsesTheirRatio) {
  RopeScaling scaling = RopeScaling::yarn(40.0, 4096.0);
  scaling.mscale = 1.0;
  scaling.mscale_all_dim = 0.707;
  EXPECT_NEAR(scaling.effective_attention_factor(),
              testing::reference_yarn_mscale(40.0, 1.0) / testing::reference_yarn_mscale(40.0, 0.707), 1e-15);
  scaling.mscale_all_dim = 1.0;
  EXPECT_NEAR(scaling.effective_attention_factor(), 1.0, 1e-15);
}

// Hugging Face's rule: the ratio needs both; one alone (or a 0) leaves the
// paper's factor.
TEST(RopeScaling, YarnWithOnlyMscaleKeepsThePapersFactor) {
  RopeScaling scaling = RopeScaling::yarn(40.0, 4096.0);
  scaling.mscale = 0.707;
  EXPECT_NEAR(scaling.effective_attention_factor(), 0.1 * std::log(40.0) + 1, 1e-15);
}

TEST(RopeScaling, YarnMscaleHelperGivesTheSoftmaxFactorOfDeepSeek) {
  EXPECT_NEAR(yarn_mscale(40.0, 1.0), 0.1 * std::log(40.0) + 1, 1e-15);
  EXPECT_NEAR(yarn_mscale(40.0, 0.707), testing::reference_yarn_mscale(40.0, 0.707), 1e-15);
  EXPECT_EQ(yarn_mscale(1.0, 0.707), 1.0);
}

TEST(RopeScaling, AttentionFactorFieldOverridesTheSchemes) {
  RopeScaling scaling = RopeScaling::yarn(4.0, 32768.0);
  scaling.attention_factor = 1.25;
  EXPECT_EQ(scaling.effective_attention_factor(), 1.25);
}

TEST(RopeScaling, ExplicitFrequenciesAreUsedAsGiven) {
  const std::vector<double> frequencies = {1.0, 0.5, 0.0, 1e-9};
  EXPECT_EQ(RopeScaling::explicit_frequencies(frequencies).inv_frequencies(10000.0, 8), frequencies);
}

TEST(RopeScaling, ExplicitFrequenciesCarryTheirAttentionFactor) {
  EXPECT_EQ(RopeScaling::explicit_frequencies({1.0}, 1.5).effective_attention_factor(), 1.5);
  EXPECT_EQ(RopeScaling::explicit_frequencies({1.0}).effective_attention_factor(), 1.0);
}

// Every kind through the reference's dispatch on the description (what an
// oracle that follows a configuration uses).
TEST(RopeScaling, EveryKindMatchesTheReferenceReadingTheSameDescription) {
  RopeScaling deepseek = RopeScaling::yarn(40.0, 4096.0);
  deepseek.mscale = 1.0;
  deepseek.mscale_all_dim = 0.707;
  const RopeScaling kinds[] = {RopeScaling::none(),
                               RopeScaling::linear(2.0),
                               RopeScaling::ntk_aware(4.0),
                               RopeScaling::llama3(),
                               deepseek,
                               RopeScaling::explicit_frequencies({1.0, 0.25, 0.0, 3e-6}, 1.1)};
  for (const RopeScaling& scaling : kinds) {
    const std::string what = "kind " + std::to_string(static_cast<int>(scaling.kind));
    expect_frequencies_near(scaling.inv_frequencies(10000.0, 8), testing::reference_frequencies(scaling, 10000.0, 8),
                            what);
    EXPECT_NEAR(scaling.effective_attention_factor(), testing::reference_attention_factor(scaling), 1e-15) << what;
  }
}

// ---- validation: every bad value gets an error naming it ------------------

TEST(RopeScalingValidation, InfiniteThetaIsNamed) {
  expect_error_naming([] { RopeScaling::none().validate(kInf, 64); }, "theta inf");
}

TEST(RopeScalingValidation, NanThetaIsNamed) {
  expect_error_naming([] { RopeScaling::none().validate(kNan, 64); }, "theta nan");
}

TEST(RopeScalingValidation, ThetaOfOneIsNamed) {
  expect_error_naming([] { RopeScaling::none().validate(1.0, 64); }, "theta 1 ");
}

TEST(RopeScalingValidation, OddRotaryDimensionIsNamed) {
  expect_error_naming([] { RopeScaling::none().validate(10000.0, 7); }, "dimension 7");
}

TEST(RopeScalingValidation, NanFactorIsNamed) {
  expect_error_naming([] { RopeScaling::linear(kNan).validate(10000.0, 64); }, "factor nan");
}

TEST(RopeScalingValidation, InfiniteFactorIsNamed) {
  expect_error_naming([] { RopeScaling::yarn(kInf, 4096.0).validate(10000.0, 64); }, "factor inf");
}

TEST(RopeScalingValidation, ZeroFactorIsNamed) {
  expect_error_naming([] { RopeScaling::llama3(0.0).validate(10000.0, 64); }, "factor 0");
}

TEST(RopeScalingValidation, NegativeFactorIsNamed) {
  expect_error_naming([] { RopeScaling::ntk_aware(-2.0).validate(10000.0, 64); }, "factor -2");
}

TEST(RopeScalingValidation, NtkAwareFactorThatOverflowsThetaIsNamed) {
  expect_error_naming([] { RopeScaling::ntk_aware(1e300).validate(10000.0, 4); }, "factor 1e+300");
}

TEST(RopeScalingValidation, NtkAwareFactorThatPushesThetaBelowOneIsNamed) {
  expect_error_naming([] { RopeScaling::ntk_aware(1e-9).validate(10000.0, 64); }, "factor 1e-09");
}

TEST(RopeScalingValidation, Llama3HighFreqFactorNotAboveLowIsNamed) {
  expect_error_naming([] { RopeScaling::llama3(8.0, 4.0, 4.0, 8192.0).validate(500000.0, 128); },
                      "high_freq_factor 4");
}

TEST(RopeScalingValidation, Llama3NanLowFreqFactorIsNamed) {
  expect_error_naming([] { RopeScaling::llama3(8.0, kNan, 4.0, 8192.0).validate(500000.0, 128); },
                      "low_freq_factor nan");
}

TEST(RopeScalingValidation, Llama3ZeroOriginalContextIsNamed) {
  expect_error_naming([] { RopeScaling::llama3(8.0, 1.0, 4.0, 0.0).validate(500000.0, 128); },
                      "original_max_positions 0");
}

TEST(RopeScalingValidation, YarnInfiniteOriginalContextIsNamed) {
  expect_error_naming([] { RopeScaling::yarn(4.0, kInf).validate(1e6, 128); }, "original_max_positions inf");
}

TEST(RopeScalingValidation, YarnBetaFastNotAboveBetaSlowIsNamed) {
  expect_error_naming([] { RopeScaling::yarn(4.0, 4096.0, 1.0, 1.0).validate(1e6, 128); }, "beta_fast 1");
}

TEST(RopeScalingValidation, YarnZeroBetaSlowIsNamed) {
  expect_error_naming([] { RopeScaling::yarn(4.0, 4096.0, 32.0, 0.0).validate(1e6, 128); }, "beta_slow 0");
}

TEST(RopeScalingValidation, YarnNegativeMscaleIsNamed) {
  RopeScaling scaling = RopeScaling::yarn(4.0, 4096.0);
  scaling.mscale = -1.0;
  expect_error_naming([&] { scaling.validate(1e6, 128); }, "mscale -1");
}

TEST(RopeScalingValidation, YarnNanMscaleAllDimIsNamed) {
  RopeScaling scaling = RopeScaling::yarn(4.0, 4096.0);
  scaling.mscale_all_dim = kNan;
  expect_error_naming([&] { scaling.validate(1e6, 128); }, "mscale_all_dim nan");
}

TEST(RopeScalingValidation, ZeroAttentionFactorIsNamed) {
  expect_error_naming([] { RopeScaling::explicit_frequencies({1.0, 0.1}, 0.0).validate(10000.0, 4); },
                      "attention_factor 0");
}

TEST(RopeScalingValidation, NanAttentionFactorIsNamed) {
  RopeScaling scaling = RopeScaling::yarn(4.0, 4096.0);
  scaling.attention_factor = kNan;
  expect_error_naming([&] { scaling.validate(1e6, 128); }, "attention_factor nan");
}

TEST(RopeScalingValidation, ExplicitFrequenciesOfTheWrongLengthAreNamed) {
  expect_error_naming([] { RopeScaling::explicit_frequencies({1.0, 0.1, 0.01}).validate(10000.0, 8); },
                      "have 3 entries, expected rotary_dim / 2 = 4");
}

TEST(RopeScalingValidation, NegativeExplicitFrequencyIsNamed) {
  expect_error_naming([] { RopeScaling::explicit_frequencies({1.0, -0.1}).validate(10000.0, 4); },
                      "[1] = -0.1");
}

TEST(RopeScalingValidation, NanExplicitFrequencyIsNamed) {
  expect_error_naming([] { RopeScaling::explicit_frequencies({kNan, 0.1}).validate(10000.0, 4); }, "[0] = nan");
}

TEST(RopeScalingValidation, InfiniteExplicitFrequencyIsNamed) {
  expect_error_naming([] { RopeScaling::explicit_frequencies({1.0, kInf}).validate(10000.0, 4); }, "[1] = inf");
}

TEST(RopeScalingValidation, FrequenciesAreValidatedBeforeTheyAreComputed) {
  expect_error_naming([] { RopeScaling::linear(kNan).inv_frequencies(10000.0, 64); }, "factor nan");
}

}  // namespace
}  // namespace sinkkv

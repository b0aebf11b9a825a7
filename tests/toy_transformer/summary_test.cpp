// The short report of sinkkv-eval --ranges (toy/summary.hpp): position
// ranges, the one-row-per-policy table and the sentences computed from it,
// on runs whose perplexities are known exactly.
#include "toy/summary.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

using toy::Policy;
using toy::PolicyRun;
using toy::PolicySpec;
using toy::PositionRange;

/// A run whose predictions [first, first + count) all have NLL log(ppl):
/// its perplexity over any range it covers is `ppl`.
PolicyRun constant_run(Policy policy, int sinks, int window, double ppl, std::size_t count, std::size_t first = 0,
                       double cpu_seconds = 1.0) {
  PolicyRun run;
  run.name = toy::policy_name(policy);
  run.spec = PolicySpec{policy, sinks, window};
  run.nll.assign(count, std::log(ppl));
  run.first = first;
  run.cpu_seconds = cpu_seconds;
  return run;
}

/// A run with perplexity `inside` on positions 1..boundary and `outside` after.
PolicyRun two_level_run(Policy policy, int sinks, int window, double inside, double outside, std::size_t boundary,
                        std::size_t count, double cpu_seconds) {
  PolicyRun run = constant_run(policy, sinks, window, inside, count, 0, cpu_seconds);
  for (std::size_t i = boundary; i < count; ++i) run.nll[i] = std::log(outside);
  return run;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t begin = 0;
  for (std::size_t end = text.find('\n'); end != std::string::npos; end = text.find('\n', begin)) {
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

TEST(PositionRanges, ParseFirstDashLastLists) {
  const std::vector<PositionRange> ranges = toy::parse_position_ranges("--ranges", "1-256,257-8192,7937-8192");
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[1].first, 257u);
  EXPECT_EQ(ranges[1].last, 8192u);
  EXPECT_EQ(ranges[1].begin(), 256u);  // prediction indices [256, 8192)
  EXPECT_EQ(ranges[1].end(), 8192u);
  EXPECT_EQ(ranges[2].label(), "7937-8192");
  EXPECT_EQ(toy::parse_position_ranges("--ranges", "5-5")[0].label(), "5-5");
}

TEST(PositionRanges, RejectBadItemsNamingThem) {
  const auto error_of = [](const std::string& list) {
    try {
      toy::parse_position_ranges("--ranges", list);
    } catch (const toy::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("1-256,300"), "--ranges: '300' is not FIRST-LAST");
  EXPECT_EQ(error_of("0-10"), "--ranges first: 0 outside [1, 1099511627776]");
  EXPECT_EQ(error_of("10-5"), "--ranges last: 5 outside [10, 1099511627776]");
  EXPECT_EQ(error_of("1-x"), "--ranges last: 'x' is not an integer");
  EXPECT_EQ(error_of(""), "--ranges: '' is not FIRST-LAST");
}

TEST(RangeTable, HasOneRowPerPolicyWithEachRangesPerplexity) {
  const std::vector<PolicyRun> runs = {
      two_level_run(Policy::kDense, 0, 1000, 20.0, 40.0, 256, 1000, 2.0),
      two_level_run(Policy::kWindow, 0, 256, 20.0, 16.0, 256, 1000, 0.5),
      two_level_run(Policy::kSink, 1, 255, 20.0, 15.9, 256, 1000, 0.5),
      constant_run(Policy::kRecompute, 0, 256, 16.1, 100, 900, 20.0),  // positions 901-1000 only
  };
  const std::vector<PositionRange> ranges = toy::parse_position_ranges("r", "1-256,257-1000,901-1000");
  const std::vector<std::string> lines = lines_of(toy::range_table(runs, ranges));
  ASSERT_EQ(lines.size(), 2u + runs.size()) << toy::range_table(runs, ranges);
  EXPECT_NE(lines[1].find("policy"), std::string::npos);
  EXPECT_NE(lines[1].find("257-1000"), std::string::npos);
  const std::vector<std::string> want = {
      "dense      all 1000              20.00      40.00      40.00        2.00",
      "window     last 256              20.00      16.00      16.00        0.50",
      "sink       1 + last 255          20.00      15.90      15.90        0.50",
      "recompute  last 256, re-run          -          -      16.10      200.00",
  };
  for (std::size_t r = 0; r < runs.size(); ++r) EXPECT_EQ(lines[2 + r], want[r]);
}

TEST(RangeTable, ARangeScoredOnlyInPartShowsADash) {
  const std::vector<PolicyRun> runs = {constant_run(Policy::kRecompute, 0, 8, 3.0, 10, 5)};  // predictions 5..14
  const std::string table = toy::range_table(runs, toy::parse_position_ranges("r", "1-10,6-15,6-16"));
  EXPECT_NE(table.find("        -       3.00          -"), std::string::npos) << table;
}

TEST(RangeReading, SaysDenseDegradesWindowHoldsAndWhatRecomputeCosts) {
  const std::vector<PolicyRun> runs = {
      two_level_run(Policy::kDense, 0, 1000, 20.0, 40.0, 256, 1000, 2.0),
      two_level_run(Policy::kWindow, 0, 256, 20.0, 16.0, 256, 1000, 0.5),
      two_level_run(Policy::kSink, 1, 255, 20.0, 15.9, 256, 1000, 0.5),
      constant_run(Policy::kRecompute, 0, 256, 16.1, 100, 900, 20.0),
  };
  const std::vector<std::string> lines =
      toy::range_reading(runs, toy::parse_position_ranges("r", "1-256,257-1000,901-1000"), 256);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            "Past the model's 256-token training length (positions 257-1000), dense attention's perplexity is 40.00, "
            "2.52x the sink cache's 15.90: it attends across distances it never saw in training, over a cache grown "
            "to 1000 tokens, while the sink cache holds 256.");
  EXPECT_EQ(lines[1],
            "Window attention (no sinks) scores 16.00 on positions 257-1000, within 0.6% of sink's 15.90: for this "
            "model evicting the first tokens costs almost nothing, so window attention does not collapse.");
  // 200 ms per token against 0.5 ms: 400x; compared on the range recompute scored.
  EXPECT_EQ(lines[2],
            "Recompute (the last 256 tokens re-run for every token) scores 16.10 on positions 901-1000 against "
            "sink's 15.90, at 400x sink's CPU time per token.");
}

TEST(RangeReading, SaysSoWhenWindowCollapsesOrDenseHolds) {
  const std::vector<PolicyRun> runs = {
      two_level_run(Policy::kDense, 0, 1000, 20.0, 16.0, 256, 1000, 2.0),
      two_level_run(Policy::kWindow, 0, 256, 20.0, 300.0, 256, 1000, 0.5),
      two_level_run(Policy::kSink, 4, 252, 20.0, 16.0, 256, 1000, 0.5),
  };
  const std::vector<std::string> lines =
      toy::range_reading(runs, toy::parse_position_ranges("r", "1-256,257-1000"), 256);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("dense attention's perplexity is 16.00, no worse than the sink cache's 16.00"),
            std::string::npos)
      << lines[0];
  EXPECT_NE(lines[1].find("scores 300.00 on positions 257-1000, 1775% worse than sink's 16.00: this model needs its "
                          "first tokens."),
            std::string::npos)
      << lines[1];
}

TEST(RangeReading, LeavesOutWhatItCannotCompare) {
  // No sink run: nothing to compare against.
  EXPECT_TRUE(
      toy::range_reading({constant_run(Policy::kDense, 0, 10, 5.0, 10)}, toy::parse_position_ranges("r", "1-10"), 4)
          .empty());
  // Dense and sink, but no range past the training length: no dense sentence.
  const std::vector<PolicyRun> runs = {constant_run(Policy::kDense, 0, 10, 5.0, 10),
                                       constant_run(Policy::kSink, 1, 3, 5.0, 10)};
  EXPECT_TRUE(toy::range_reading(runs, toy::parse_position_ranges("r", "1-4"), 4).empty());
  EXPECT_EQ(toy::range_reading(runs, toy::parse_position_ranges("r", "1-4,5-10"), 4).size(), 1u);
}

TEST(WordWrap, BreaksAtSpacesWithinTheWidth) {
  EXPECT_EQ(toy::word_wrap("aa bb cc dd", 5, "  "), "aa bb\n  cc\n  dd");
  EXPECT_EQ(toy::word_wrap("aa bb cc dd", 8, "  "), "aa bb cc\n  dd");
  EXPECT_EQ(toy::word_wrap("abcdefgh ij", 4, "> "), "abcdefgh\n> ij");  // a long word keeps its own line
  EXPECT_EQ(toy::word_wrap("short", 80, "  "), "short");
  EXPECT_EQ(toy::word_wrap("", 80, "  "), "");
}

}  // namespace

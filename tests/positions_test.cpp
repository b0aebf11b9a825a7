// CachePositions: the three positions of every cached token, against a
// deque that simulates the policy token by token.
#include <cstdint>
#include <deque>
#include <set>

#include <gtest/gtest.h>

#include <sinkkv/positions.hpp>

#include "support/oracle.hpp"

namespace sinkkv {
namespace {

using testing::expected_cached_tokens;

// Checks every observer of `positions` against the independently derived
// list of cached stream indices.
::testing::AssertionResult consistent(const CachePositions& positions) {
  const std::vector<std::uint64_t> kept =
      expected_cached_tokens(positions.num_sinks(), positions.window(), positions.tokens_seen());
  if (positions.size() != static_cast<int>(kept.size())) {
    return ::testing::AssertionFailure() << "size " << positions.size() << ", expected " << kept.size();
  }
  std::set<int> slots;
  for (int position = 0; position < positions.size(); ++position) {
    if (positions.stream_index(position) != kept[static_cast<std::size_t>(position)]) {
      return ::testing::AssertionFailure() << "cache position " << position << " holds stream index "
                                           << positions.stream_index(position) << ", expected " << kept[position];
    }
    if (positions.cache_position(kept[static_cast<std::size_t>(position)]) != position) {
      return ::testing::AssertionFailure() << "cache_position(" << kept[position] << ") is not " << position;
    }
    const int slot = positions.slot(position);
    if (slot < 0 || slot >= positions.capacity() || !slots.insert(slot).second) {
      return ::testing::AssertionFailure() << "slot " << slot << " of cache position " << position
                                           << " is out of range or shared";
    }
  }
  if (positions.tokens_seen() > 0 && positions.slot(positions.query_position()) != positions.newest_slot()) {
    return ::testing::AssertionFailure() << "the newest token is not at the last cache position";
  }
  return ::testing::AssertionSuccess();
}

TEST(CachePositions, EmptyCacheHoldsNothing) {
  const CachePositions positions(4, 8);
  EXPECT_EQ(positions.size(), 0);
  EXPECT_EQ(positions.tokens_seen(), 0u);
  EXPECT_EQ(positions.capacity(), 12);
  EXPECT_FALSE(positions.cache_position(0).has_value());
  std::array<CachePositions::WindowRun, 2> runs;
  EXPECT_EQ(positions.window_runs(runs), 0);
}

TEST(CachePositions, PartlyFilledCacheKeepsStreamPositions) {
  CachePositions positions(4, 8);
  for (int t = 0; t < 7; ++t) positions.push();
  ASSERT_TRUE(consistent(positions));
  EXPECT_EQ(positions.cached_sinks(), 4);
  EXPECT_EQ(positions.cached_window(), 3);
  for (int p = 0; p < 7; ++p) EXPECT_EQ(positions.stream_index(p), static_cast<std::uint64_t>(p));
}

TEST(CachePositions, ExactlyFullCacheHasEvictedNothing) {
  CachePositions positions(4, 8);
  for (int t = 0; t < 12; ++t) positions.push();
  ASSERT_TRUE(consistent(positions));
  EXPECT_EQ(positions.evicted(), 0u);
  EXPECT_EQ(positions.query_position(), 11);
}

TEST(CachePositions, FirstEvictionDropsOldestWindowTokenAndKeepsSinks) {
  CachePositions positions(4, 8);
  for (int t = 0; t < 13; ++t) positions.push();
  ASSERT_TRUE(consistent(positions));
  EXPECT_EQ(positions.evicted(), 1u);
  EXPECT_FALSE(positions.cache_position(4).has_value());
  EXPECT_EQ(positions.cache_position(3), 3);
  EXPECT_EQ(positions.cache_position(5), 4);
  EXPECT_EQ(positions.stream_index(11), 12u);
  EXPECT_EQ(positions.newest_slot(), 4);  // the evicted token's slot
}

TEST(CachePositions, ManyWrapAroundsStayConsistentEveryStep) {
  for (int sinks : {0, 1, 4, 8}) {
    for (int window : {1, 2, 3, 7, 16}) {
      CachePositions positions(sinks, window);
      for (int t = 0; t < 10 * (sinks + window) + 3; ++t) {
        positions.push();
        ASSERT_TRUE(consistent(positions)) << "sinks " << sinks << " window " << window << " after " << t + 1;
      }
    }
  }
}

TEST(CachePositions, WindowRunsCoverTheWindowInStreamOrder) {
  CachePositions positions(2, 5);
  for (int t = 0; t < 40; ++t) {
    positions.push();
    std::array<CachePositions::WindowRun, 2> runs;
    const int count = positions.window_runs(runs);
    int position = positions.cached_sinks();
    for (int r = 0; r < count; ++r) {
      for (int j = 0; j < runs[r].length; ++j, ++position) {
        ASSERT_EQ(runs[r].first_slot + j, positions.slot(position)) << "after " << t + 1;
        ASSERT_EQ(runs[r].first_stream_index + j, positions.stream_index(position));
      }
    }
    ASSERT_EQ(position, positions.size());
  }
}

TEST(CachePositions, WindowOfOneKeepsOnlyTheNewestToken) {
  CachePositions positions(0, 1);
  for (int t = 0; t < 5; ++t) positions.push();
  EXPECT_EQ(positions.size(), 1);
  EXPECT_EQ(positions.stream_index(0), 4u);
  EXPECT_EQ(positions.slot(0), 0);
}

TEST(CachePositions, ClearForgetsEveryToken) {
  CachePositions positions(1, 3);
  for (int t = 0; t < 9; ++t) positions.push();
  positions.clear();
  EXPECT_EQ(positions.size(), 0);
  positions.push();
  EXPECT_TRUE(consistent(positions));
}

TEST(CachePositions, OutOfRangeCachePositionIsAnErrorNamingIt) {
  CachePositions positions(1, 3);
  positions.push();
  EXPECT_THROW(
      {
        try {
          (void)positions.stream_index(1);
        } catch (const Error& error) {
          EXPECT_STREQ(error.what(), "sinkkv: cache_position 1 outside [0, size 1)");
          throw;
        }
      },
      Error);
  EXPECT_THROW((void)positions.slot(-1), Error);
}

TEST(CachePositions, BadConfigurationIsRejected) {
  EXPECT_THROW(CachePositions(4, 0), Error);
  EXPECT_THROW(CachePositions(-1, 4), Error);
}

}  // namespace
}  // namespace sinkkv

// CachePositions: the three positions of every cached token, against a
// deque that simulates the policy token by token.
#include <cstdint>
#include <deque>
#include <random>
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
    if (slot < 0 || slot >= positions.slots() || !slots.insert(slot).second) {
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

// The ring of a cache with chunk room, simulated without the class: window
// token t (t >= sinks) lives in slot sinks + (t - sinks) mod ring_slots.
int simulated_slot(std::uint64_t t, int sinks, int ring_slots) {
  if (t < static_cast<std::uint64_t>(sinks)) return static_cast<int>(t);
  return sinks + static_cast<int>((t - static_cast<std::uint64_t>(sinks)) % static_cast<std::uint64_t>(ring_slots));
}

TEST(CachePositions, ChunkRoomKeepsTheWholeWindowOfEveryTokenOfTheLastChunk) {
  std::mt19937 random(7);
  for (int sinks : {0, 1, 4}) {
    for (int window : {1, 3, 8}) {
      for (int max_chunk : {1, 2, 5, 17}) {
        CachePositions positions(sinks, window, window + max_chunk - 1);
        ASSERT_EQ(positions.chunk_room(), max_chunk);
        for (int step = 0; step < 60; ++step) {
          const int count = 1 + static_cast<int>(random() % static_cast<unsigned>(max_chunk));
          const std::uint64_t first = positions.tokens_seen();
          positions.push(count);
          ASSERT_TRUE(consistent(positions)) << "sinks " << sinks << " window " << window << " chunk " << max_chunk;
          // Every token the chunk's oldest query sees is still stored, at the
          // ring slot the simulation gives, and no two share a slot.
          std::set<int> used;
          const std::uint64_t oldest_needed = first + 1 > static_cast<std::uint64_t>(window) ? first + 1 - window : 0;
          for (std::uint64_t t = std::max<std::uint64_t>(oldest_needed, sinks); t < positions.tokens_seen(); ++t) {
            ASSERT_GE(t, positions.first_kept_index());
            const int slot = positions.slot_of(t);
            ASSERT_EQ(slot, simulated_slot(t, sinks, positions.ring_slots())) << "token " << t;
            ASSERT_TRUE(used.insert(slot).second) << "slot " << slot << " holds two tokens";
          }
        }
      }
    }
  }
}

TEST(CachePositions, PushingAChunkEqualsPushingItsTokensOneByOne) {
  for (int count : {1, 2, 6, 9}) {
    CachePositions chunked(3, 6, 6 + 9 - 1);
    CachePositions single(3, 6, 6 + 9 - 1);
    for (int step = 0; step < 25; ++step) {
      chunked.push(count);
      for (int i = 0; i < count; ++i) single.push();
      ASSERT_EQ(chunked.tokens_seen(), single.tokens_seen());
      ASSERT_EQ(chunked.newest_slot(), single.newest_slot()) << "chunks of " << count << ", step " << step;
      for (int p = 0; p < chunked.size(); ++p) ASSERT_EQ(chunked.slot(p), single.slot(p));
    }
  }
}

TEST(CachePositions, SeekEqualsPushingEveryToken) {
  CachePositions pushed(2, 5, 7);
  for (std::uint64_t t = 1; t < 200; ++t) {
    pushed.push();
    CachePositions sought(2, 5, 7);
    sought.seek(t);
    ASSERT_EQ(sought.newest_slot(), pushed.newest_slot()) << "after " << t;
    ASSERT_EQ(sought.first_kept_index(), pushed.first_kept_index());
  }
  CachePositions far(4, 1020);
  far.seek(5'000'000'007ULL);
  EXPECT_EQ(far.stream_index(4), 5'000'000'007ULL - 1020);
  EXPECT_EQ(far.newest_slot(), simulated_slot(5'000'000'006ULL, 4, 1020));
}

TEST(CachePositions, WindowRunsOfAStreamRangeFollowTheRing) {
  CachePositions positions(2, 4, 9);
  for (int step = 0; step < 30; ++step) {
    positions.push(3);
    const std::uint64_t first = positions.first_kept_index();
    for (std::uint64_t lo = first; lo <= positions.tokens_seen(); ++lo) {
      std::array<CachePositions::WindowRun, 2> runs;
      const int count = positions.window_runs(lo, positions.tokens_seen(), runs);
      std::uint64_t t = lo;
      for (int r = 0; r < count; ++r) {
        ASSERT_EQ(runs[r].first_stream_index, t);
        for (int j = 0; j < runs[r].length; ++j, ++t) ASSERT_EQ(runs[r].first_slot + j, positions.slot_of(t));
      }
      ASSERT_EQ(t, positions.tokens_seen()) << "runs from " << lo;
    }
  }
}

TEST(CachePositions, QueryPositionOfATokenIsItsCachePositionWhenItWasNewest) {
  CachePositions positions(3, 5);
  for (std::uint64_t t = 0; t < 30; ++t) {
    positions.push();
    EXPECT_EQ(positions.query_position_of(t), static_cast<std::uint64_t>(positions.query_position()));
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
  EXPECT_THROW(CachePositions(1, 4, 3), Error);  // fewer ring slots than the window
  EXPECT_THROW(CachePositions(4, 1 << 30), Error);
}

}  // namespace
}  // namespace sinkkv

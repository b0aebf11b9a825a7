// Label "long" (run by SINKKV_TEST_LABELS=all scripts/test.sh): the
// bookkeeping stays exact past 2^32 tokens, where a 32-bit counter would wrap.
#include <cstdint>

#include <gtest/gtest.h>

#include <sinkkv/positions.hpp>

#include "support/oracle.hpp"

namespace sinkkv {
namespace {

TEST(CachePositionsLong, StreamIndicesStayExactPastTwoToThe32) {
  CachePositions positions(4, 1000);
  const std::uint64_t total = (std::uint64_t{1} << 32) + 1234;
  for (std::uint64_t t = 0; t < total; ++t) positions.push();
  ASSERT_EQ(positions.tokens_seen(), total);
  const std::vector<std::uint64_t> kept = testing::expected_cached_tokens(4, 1000, total);
  ASSERT_EQ(positions.size(), static_cast<int>(kept.size()));
  for (int position = 0; position < positions.size(); ++position) {
    ASSERT_EQ(positions.stream_index(position), kept[static_cast<std::size_t>(position)]) << position;
    ASSERT_EQ(positions.cache_position(kept[static_cast<std::size_t>(position)]), position);
  }
  // The ring index follows (t - sinks) mod window.
  EXPECT_EQ(positions.newest_slot(), 4 + static_cast<int>((total - 1 - 4) % 1000));
}

}  // namespace
}  // namespace sinkkv

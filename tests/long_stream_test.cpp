// Five million tokens through a tiny cache: positions and outputs are still
// exact against the oracle at the end, and at points past 2^22.
#include <cmath>
#include <cstdint>

#include <gtest/gtest.h>

#include <sinkkv/sinkkv.hpp>

#include "support/oracle.hpp"
#include "support/streams.hpp"

namespace sinkkv {
namespace {

using testing::HeadRows;

HeadRows rows_of(std::uint64_t token, int salt, int heads, int dim) {
  const std::vector<float> flat = testing::token_rows(17, token, salt, heads * dim);
  HeadRows rows(static_cast<std::size_t>(heads), std::vector<double>(static_cast<std::size_t>(dim)));
  for (int h = 0; h < heads; ++h) {
    for (int d = 0; d < dim; ++d) rows[h][d] = flat[static_cast<std::size_t>(h * dim + d)];
  }
  return rows;
}

TEST(LongStream, FiveMillionTokensKeepExactPositionsAndOutputs) {
  CacheConfig config;
  config.num_layers = 1;
  config.num_kv_heads = 1;
  config.num_query_heads = 2;
  config.head_dim = 4;
  config.num_sinks = 4;
  config.window = 8;
  // theta 2: the slowest pair still turns 0.5 rad per token, so an angle
  // error anywhere shows at once.
  config.encoding = PositionEncoding::rotary({2.0, 0, RopeLayout::kAdjacentPairs});
  SinkKVCache<float> cache(config);

  const std::uint64_t total = 5'000'000;
  const std::uint64_t checkpoints[] = {(std::uint64_t{1} << 22) + 3, total - 20};
  std::vector<float> out(8);
  double worst = 0;
  int checked = 0;
  for (std::uint64_t t = 0; t < total; ++t) {
    const std::vector<float> k = testing::token_rows(17, t, 0, 4);
    const std::vector<float> v = testing::token_rows(17, t, 1, 4);
    cache.append(0, heads_view(k.data(), 1, 4), heads_view(v.data(), 1, 4));
    const bool check = (t >= checkpoints[0] && t < checkpoints[0] + 20) || t >= checkpoints[1];
    if (!check) continue;

    const std::vector<float> query = testing::token_rows(17, t, 2, 8);
    cache.attend(0, heads_view(query.data(), 2, 4), output_view(out.data(), 2, 4), CpuKernel{});
    const std::vector<std::uint64_t> kept = testing::expected_cached_tokens(4, 8, t + 1);
    std::vector<HeadRows> keys, values;
    for (int position = 0; position < cache.size(); ++position) {
      ASSERT_EQ(cache.stream_index(position), kept[static_cast<std::size_t>(position)]) << "token " << t;
      keys.push_back(rows_of(kept[static_cast<std::size_t>(position)], 0, 1, 4));
      values.push_back(rows_of(kept[static_cast<std::size_t>(position)], 1, 1, 4));
    }
    const testing::OracleResult expected =
        testing::oracle_attention(config, rows_of(t, 2, 2, 4), keys, values, {}, 0.5);
    for (int q = 0; q < 2; ++q) {
      for (int d = 0; d < 4; ++d) {
        const double error = std::abs(out[static_cast<std::size_t>(q * 4 + d)] - expected.output[q][d]);
        worst = std::max(worst, error);
        ASSERT_LE(error, 2e-6) << "token " << t << " head " << q << " dim " << d;
      }
    }
    ++checked;
  }
  EXPECT_EQ(cache.tokens_seen(), total);
  EXPECT_EQ(checked, 40);
  std::printf("[ oracle   ] after %llu tokens: worst error %.3g over %d checked steps\n",
              static_cast<unsigned long long>(total), worst, checked);
}

// The same stream handed over rotated by the engine (its own double-precision
// RoPE at each stream index): the cache turns only the sink-frame query, by
// (cache position - stream index), and stays exact as far.
TEST(LongStream, PreRotatedInputsStayExactFiveMillionTokensIn) {
  CacheConfig config;
  config.num_layers = 1;
  config.num_kv_heads = 1;
  config.num_query_heads = 2;
  config.head_dim = 4;
  config.num_sinks = 4;
  config.window = 8;
  config.encoding = PositionEncoding::rotary({2.0, 0, RopeLayout::kSplitHalves});
  config.input_rotation = InputRotation::kStreamRotated;
  SinkKVCache<float> cache(config);
  const auto engine_rotated = [&](const HeadRows& rows, std::uint64_t t) {
    std::vector<float> flat;
    for (const auto& row : rows) {
      for (double x : testing::oracle_rotate(row, static_cast<double>(t), config.encoding.rope)) {
        flat.push_back(static_cast<float>(x));
      }
    }
    return flat;
  };
  const std::uint64_t total = 5'000'000;
  std::vector<float> out(8);
  int checked = 0;
  for (std::uint64_t t = 0; t < total; ++t) {
    const std::vector<float> k = engine_rotated(rows_of(t, 0, 1, 4), t);
    const std::vector<float> v = testing::token_rows(17, t, 1, 4);
    cache.append(0, heads_view(k.data(), 1, 4), heads_view(v.data(), 1, 4));
    if (t + 20 < total && !(t >= 4'000'000 && t < 4'000'010)) continue;
    const std::vector<float> query = engine_rotated(rows_of(t, 2, 2, 4), t);
    cache.attend(0, heads_view(query.data(), 2, 4), output_view(out.data(), 2, 4), CpuKernel{});
    const std::vector<std::uint64_t> kept = testing::expected_cached_tokens(4, 8, t + 1);
    std::vector<HeadRows> keys, values;
    for (std::uint64_t token : kept) {
      keys.push_back(rows_of(token, 0, 1, 4));
      values.push_back(rows_of(token, 1, 1, 4));
    }
    const testing::OracleResult expected = testing::oracle_attention(config, rows_of(t, 2, 2, 4), keys, values, {}, 0.5);
    for (int q = 0; q < 2; ++q) {
      for (int d = 0; d < 4; ++d) {
        // The engine's float rounding of its rotated rows (2^-24 relative)
        // is the only loss: float tolerance.
        ASSERT_NEAR(out[static_cast<std::size_t>(q * 4 + d)], expected.output[q][d], 2e-5)
            << "token " << t << " head " << q << " dim " << d;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 30);
}

}  // namespace
}  // namespace sinkkv

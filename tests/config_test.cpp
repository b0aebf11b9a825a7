// CacheConfig validation: every bad field is rejected with its value named.
#include <string>

#include <gtest/gtest.h>

#include <sinkkv/cache.hpp>

namespace sinkkv {
namespace {

CacheConfig good() {
  CacheConfig config;
  config.num_layers = 2;
  config.num_kv_heads = 2;
  config.num_query_heads = 4;
  config.head_dim = 8;
  config.num_sinks = 4;
  config.window = 16;
  return config;
}

// The message of the sinkkv::Error the constructor throws, or "" if none.
std::string rejection(const CacheConfig& config) {
  try {
    SinkKVCache<float> cache(config);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(CacheConfig, GoodConfigurationIsAccepted) { EXPECT_EQ(rejection(good()), ""); }

TEST(CacheConfig, ZeroWindowIsRejected) {
  CacheConfig config = good();
  config.window = 0;
  EXPECT_EQ(rejection(config), "sinkkv: window 0 must be >= 1");
}

TEST(CacheConfig, NegativeSinksAreRejected) {
  CacheConfig config = good();
  config.num_sinks = -2;
  EXPECT_EQ(rejection(config), "sinkkv: num_sinks -2 must be >= 0");
}

TEST(CacheConfig, ZeroSinksAreAllowed) {
  CacheConfig config = good();
  config.num_sinks = 0;
  EXPECT_EQ(rejection(config), "");
}

TEST(CacheConfig, OddHeadDimWithRopeIsRejected) {
  CacheConfig config = good();
  config.head_dim = 7;
  EXPECT_EQ(rejection(config), "sinkkv: head_dim 7 is odd; RoPE rotates pairs and needs an even size");
}

TEST(CacheConfig, OddHeadDimWithoutRopeIsAccepted) {
  CacheConfig config = good();
  config.head_dim = 7;
  config.encoding = PositionEncoding::alibi_bias();
  EXPECT_EQ(rejection(config), "");
}

TEST(CacheConfig, OddPartialRotaryDimIsRejected) {
  CacheConfig config = good();
  config.encoding.rope.rotary_dim = 3;
  EXPECT_EQ(rejection(config), "sinkkv: rope rotary_dim 3 is odd; RoPE rotates pairs and needs an even size");
}

TEST(CacheConfig, QueryHeadsNotAMultipleOfKvHeadsAreRejected) {
  CacheConfig config = good();
  config.num_query_heads = 5;
  EXPECT_EQ(rejection(config), "sinkkv: num_query_heads 5 is not a multiple of num_kv_heads 2");
}

TEST(CacheConfig, ZeroLayersAreRejected) {
  CacheConfig config = good();
  config.num_layers = 0;
  EXPECT_EQ(rejection(config), "sinkkv: num_layers 0 outside [1, 65536]");
}

TEST(CacheConfig, WrongNumberOfAlibiSlopesIsRejected) {
  CacheConfig config = good();
  config.encoding = PositionEncoding::alibi_bias({{0.5, 0.25}});
  EXPECT_EQ(rejection(config), "sinkkv: alibi slopes has 2 entries, expected one per query head (4)");
}

TEST(CacheConfig, AbsurdCapacityIsRejectedBeforeAllocating) {
  CacheConfig config = good();
  config.window = 2'000'000'000;
  EXPECT_NE(rejection(config).find("exceeds 2^30"), std::string::npos);
}

}  // namespace
}  // namespace sinkkv

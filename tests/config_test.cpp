// CacheConfig validation: every bad field is rejected with its value named.
#include <limits>
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

TEST(CacheConfig, InfiniteOrNanThetaIsRejected) {
  for (double theta : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    CacheConfig config = good();
    config.encoding = PositionEncoding::rotary({theta, 0, RopeLayout::kAdjacentPairs});
    EXPECT_NE(rejection(config).find("must be finite and > 1"), std::string::npos) << theta;
  }
}

TEST(CacheConfig, NonFiniteAlibiSlopesAreRejected) {
  CacheConfig config = good();
  config.encoding = PositionEncoding::alibi_bias({{0.5, std::numeric_limits<double>::infinity(), 0.125, 0.0625}});
  EXPECT_EQ(rejection(config), "sinkkv: alibi slope of query head 1 is inf; slopes must be finite");
  config.encoding.alibi.slopes[1] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(rejection(config), "sinkkv: alibi slope of query head 1 is nan; slopes must be finite");
}

TEST(CacheConfig, EncodingKindOutsideTheEnumIsRejected) {
  CacheConfig config = good();
  config.encoding.kind = static_cast<PositionEncoding::Kind>(7);
  EXPECT_EQ(rejection(config), "sinkkv: encoding kind 7 is not a PositionEncoding::Kind");
}

TEST(CacheConfig, RopeLayoutOutsideTheEnumIsRejected) {
  CacheConfig config = good();
  config.encoding.rope.layout = static_cast<RopeLayout>(5);
  EXPECT_EQ(rejection(config), "sinkkv: rope layout 5 is not a RopeLayout");
}

TEST(CacheConfig, QueryRowsBeyondTheKernelsIndexRangeAreRejected) {
  CacheConfig config = good();
  config.num_kv_heads = 1 << 12;
  config.num_query_heads = 1 << 12;
  config.head_dim = 1 << 14;
  EXPECT_EQ(rejection(config), "sinkkv: num_query_heads 4096 x head_dim 16384 = 67108864 exceeds 16777216");
}

TEST(CacheConfig, LayerCountBeyondTheLimitIsRejected) {
  CacheConfig config = good();
  config.num_layers = 1 << 28;
  EXPECT_EQ(rejection(config), "sinkkv: num_layers 268435456 outside [1, 65536]");
}

TEST(CacheConfig, ChunkRoomCountsTowardsTheSlotLimit) {
  CacheConfig config = good();
  config.window = (1 << 30) - 4 - 100;
  config.max_chunk = 200;
  EXPECT_NE(rejection(config).find("exceeds 2^30"), std::string::npos);
  config.max_chunk = 0;
  EXPECT_EQ(rejection(config), "sinkkv: max_chunk 0 outside [1, 65536]");
}

TEST(CacheConfig, BadHeadPolicyIsNamedByLayerAndHead) {
  CacheConfig config = good();
  config.set_head_policy(1, 0, {2, 0});
  EXPECT_EQ(rejection(config), "sinkkv: layer 1 KV head 0: window 0 must be >= 1");
}

TEST(CacheConfig, HeadPoliciesOfTheWrongCountAreRejected) {
  CacheConfig config = good();
  config.head_policies.assign(3, RetentionPolicy{4, 16});
  EXPECT_EQ(rejection(config), "sinkkv: head_policies has 3 entries, expected num_layers x num_kv_heads = 4");
}

TEST(CacheConfig, PolicySettersCheckTheirIndices) {
  CacheConfig config = good();
  EXPECT_THROW(config.set_layer_policy(2, {0, 8}), Error);
  EXPECT_THROW(config.set_head_policy(0, 2, {0, 8}), Error);
  config.set_layer_policy(1, {0, 8});
  EXPECT_EQ(config.policy(0, 1), (RetentionPolicy{4, 16}));
  EXPECT_EQ(config.policy(1, 1), (RetentionPolicy{0, 8}));
}

TEST(CacheConfig, StorageThatOverflowsIsRejectedBeforeAllocating) {
  CacheConfig config = good();
  config.num_layers = 1 << 16;
  config.num_kv_heads = 16;
  config.num_query_heads = 16;
  config.head_dim = 1 << 20;
  config.window = (1 << 30) - 8;
  EXPECT_NE(rejection(config).find("exceeds 2^62"), std::string::npos);
}

TEST(CacheConfig, PreRotatedInputsNeedRope) {
  CacheConfig config = good();
  config.encoding = PositionEncoding::alibi_bias();
  config.input_rotation = InputRotation::kStreamRotated;
  EXPECT_EQ(rejection(config), "sinkkv: input_rotation kStreamRotated needs a RoPE encoding (inputs are rotated by RoPE only)");
}

TEST(CacheConfig, ChunkScratchBeyondItsBoundIsRejected) {
  CacheConfig config = good();
  config.max_chunk = 1 << 16;
  config.num_kv_heads = 64;
  config.num_query_heads = 64;
  config.head_dim = 64;
  EXPECT_EQ(rejection(config),
            "sinkkv: max_chunk 65536 x num_query_heads 64 x head_dim 64 exceeds 67108864 query elements per chunk");
}

TEST(CacheConfig, RotationTablesBeyondTheirBoundAreRejected) {
  CacheConfig config = good();
  config.num_kv_heads = 1;
  config.num_query_heads = 1;
  config.head_dim = 256;
  config.max_chunk = 1 << 16;
  config.set_layer_policy(1, {0, 8});  // two distinct policies
  EXPECT_EQ(rejection(config), "sinkkv: max_chunk 65536 x (2 distinct policies + 1) x 128 rotary pairs = 25165824 "
                               "rotation entries exceeds 16777216");
}

TEST(CacheConfig, DistinctPoliciesAreCounted) {
  CacheConfig config = good();
  EXPECT_EQ(config.num_policies(), 1);
  config.set_head_policy(0, 1, {0, 8});
  config.set_head_policy(1, 1, {0, 8});
  EXPECT_EQ(config.num_policies(), 2);
}

}  // namespace
}  // namespace sinkkv

// toy/head_policy.hpp: the per-layer / per-head policy format (every rule
// kind, overrides, and an error naming the rule for each mistake), the
// suggested mix, and the mixed policy run by the model against the
// double-precision reference with each head's own policy.
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/eval.hpp"
#include "toy/head_policy.hpp"
#include "toy/model.hpp"

namespace {

using sinkkv::RetentionPolicy;
using toy::HeadPolicies;

std::string error_of(const std::string& text, int layers = 6, int kv_heads = 2) {
  try {
    toy::parse_head_policies(text, layers, kv_heads);
  } catch (const toy::Error& e) {
    return e.what();
  }
  return "no error";
}

RetentionPolicy at(const HeadPolicies& p, int layer, int head, int kv_heads = 2) {
  return p[static_cast<std::size_t>(layer * kv_heads + head)];
}

TEST(HeadPolicyFormat, AllAppliesToEveryHead) {
  const HeadPolicies p = toy::parse_head_policies("all: 4+252", 3, 2);
  ASSERT_EQ(p.size(), 6u);
  for (const RetentionPolicy& head : p) EXPECT_EQ(head, (RetentionPolicy{4, 252}));
  EXPECT_EQ(toy::parse_head_policies("  4 + 252  ", 3, 2), p) << "no target means all; spaces are free";
}

TEST(HeadPolicyFormat, LaterRulesOverrideEarlierOnes) {
  const HeadPolicies p = toy::parse_head_policies("all: 4+252; layers 0-1,4: 1+31\nlayer 5 heads 0: 0+4096", 6, 2);
  EXPECT_EQ(at(p, 0, 0), (RetentionPolicy{1, 31}));
  EXPECT_EQ(at(p, 1, 1), (RetentionPolicy{1, 31}));
  EXPECT_EQ(at(p, 2, 0), (RetentionPolicy{4, 252}));
  EXPECT_EQ(at(p, 4, 1), (RetentionPolicy{1, 31}));
  EXPECT_EQ(at(p, 5, 0), (RetentionPolicy{0, 4096}));
  EXPECT_EQ(at(p, 5, 1), (RetentionPolicy{4, 252}));
}

TEST(HeadPolicyFormat, HeadsWithoutLayersMeanThoseHeadsOfEveryLayer) {
  const HeadPolicies p = toy::parse_head_policies("all: 4+60 # the default\nhead 1: 1+15", 3, 2);
  for (int layer = 0; layer < 3; ++layer) {
    EXPECT_EQ(at(p, layer, 0), (RetentionPolicy{4, 60}));
    EXPECT_EQ(at(p, layer, 1), (RetentionPolicy{1, 15}));
  }
}

TEST(HeadPolicyFormat, EveryMistakeIsAnErrorNamingTheRule) {
  EXPECT_NE(error_of("layers 0-6: 4+252").find("rule 1 'layers 0-6: 4+252': layer 6 outside [0, 6)"), std::string::npos)
      << error_of("layers 0-6: 4+252");
  EXPECT_NE(
      error_of("all: 4+252; layer 0 heads 2: 1+3").find("rule 2 'layer 0 heads 2: 1+3': KV head 2 outside [0, 2)"),
      std::string::npos);
  EXPECT_NE(error_of("layers 0-4: 4+252").find("layer 5 KV head 0 has no policy"), std::string::npos);
  EXPECT_NE(error_of("all: 4-252").find("expected '+' between sinks and window"), std::string::npos);
  EXPECT_NE(error_of("all: 4+0").find("window 0"), std::string::npos);
  EXPECT_NE(error_of("all: four+252").find("expected SINKS+WINDOW"), std::string::npos);
  EXPECT_NE(error_of("rows 1: 4+252").find("unexpected 'rows'"), std::string::npos);
  EXPECT_NE(error_of("layer 3-1: 4+252").find("layer range 3-1 is empty"), std::string::npos);
  EXPECT_NE(error_of("layer: 4+252").find("expected layer at"), std::string::npos);
  EXPECT_NE(error_of("all: 4+252: 3").find("more than one ':'"), std::string::npos);
  EXPECT_NE(error_of("all: 4+252 extra").find("unexpected 'extra' after the policy"), std::string::npos);
  EXPECT_NE(error_of("all 2: 4+252").find("unexpected '2' after 'all'"), std::string::npos);
  EXPECT_NE(error_of("all: 4+99999999999").find("is too large"), std::string::npos);
  EXPECT_NE(error_of(" # only a comment\n;;").find("no rule"), std::string::npos);
}

TEST(HeadPolicyFormat, FormattedTextParsesBack) {
  const HeadPolicies p = toy::parse_head_policies("all: 1+31; layer 2 heads 1: 1+159; layers 4-5: 0+64", 6, 2);
  const std::string text = toy::format_head_policies(p, 6, 2);
  EXPECT_EQ(toy::parse_head_policies(text, 6, 2), p) << text;
  EXPECT_EQ(text.rfind("all: 1+31\n", 0), 0u) << text;
  EXPECT_EQ(toy::total_slots(p), 7 * 32 + 160 + 4 * 64);
  EXPECT_EQ(toy::head_policy_summary(p), "7x 1+31, 4x 0+64, 1x 1+159");
}

TEST(HeadPolicyChoice, TheHeadsThatLookFarthestGetTheLongWindow) {
  const std::vector<double> far = {0.1, 0.5, 0.0, 0.3, 0.5, 0.2};
  const RetentionPolicy long_window{1, 159}, short_window{1, 31};
  const HeadPolicies chosen = toy::choose_head_policies(far, 2, long_window, short_window);
  EXPECT_EQ(chosen, (HeadPolicies{short_window, long_window, short_window, short_window, long_window, short_window}));
  const HeadPolicies reversed = toy::choose_head_policies(far, 2, long_window, short_window, true);
  EXPECT_EQ(reversed, (HeadPolicies{long_window, short_window, long_window, short_window, short_window, short_window}));
  EXPECT_THROW(toy::choose_head_policies(far, 7, long_window, short_window), toy::Error);
}

// ---- the mixed policy in the model -------------------------------------------

TEST(MixedPolicy, EveryHeadFollowsItsOwnPolicyAsTheReferenceDoes) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(6, 3, 6), 61);
  toy::PolicySpec spec{toy::Policy::kMixed, 0, 0};
  spec.head_policies = toy::parse_head_policies("all: 2+5; layer 0 heads 1: 0+3; layer 1 heads 0,2: 1+9", 2, 3);
  toy::Decoder decoder(weights, spec);
  toy_test::ReferenceModel reference(weights);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(40, weights.config.vocab_size, 4);
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    ASSERT_TRUE(
        toy_test::logits_close(decoder.step(tokens[t]), reference.step(tokens[t], spec), static_cast<int>(t), "mixed"));
  }
  EXPECT_EQ(decoder.cache_capacity(), 10);
  EXPECT_EQ(decoder.cache_size(), 10);
}

TEST(MixedPolicy, MemoryIsTheSumOfTheHeadsPolicies) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 61);
  toy::PolicySpec spec{toy::Policy::kMixed, 0, 0};
  spec.head_policies = toy::parse_head_policies("all: 4+28; layer 1 heads 1: 0+160", 2, 2);
  const std::size_t row_bytes = 2 * 8 * sizeof(float);  // K and V, head_dim 8
  EXPECT_EQ(toy::Decoder(weights, spec).cache_bytes(),
            static_cast<std::size_t>(toy::total_slots(spec.head_policies)) * row_bytes);
  // A uniform mixed policy is the sink policy, byte for byte.
  toy::PolicySpec uniform{toy::Policy::kMixed, 0, 0};
  uniform.head_policies = toy::parse_head_policies("all: 4+28", 2, 2);
  EXPECT_EQ(toy::Decoder(weights, uniform).cache_bytes(),
            toy::Decoder(weights, {toy::Policy::kSink, 4, 28}).cache_bytes());
  toy::Decoder a(weights, uniform), b(weights, {toy::Policy::kSink, 4, 28});
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(70, weights.config.vocab_size, 4);
  for (std::int32_t token : tokens) {
    const float* x = a.step(token);
    const std::vector<float> copy(x, x + weights.config.vocab_size);
    const float* y = b.step(token);
    for (int i = 0; i < weights.config.vocab_size; ++i) ASSERT_EQ(copy[static_cast<std::size_t>(i)], y[i]);
  }
}

TEST(MixedPolicy, BadSpecsAreErrors) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 61);
  toy::PolicySpec spec{toy::Policy::kMixed, 0, 0};
  EXPECT_THROW(toy::Decoder(weights, spec), toy::Error);             // no per-head policies
  spec.head_policies = toy::parse_head_policies("all: 4+28", 3, 2);  // 3 layers for a 2-layer model
  try {
    toy::Decoder decoder(weights, spec);
    FAIL() << "6 policies for 4 heads accepted";
  } catch (const toy::Error& e) {
    EXPECT_NE(std::string(e.what()).find("6 per-head policies for a model with 2 layers x 2 KV heads = 4"),
              std::string::npos)
        << e.what();
  }
  toy::PolicySpec sink{toy::Policy::kSink, 4, 28};
  sink.head_policies = toy::parse_head_policies("all: 4+28", 2, 2);
  EXPECT_THROW(toy::Decoder(weights, sink), toy::Error);  // per-head policies need mixed
  EXPECT_EQ(toy::parse_policy("mixed"), toy::Policy::kMixed);
}

}  // namespace

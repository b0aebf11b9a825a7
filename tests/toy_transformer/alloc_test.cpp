// The decode path allocates nothing: Decoder::step() under every policy,
// counted at malloc itself (operator new and Eigen's aligned_malloc both end
// there), after construction and a warm-up token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
// Last: it defines malloc & co. after the system headers declared them.
#include "../support/allocation_counter.hpp"

namespace {

using toy::Policy;

class NoAllocation : public ::testing::TestWithParam<toy::PolicySpec> {};

TEST_P(NoAllocation, DecoderStepAndSampling) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8, false), 37);
  toy::Decoder decoder(weights, GetParam());
  toy::Sampler sampler(weights.config.vocab_size, 0.8f, 0.9f, 1);
  int token = sampler.sample(decoder.step(1));  // warm-up
  if (!sinkkv::testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  // Make sure the counter works here at all.
  std::size_t before = sinkkv::testing::allocation_count;
  std::vector<int>* probe = new std::vector<int>(3);
  delete probe;
  ASSERT_GE(sinkkv::testing::allocation_count, before + 1) << "malloc interposition is not active";

  before = sinkkv::testing::allocation_count;
  for (int i = 0; i < 3 * GetParam().capacity() + 5; ++i) token = sampler.sample(decoder.step(token));
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << toy::policy_name(GetParam().policy);
}

// A decoder built for chunks, after a chunked prefill: decoding stays free
// of allocations (only the chunked products allocate, inside Eigen).
TEST_P(NoAllocation, DecoderStepAfterAChunkedPrefill) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8, false), 37);
  toy::Decoder decoder(weights, GetParam(), 8);
  toy::Sampler sampler(weights.config.vocab_size, 0.8f, 0.9f, 1);
  const std::vector<std::int32_t> prompt = toy_test::random_tokens(21, weights.config.vocab_size, 2);
  int token = sampler.sample(decoder.prefill(prompt.data(), prompt.size()));
  token = sampler.sample(decoder.step(token));  // warm-up
  if (!sinkkv::testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  const std::size_t before = sinkkv::testing::allocation_count;
  for (int i = 0; i < 3 * GetParam().capacity() + 5; ++i) token = sampler.sample(decoder.step(token));
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << toy::policy_name(GetParam().policy);
}

INSTANTIATE_TEST_SUITE_P(Policies, NoAllocation,
                         ::testing::Values(toy::PolicySpec{Policy::kDense, 0, 200}, toy::PolicySpec{Policy::kWindow, 0, 9},
                                           toy::PolicySpec{Policy::kSink, 4, 40},
                                           toy::PolicySpec{Policy::kRecompute, 0, 12},
                                           toy::PolicySpec{Policy::kWindowStream, 0, 9},
                                           toy::PolicySpec{Policy::kSinkStream, 4, 40}),
                         [](const ::testing::TestParamInfo<toy::PolicySpec>& info) {
                           std::string name = toy::policy_name(info.param.policy);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace

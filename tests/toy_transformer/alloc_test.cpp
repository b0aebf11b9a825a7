// The decode path allocates nothing: Decoder::step() under every policy, and
// a serving step (batched products, the pool, admission and release),
// counted at malloc itself (operator new and Eigen's aligned_malloc both end
// there), after construction and a warm-up step.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/serve.hpp"
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

// Serving: every step after the first (which lets Eigen read the cache
// sizes once) allocates nothing, prompt chunks, admissions and releases
// included, at the trained models' shape and a larger one, on one thread and
// on a pool. Eigen's products would malloc their packing buffers at these
// sizes (a [79, 128] x [128, 352] product does): the tiles keep them on the
// stack.
struct ServeShape {
  const char* name;
  toy::ModelConfig model;
  int streams;
  int threads;
};

class ServingNoAllocation : public ::testing::TestWithParam<ServeShape> {};

TEST_P(ServingNoAllocation, EveryStepAfterTheFirst) {
  const ServeShape& shape = GetParam();
  const toy::ModelWeights weights = toy::random_weights(shape.model, 5);
  toy::ServeConfig config;
  config.spec = toy::PolicySpec{Policy::kSink, 4, 60};
  config.streams = shape.streams;
  config.total = 2 * shape.streams;
  config.min_tokens = 2;
  config.max_tokens = 40;
  config.max_prompt = 40;
  config.prefill_chunk = 16;
  config.temperature = 0.8f;
  std::unique_ptr<sinkkv::ThreadPool> threads;
  if (shape.threads > 1) threads = std::make_unique<sinkkv::ThreadPool>(shape.threads - 1);
  toy::Server server(weights, config, toy::make_requests(config, weights.config.vocab_size), threads.get());
  ASSERT_TRUE(server.step());
  if (!sinkkv::testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  const std::size_t before = sinkkv::testing::allocation_count;
  server.run();
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u);
  EXPECT_EQ(server.stats().completed, config.total);
  EXPECT_GT(server.stats().most_rows, shape.streams) << "prompt chunks should have shared some steps";
}

toy::ModelConfig serve_shape(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
  toy::ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.seq_len = 256;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ServingNoAllocation,
    ::testing::Values(ServeShape{"trained_64_streams", serve_shape(128, 352, 6, 4, 2, 768), 64, 1},
                      ServeShape{"trained_64_streams_2_threads", serve_shape(128, 352, 6, 4, 2, 768), 64, 2},
                      ServeShape{"larger_8_streams_2_threads", serve_shape(512, 1408, 2, 8, 2, 4096), 8, 2}),
    [](const ::testing::TestParamInfo<ServeShape>& info) { return std::string(info.param.name); });

}  // namespace

// Chunked forward passes (Transformer::forward_chunk, Decoder::prefill and
// step_chunk, chunked recompute): against the same model fed one token at a
// time and against the double-precision reference, over random chunk splits
// that straddle the sink/window boundary and wrap the window ring.
//
// Tolerance, chunked vs token at a time (both float): the two differ only in
// summation order — matrix-matrix against matrix-vector products, and the
// attention's segments split at other places — so logits of order 1 agree
// to a few float ulps per layer; the largest difference seen on these
// shapes is about 1e-6. kChunkTolerance (|a - b| <= 1e-5 + 1e-5 |b|) leaves a
// margin of ~10 and is still 10^4 below what a key at a wrong position or a
// token seen twice does (O(0.1)).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"

namespace {

using toy::Policy;
using toy::PolicySpec;
using toy_test::logits_close;
using toy_test::ReferenceModel;

constexpr double kChunkTolerance = 1e-5;

/// |chunked - single| <= tol + tol * |single| for every logit; the message
/// names the token, the logit, both values and the case.
::testing::AssertionResult chunk_close(const float* chunked, const float* single, int vocab, std::size_t token,
                                       const std::string& what, double* worst) {
  for (int i = 0; i < vocab; ++i) {
    const double diff = std::abs(static_cast<double>(chunked[i]) - single[i]);
    *worst = std::max(*worst, diff);
    if (!(diff <= kChunkTolerance + kChunkTolerance * std::abs(static_cast<double>(single[i])))) {
      return ::testing::AssertionFailure() << what << ": token " << token << " logit " << i << " chunked " << chunked[i]
                                           << ", token at a time " << single[i] << " (|diff| " << diff << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

/// Chunk sizes 1..max_chunk covering `total` tokens, from a seeded generator.
std::vector<int> random_split(std::size_t total, int max_chunk, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<int> sizes;
  for (std::size_t done = 0; done < total;) {
    const int size = static_cast<int>(std::min<std::size_t>(total - done, 1 + random() % max_chunk));
    sizes.push_back(size);
    done += static_cast<std::size_t>(size);
  }
  return sizes;
}

/// A mixed policy for small_config's 2 layers: every KV head its own sinks
/// and window, one of them with no sinks.
PolicySpec mixed_spec(int num_kv_heads) {
  PolicySpec spec{Policy::kMixed, 0, 0};
  std::string text = "all: 2+5; layer 1: 0+7";
  if (num_kv_heads > 1) text += "; layer 0 heads 1: 1+3";
  spec.head_policies = toy::parse_head_policies(text, 2, num_kv_heads);
  return spec;
}

struct ChunkCase {
  int heads, kv_heads, head_dim;
  bool shared;
  PolicySpec spec;
  int max_chunk;
};

std::string describe(const ChunkCase& c) {
  std::ostringstream s;
  s << toy::policy_name(c.spec.policy) << "_";
  if (c.spec.policy == Policy::kMixed) {
    s << "perHead";
  } else {
    s << c.spec.num_sinks << "plus" << c.spec.window;
  }
  s << "_h" << c.heads << "kv" << c.kv_heads << "d" << c.head_dim << (c.shared ? "" : "_unshared") << "_chunk"
    << c.max_chunk;
  std::string name = s.str();
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class ChunkedDecoder : public ::testing::TestWithParam<ChunkCase> {};

// Every row of every chunk against the token-at-a-time decoder and against
// the double reference of the policy, for 3 x capacity + 7 tokens.
TEST_P(ChunkedDecoder, StepChunkEqualsStepAndTheReferenceAtEveryToken) {
  const ChunkCase& c = GetParam();
  const toy::ModelWeights weights =
      toy::random_weights(toy_test::small_config(c.heads, c.kv_heads, c.head_dim, c.shared), 41);
  const int vocab = weights.config.vocab_size;
  // Dense holds the whole stream; the others wrap their ring several times.
  const std::size_t total =
      static_cast<std::size_t>(c.spec.policy == Policy::kDense ? c.spec.window : 3 * c.spec.capacity() + 7);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(static_cast<int>(total), vocab, 12);
  toy::Decoder chunked(weights, c.spec, c.max_chunk);
  toy::Decoder single(weights, c.spec);
  ReferenceModel reference(weights);
  double worst = 0;
  std::size_t t = 0;
  for (int size : random_split(total, c.max_chunk, 99)) {
    const float* rows = chunked.step_chunk(tokens.data() + t, size);
    const std::vector<float> copy(rows, rows + static_cast<std::ptrdiff_t>(size) * vocab);
    for (int i = 0; i < size; ++i, ++t) {
      const float* expected = single.step(tokens[t]);
      const float* row = copy.data() + static_cast<std::ptrdiff_t>(i) * vocab;
      ASSERT_TRUE(chunk_close(row, expected, vocab, t, describe(c), &worst));
      ASSERT_TRUE(logits_close(row, reference.step(tokens[t], c.spec), static_cast<int>(t), describe(c)));
    }
  }
  EXPECT_EQ(chunked.tokens_seen(), total);
  EXPECT_EQ(chunked.cache_size(), single.cache_size());
  std::printf("[ chunk    ] %s: max |chunked - token at a time| %.2g\n", describe(c).c_str(), worst);
}

// A prompt prefilled in chunks, then greedy decoding token by token: the
// same logits as the prompt fed one token at a time, the same tokens.
TEST_P(ChunkedDecoder, PrefillThenDecodeEqualsTokenAtATime) {
  const ChunkCase& c = GetParam();
  const toy::ModelWeights weights =
      toy::random_weights(toy_test::small_config(c.heads, c.kv_heads, c.head_dim, c.shared), 43);
  const int vocab = weights.config.vocab_size;
  const int length = c.spec.policy == Policy::kDense ? c.spec.window - 24 : 2 * c.spec.capacity() + 3;
  const std::vector<std::int32_t> prompt = toy_test::random_tokens(length, vocab, 5);
  toy::Decoder chunked(weights, c.spec, c.max_chunk);
  toy::Decoder single(weights, c.spec);
  const float* a = chunked.prefill(prompt.data(), prompt.size());
  const float* b = nullptr;
  for (std::int32_t token : prompt) b = single.step(token);
  double worst = 0;
  for (int step = 0; step < 24; ++step) {
    ASSERT_TRUE(chunk_close(a, b, vocab, prompt.size() + static_cast<std::size_t>(step), describe(c), &worst));
    const int token = toy::Sampler::argmax(a, vocab);
    ASSERT_EQ(token, toy::Sampler::argmax(b, vocab)) << "decode step " << step;
    a = chunked.step(token);
    b = single.step(token);
  }
  EXPECT_EQ(chunked.tokens_seen(), single.tokens_seen());
}

const PolicySpec kDense{Policy::kDense, 0, 64};
const PolicySpec kWindow{Policy::kWindow, 0, 7};
const PolicySpec kSink{Policy::kSink, 2, 5};
const PolicySpec kNoSinks{Policy::kSink, 0, 4};
const PolicySpec kWindow1{Policy::kWindow, 0, 1};
const PolicySpec kSinkStream{Policy::kSinkStream, 2, 5};  // the baseline: sinks scored at stream positions

INSTANTIATE_TEST_SUITE_P(Policies, ChunkedDecoder,
                         ::testing::Values(ChunkCase{4, 2, 8, true, kDense, 16}, ChunkCase{4, 2, 8, true, kWindow, 3},
                                           ChunkCase{4, 2, 8, true, kSink, 8}, ChunkCase{4, 2, 8, true, kSink, 20},
                                           ChunkCase{4, 1, 8, true, kSink, 5}, ChunkCase{6, 3, 6, false, kSink, 7},
                                           ChunkCase{3, 1, 10, false, kNoSinks, 9},
                                           ChunkCase{4, 4, 8, true, kWindow1, 4},
                                           ChunkCase{4, 2, 8, true, kSinkStream, 6},
                                           ChunkCase{4, 2, 8, true, mixed_spec(2), 6},
                                           ChunkCase{6, 3, 6, false, mixed_spec(3), 13}),
                         [](const ::testing::TestParamInfo<ChunkCase>& info) { return describe(info.param); });

// Recompute's passes in chunks (one chunk of the whole window, or several)
// against the same passes token by token and against fresh reference passes.
TEST(ChunkedRecompute, PassesInChunksEqualTokenAtATime) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 47);
  const int vocab = weights.config.vocab_size, window = 9;
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(30, vocab, 7);
  for (int chunk : {window, 4, 64}) {
    toy::Decoder chunked(weights, {Policy::kRecompute, 0, window}, chunk);
    toy::Decoder single(weights, {Policy::kRecompute, 0, window});
    EXPECT_EQ(chunked.max_chunk(), std::min(chunk, window)) << "a pass never needs more than the window";
    double worst = 0;
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      const float* a = chunked.step(tokens[t]);
      const std::vector<float> copy(a, a + vocab);
      ASSERT_TRUE(chunk_close(copy.data(), single.step(tokens[t]), vocab, t, "recompute", &worst)) << chunk;
      const std::size_t first = t + 1 > static_cast<std::size_t>(window) ? t + 1 - window : 0;
      ASSERT_TRUE(logits_close(
          copy.data(),
          ReferenceModel::fresh(weights, std::vector<int>(tokens.begin() + static_cast<std::ptrdiff_t>(first),
                                                          tokens.begin() + static_cast<std::ptrdiff_t>(t) + 1)),
          static_cast<int>(t), "recompute chunk " + std::to_string(chunk)));
    }
  }
}

// Recompute's prefill keeps the ids and runs one pass: what stepping gives.
TEST(ChunkedRecompute, PrefillEqualsSteppingThroughThePrompt) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 47);
  const std::vector<std::int32_t> prompt = toy_test::random_tokens(20, weights.config.vocab_size, 3);
  toy::Decoder a(weights, {Policy::kRecompute, 0, 6}, 6);
  toy::Decoder b(weights, {Policy::kRecompute, 0, 6}, 6);
  const float* logits = a.prefill(prompt.data(), prompt.size());
  const std::vector<float> copy(logits, logits + weights.config.vocab_size);
  const float* expected = nullptr;
  for (std::int32_t token : prompt) expected = b.step(token);
  for (int i = 0; i < weights.config.vocab_size; ++i) ASSERT_EQ(copy[static_cast<std::size_t>(i)], expected[i]) << i;
  EXPECT_EQ(a.tokens_seen(), prompt.size());
  EXPECT_THROW(a.step_chunk(prompt.data(), 2), toy::Error);
}

// With max_chunk 1 a prefill is exactly the steps (the path is the same).
TEST(ChunkedDecoderBasics, PrefillWithChunkOneIsBitIdenticalToStepping) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 53);
  const std::vector<std::int32_t> prompt = toy_test::random_tokens(19, weights.config.vocab_size, 3);
  toy::Decoder a(weights, {Policy::kSink, 2, 5});
  toy::Decoder b(weights, {Policy::kSink, 2, 5});
  const float* logits = a.prefill(prompt.data(), prompt.size());
  const std::vector<float> copy(logits, logits + weights.config.vocab_size);
  const float* expected = nullptr;
  for (std::int32_t token : prompt) expected = b.step(token);
  for (int i = 0; i < weights.config.vocab_size; ++i) ASSERT_EQ(copy[static_cast<std::size_t>(i)], expected[i]) << i;
}

TEST(ChunkedDecoderBasics, BadChunksAreErrorsBeforeAnythingChanges) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 53);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(12, weights.config.vocab_size, 3);
  toy::Decoder decoder(weights, {Policy::kSink, 2, 5}, 4);
  const auto message = [&](auto&& call) {
    try {
      call();
    } catch (const toy::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { decoder.step_chunk(tokens.data(), 5); }).find("chunk of 5 tokens outside [1, max_chunk 4]"),
            std::string::npos);
  EXPECT_NE(message([&] { decoder.step_chunk(tokens.data(), 0); }).find("chunk of 0 tokens"), std::string::npos);
  const std::vector<std::int32_t> bad = {1, 2, 37};
  EXPECT_NE(message([&] { decoder.step_chunk(bad.data(), 3); }).find("token 37 (chunk row 2) outside [0, 37)"),
            std::string::npos);
  EXPECT_THROW(decoder.prefill(tokens.data(), 0), toy::Error);
  EXPECT_EQ(decoder.tokens_seen(), 0u);
  // Nothing was fed: the stream goes on as a fresh decoder's.
  toy::Decoder fresh(weights, {Policy::kSink, 2, 5});
  const float* a = decoder.prefill(tokens.data(), tokens.size());
  const std::vector<float> copy(a, a + weights.config.vocab_size);
  const float* b = fresh.prefill(tokens.data(), tokens.size());
  double worst = 0;
  EXPECT_TRUE(chunk_close(copy.data(), b, weights.config.vocab_size, tokens.size(), "after errors", &worst));
  EXPECT_THROW(toy::Decoder(weights, {Policy::kSink, 2, 5}, 0), toy::Error);
}

// The profile splits a pass into disjoint parts: each is counted, and they
// add up to no more than the wall time of the calls.
TEST(ChunkedDecoderBasics, ProfileCountsEveryPartOfThePass) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 53);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(40, weights.config.vocab_size, 3);
  for (int chunk : {1, 8}) {
    toy::Decoder decoder(weights, {Policy::kSink, 2, 5}, chunk);
    toy::ForwardProfile profile;
    decoder.model().set_profile(&profile);
    const auto start = std::chrono::steady_clock::now();
    decoder.prefill(tokens.data(), tokens.size());
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GT(profile.embedding_and_norms, 0) << chunk;
    EXPECT_GT(profile.projections, 0) << chunk;
    EXPECT_GT(profile.attention, 0) << chunk;
    EXPECT_GT(profile.classifier, 0) << chunk;
    EXPECT_LE(profile.total(), wall) << chunk;
  }
}

}  // namespace

// The committed trained models (models/, issue 5): they load, the C++
// forward pass through the sinkkv cache reproduces the PyTorch golden
// logits, greedy decoding is pinned, and the streaming results that
// docs/experiment.md established hold on a fixed held-out slice.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "toy/checkpoint.hpp"
#include "toy/eval.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/tokens.hpp"

namespace {

using toy::Policy;
using toy::PolicySpec;

std::string model_path(const std::string& model, const std::string& file) {
  return std::string(SINKKV_MODELS_DIR) + "/" + model + "/" + file;
}

// golden.bin: int32 T, int32 vocab, int32 tokens[T], float32 logits[T][vocab]
// (written by tools/train/golden.py with the PyTorch model).
struct Golden {
  std::vector<std::int32_t> tokens;
  std::vector<float> logits;  // [T, vocab]
  int vocab = 0;
};

Golden load_golden(const std::string& model) {
  std::ifstream in(model_path(model, "golden.bin"), std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << model_path(model, "golden.bin");
  std::int32_t count = 0;
  Golden golden;
  in.read(reinterpret_cast<char*>(&count), 4);
  in.read(reinterpret_cast<char*>(&golden.vocab), 4);
  EXPECT_TRUE(count > 0 && count <= 4096 && golden.vocab > 0 && golden.vocab <= 65536) << count << " " << golden.vocab;
  golden.tokens.resize(static_cast<std::size_t>(count));
  golden.logits.resize(static_cast<std::size_t>(count) * static_cast<std::size_t>(golden.vocab));
  in.read(reinterpret_cast<char*>(golden.tokens.data()), 4 * static_cast<std::streamsize>(golden.tokens.size()));
  in.read(reinterpret_cast<char*>(golden.logits.data()), 4 * static_cast<std::streamsize>(golden.logits.size()));
  EXPECT_TRUE(in) << "golden.bin of " << model << " is truncated";
  return golden;
}

std::vector<std::int32_t> heldout(const std::string& model, std::size_t count) {
  std::vector<std::int32_t> tokens = toy::read_tokens(model_path(model, "heldout.i32"), toy::TokenFormat::kBinary, 768);
  tokens.resize(std::min(tokens.size(), count));
  return tokens;
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

class TrainedModel : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainedModel, LoadsWithTheDocumentedShape) {
  const toy::ModelWeights weights = toy::load_checkpoint(model_path(GetParam(), "model.bin"));
  EXPECT_EQ(weights.config.dim, 128);
  EXPECT_EQ(weights.config.num_layers, 6);
  EXPECT_EQ(weights.config.num_heads, 4);
  EXPECT_EQ(weights.config.num_kv_heads, 2);
  EXPECT_EQ(weights.config.vocab_size, 768);
  EXPECT_EQ(toy::load_tokenizer(model_path(GetParam(), "tokenizer.bin"), 768).pieces.size(), 768u);
}

// Both a dense cache and a sink cache that has not evicted yet hold every
// token at its stream position, which is what PyTorch computed.
TEST_P(TrainedModel, ReproducesPyTorchGoldenLogitsThroughTheSinkCache) {
  const toy::ModelWeights weights = toy::load_checkpoint(model_path(GetParam(), "model.bin"));
  const Golden golden = load_golden(GetParam());
  ASSERT_EQ(golden.vocab, weights.config.vocab_size);
  for (const PolicySpec& spec : {PolicySpec{Policy::kDense, 0, 64}, PolicySpec{Policy::kSink, 4, 60}}) {
    toy::Decoder decoder(weights, spec);
    double worst = 0;
    for (std::size_t t = 0; t < golden.tokens.size(); ++t) {
      const float* logits = decoder.step(golden.tokens[t]);
      for (int v = 0; v < golden.vocab; ++v) {
        const double want = golden.logits[t * static_cast<std::size_t>(golden.vocab) + static_cast<std::size_t>(v)];
        worst = std::max(worst, std::abs(static_cast<double>(logits[v]) - want));
      }
    }
    std::printf("[ golden   ] %s, %s: max |C++ - PyTorch| logit difference %.3g over %zu positions\n",
                GetParam().c_str(), toy::policy_name(spec.policy), worst, golden.tokens.size());
    EXPECT_LT(worst, 1e-4) << toy::policy_name(spec.policy);
  }
}

// The 64 golden tokens fed as one chunk (one forward_chunk, every logit):
// the same PyTorch logits within the same 1e-4, and the token-at-a-time
// logits within 1e-5 + 2e-6 max_v |logit_v| of the position. The bound
// scales with the position's largest logit, not with each logit: a
// logit's rounding error is of the order of eps |W_v| |h| for the whole
// row (the chunk and the decode kernels sum attention in different
// orders), so a logit near zero carries as much absolute error as a large
// one (seen: 1.07e-5 on a logit of magnitude 0.02).
TEST_P(TrainedModel, ReproducesPyTorchGoldenLogitsFedAsOneChunk) {
  const toy::ModelWeights weights = toy::load_checkpoint(model_path(GetParam(), "model.bin"));
  const Golden golden = load_golden(GetParam());
  const int vocab = golden.vocab;
  const int count = static_cast<int>(golden.tokens.size());
  for (const PolicySpec& spec : {PolicySpec{Policy::kDense, 0, 64}, PolicySpec{Policy::kSink, 4, 60}}) {
    toy::Decoder chunked(weights, spec, count);
    const float* rows = chunked.step_chunk(golden.tokens.data(), count);
    toy::Decoder single(weights, spec);
    double worst = 0, worst_vs_single = 0;
    for (int t = 0; t < count; ++t) {
      const float* expected = single.step(golden.tokens[static_cast<std::size_t>(t)]);
      double largest = 0;
      for (int v = 0; v < vocab; ++v) largest = std::max(largest, std::abs(static_cast<double>(expected[v])));
      for (int v = 0; v < vocab; ++v) {
        const double got = rows[static_cast<std::ptrdiff_t>(t) * vocab + v];
        const double want =
            golden.logits[static_cast<std::size_t>(t) * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(v)];
        worst = std::max(worst, std::abs(got - want));
        const double diff = std::abs(got - static_cast<double>(expected[v]));
        worst_vs_single = std::max(worst_vs_single, diff);
        ASSERT_LE(diff, 1e-5 + 2e-6 * largest)
            << toy::policy_name(spec.policy) << " position " << t << " logit " << v;
      }
    }
    std::printf("[ golden   ] %s, %s, one chunk of %d: max |C++ - PyTorch| %.3g, max |chunk - token at a time| %.3g\n",
                GetParam().c_str(), toy::policy_name(spec.policy), count, worst, worst_vs_single);
    EXPECT_LT(worst, 1e-4) << toy::policy_name(spec.policy);
  }
}

INSTANTIATE_TEST_SUITE_P(Committed, TrainedModel, ::testing::Values("vanilla", "sink_token"));

// Greedy continuation of the first 16 held-out tokens through a 4 + 28 sink
// cache (so it evicts), pinned. Regenerate with --gtest_also_run_disabled_tests
// only after a deliberate model change.
std::vector<int> greedy(const std::string& model, int count) {
  const toy::ModelWeights weights = toy::load_checkpoint(model_path(model, "model.bin"));
  toy::Decoder decoder(weights, PolicySpec{Policy::kSink, 4, 28});
  const std::vector<std::int32_t> prompt = heldout(model, 16);
  const float* logits = nullptr;
  for (std::int32_t token : prompt) logits = decoder.step(token);
  std::vector<int> generated;
  for (int i = 0; i < count; ++i) {
    generated.push_back(toy::Sampler::argmax(logits, weights.config.vocab_size));
    logits = decoder.step(generated.back());
  }
  return generated;
}

TEST(TrainedModelGreedy, VanillaGreedyDecodeIsPinned) {
  EXPECT_EQ(greedy("vanilla", 48),
            (std::vector<int>{44,  267, 288, 258, 434, 268, 258, 307, 98,  98,  627, 115, 44,  267, 288, 258,
                              317, 483, 112, 328, 268, 258, 337, 44,  267, 288, 258, 275, 704, 268, 258, 337,
                              44,  267, 288, 258, 279, 294, 538, 268, 258, 279, 480, 269, 103, 453, 44,  267}));
}

TEST(TrainedModelGreedy, SinkTokenGreedyDecodeIsPinned) {
  EXPECT_EQ(greedy("sink_token", 48),
            (std::vector<int>{391, 46,  10,  657, 297, 258, 337, 384, 319, 683, 44,  365, 112, 292, 107, 319,
                              258, 491, 268, 430, 44,  544, 44,  10,  675, 342, 399, 562, 258, 337, 59,  295,
                              102, 295, 398, 416, 277, 258, 646, 119, 268, 258, 337, 44,  267, 398, 317, 604}));
}

TEST(TrainedModelGreedy, DISABLED_PrintGreedyDecodes) {
  for (const char* model : {"vanilla", "sink_token"}) {
    std::printf("%s:", model);
    for (int token : greedy(model, 48)) std::printf(" %d,", token);
    std::printf("\n");
  }
}

// ---- streaming on a fixed held-out slice ------------------------------------
// 1,024 held-out tokens (4x the training length) through a 32-token cache.
// The assertions state what docs/experiment.md found on 8,192 tokens, with
// margins a few times the differences seen there; a library regression in
// positions or eviction moves these numbers by far more.
struct SliceResult {
  double window, sink1, sink4, sink4_stream_positions, recompute;
};

const SliceResult& stream_slice(const std::string& model) {
  static std::map<std::string, SliceResult> memo;
  auto found = memo.find(model);
  if (found != memo.end()) return found->second;
  const toy::ModelWeights weights = toy::load_checkpoint(model_path(model, "model.bin"));
  const std::vector<std::int32_t> tokens = heldout(model, 1024);
  SliceResult r{};
  r.window = mean(toy::stream_nll(weights, PolicySpec{Policy::kWindow, 0, 32}, tokens));
  r.sink1 = mean(toy::stream_nll(weights, PolicySpec{Policy::kSink, 1, 31}, tokens));
  r.sink4 = mean(toy::stream_nll(weights, PolicySpec{Policy::kSink, 4, 28}, tokens));
  r.sink4_stream_positions = mean(toy::stream_nll(weights, PolicySpec{Policy::kSinkStream, 4, 28}, tokens));
  r.recompute = mean(toy::recompute_nll(weights, 32, tokens, 0, SIZE_MAX, 2));
  std::printf("[ stream   ] %s, 1024 tokens, L=32, mean NLL: window %.4f, sink 1 %.4f, sink 4 %.4f, "
              "sink 4 at stream positions %.4f, recompute %.4f\n",
              model.c_str(), r.window, r.sink1, r.sink4, r.sink4_stream_positions, r.recompute);
  return memo.emplace(model, r).first->second;
}

constexpr double kSinkMargin = 0.05;  // nats/token between sink and recompute

TEST(TrainedModelStreaming, VanillaSinkCacheStaysWithinMarginOfRecompute) {
  const SliceResult& r = stream_slice("vanilla");
  EXPECT_LT(std::abs(r.sink4 - r.recompute), kSinkMargin);
}

TEST(TrainedModelStreaming, SinkTokenModelWithItsOneSinkStaysWithinMarginOfRecompute) {
  const SliceResult& r = stream_slice("sink_token");
  EXPECT_LT(std::abs(r.sink1 - r.recompute), kSinkMargin);
}

// At this scale the vanilla model formed no sink heads, and evicting the
// first tokens costs nothing: window attention matches recompute.
TEST(TrainedModelStreaming, VanillaWindowAttentionDoesNotCollapse) {
  const SliceResult& r = stream_slice("vanilla");
  EXPECT_LT(r.window - r.recompute, 0.02);
}

// The model trained with a dedicated sink token does best keeping exactly
// that one token: better than the plain window, and better than spending
// three more slots on initial text.
TEST(TrainedModelStreaming, SinkTokenModelGainsFromItsOneSinkAndNeedsNoMore) {
  const SliceResult& r = stream_slice("sink_token");
  EXPECT_LT(r.sink1, r.window - 0.008);
  EXPECT_LT(r.sink1, r.sink4 - 0.02);
}

// Re-positioning inside the cache is what keeps query-key distances in the
// range the model was trained on: the same cache at stream positions is far
// worse.
TEST(TrainedModelStreaming, CacheRelativePositionsBeatStreamPositions) {
  for (const char* model : {"vanilla", "sink_token"}) {
    const SliceResult& r = stream_slice(model);
    EXPECT_GT(r.sink4_stream_positions, r.sink4 + 0.1) << model;
  }
}

}  // namespace

// The pieces of sinkkv-eval: per-token NLL under each policy against the
// reference, the attention-mass probe against reference softmax weights,
// and the CSV / table / SVG writers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/eval.hpp"
#include "toy/sampler.hpp"

namespace {

using toy::Policy;
using toy::PolicySpec;
using toy_test::ReferenceModel;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string temp_path(const std::string& tag) {
  return ::testing::TempDir() + "toy_eval_" + tag + "_" + std::to_string(::getpid());
}

double reference_nll(const std::vector<double>& logits, int target) {
  double max_logit = -1e300, sum = 0;
  for (double l : logits) max_logit = std::max(max_logit, l);
  for (double l : logits) sum += std::exp(l - max_logit);
  return max_logit + std::log(sum) - logits[static_cast<std::size_t>(target)];
}

TEST(Nll, IsMinusLogSoftmax) {
  const std::vector<float> logits = {1.0f, -2.0f, 3.5f, 0.0f};
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  for (int target = 0; target < 4; ++target) {
    EXPECT_NEAR(toy::negative_log_likelihood(logits.data(), 4, target),
                -std::log(std::exp(static_cast<double>(logits[static_cast<std::size_t>(target)])) / z), 1e-12);
  }
  const std::vector<float> huge = {1000.0f, 0.0f};  // no overflow
  EXPECT_NEAR(toy::negative_log_likelihood(huge.data(), 2, 1), 1000.0, 1e-9);
}

class StreamNll : public ::testing::TestWithParam<PolicySpec> {};

TEST_P(StreamNll, EqualsReferenceNllAtEveryPosition) {
  const PolicySpec spec = GetParam();
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 23);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(30, weights.config.vocab_size, 8);
  const std::vector<double> nll = toy::stream_nll(weights, spec, tokens);
  ASSERT_EQ(nll.size(), tokens.size() - 1);
  ReferenceModel reference(weights);
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
    std::vector<double> logits;
    if (spec.policy == Policy::kRecompute) {
      const std::size_t first = i + 1 > static_cast<std::size_t>(spec.window) ? i + 1 - spec.window : 0;
      logits = ReferenceModel::fresh(weights, std::vector<int>(tokens.begin() + static_cast<std::ptrdiff_t>(first),
                                                               tokens.begin() + static_cast<std::ptrdiff_t>(i) + 1));
    } else {
      logits = reference.step(tokens[i], spec);
    }
    const double expected = reference_nll(logits, tokens[i + 1]);
    EXPECT_NEAR(nll[i], expected, 1e-4 * (1 + expected)) << toy::policy_name(spec.policy) << " position " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, StreamNll,
                         ::testing::Values(PolicySpec{Policy::kDense, 0, 30}, PolicySpec{Policy::kWindow, 0, 6},
                                           PolicySpec{Policy::kSink, 2, 4}, PolicySpec{Policy::kRecompute, 0, 6},
                                           PolicySpec{Policy::kWindowStream, 0, 6},
                                           PolicySpec{Policy::kSinkStream, 2, 4}),
                         [](const ::testing::TestParamInfo<PolicySpec>& info) {
                           std::string name = toy::policy_name(info.param.policy);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(StreamNll, LimitScoresOnlyTheFirstPredictions) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 23);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(20, weights.config.vocab_size, 8);
  const PolicySpec spec{Policy::kRecompute, 0, 5};
  const std::vector<double> all = toy::stream_nll(weights, spec, tokens);
  const std::vector<double> some = toy::stream_nll(weights, spec, tokens, 7);
  ASSERT_EQ(some.size(), 7u);
  for (std::size_t i = 0; i < some.size(); ++i) EXPECT_EQ(some[i], all[i]);
}

TEST(StreamNll, RecomputeOnThreadsIsIdenticalToTheSequentialDecoder) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 23);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(41, weights.config.vocab_size, 8);
  const std::vector<double> sequential = toy::stream_nll(weights, {Policy::kRecompute, 0, 6}, tokens);
  for (int threads : {1, 2, 3, 7}) {
    std::size_t reports = 0;
    const toy::ProgressFn count = [&](std::size_t, std::size_t, int, int) { ++reports; };
    EXPECT_EQ(toy::recompute_nll(weights, 6, tokens, 0, SIZE_MAX, threads, count), sequential)
        << threads << " threads";
    EXPECT_GE(reports, 1u);
  }
  EXPECT_EQ(toy::recompute_nll(weights, 6, tokens, 0, 11, 2),
            std::vector<double>(sequential.begin(), sequential.begin() + 11));
  // A range late in the stream: the same numbers as the sequential decoder's there.
  EXPECT_EQ(toy::recompute_nll(weights, 6, tokens, 23, 31, 2),
            std::vector<double>(sequential.begin() + 23, sequential.begin() + 31));
  EXPECT_EQ(toy::recompute_nll(weights, 6, tokens, 35, 1000, 3),
            std::vector<double>(sequential.begin() + 35, sequential.end()));
  EXPECT_TRUE(toy::recompute_nll(weights, 6, tokens, 40, 1000, 2).empty());
}

class AttentionMassChunks : public ::testing::TestWithParam<int> {};

// Scored token by token or in chunks (cut at the probe's range), the probe
// sees the same queries and weights.
TEST_P(AttentionMassChunks, MatchesReferenceSoftmaxWeightsOnCachePositions) {
  // A sink cache past eviction: positions 0..1 are the sinks, 2..3 the
  // oldest window tokens; the probe must map segments to cache positions.
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 29);
  const toy::ModelConfig& c = weights.config;
  const PolicySpec spec{Policy::kSink, 2, 5};
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(26, c.vocab_size, 2);
  const std::size_t begin = 4, end = 20;  // queries before and after the cache fills (capacity 7)
  const int far_distance = 3;
  toy::AttentionMass mass(c.num_layers, c.num_heads, spec.num_sinks, far_distance);
  toy::stream_nll(weights, spec, tokens, SIZE_MAX, {}, &mass, begin, end, GetParam());

  ReferenceModel reference(weights);
  std::vector<double> expected(static_cast<std::size_t>(c.num_layers * c.num_heads * 4), 0.0);
  std::vector<double> far(static_cast<std::size_t>(c.num_layers * c.num_heads), 0.0);
  double uniform = 0;
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
    std::vector<std::vector<std::vector<double>>> w;
    reference.step(tokens[i], spec, &w);
    if (i < begin || i >= end) continue;
    uniform += 1.0 / static_cast<double>(w[0][0].size());
    for (int l = 0; l < c.num_layers; ++l) {
      for (int h = 0; h < c.num_heads; ++h) {
        const std::vector<double>& weights_of_head = w[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
        for (int p = 0; p < 4; ++p) {
          expected[static_cast<std::size_t>((l * c.num_heads + h) * 4 + p)] +=
              weights_of_head[static_cast<std::size_t>(p)];
        }
        // Cache position p is (tokens held - 1 - p) behind the query; the sinks do not count.
        const int held = static_cast<int>(weights_of_head.size());
        for (int p = spec.num_sinks; p < held; ++p) {
          if (held - 1 - p >= far_distance)
            far[static_cast<std::size_t>(l * c.num_heads + h)] += weights_of_head[static_cast<std::size_t>(p)];
        }
      }
    }
  }
  const double queries = static_cast<double>(end - begin);
  for (int l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(mass.queries(l), end - begin);
    EXPECT_NEAR(mass.average_position(l), uniform / queries, 1e-12);
    for (int h = 0; h < c.num_heads; ++h) {
      for (int p = 0; p < 4; ++p) {
        EXPECT_NEAR(mass.mass(l, h, p), expected[static_cast<std::size_t>((l * c.num_heads + h) * 4 + p)] / queries, 2e-5)
            << "layer " << l << " head " << h << " position " << p;
      }
      EXPECT_NEAR(mass.far_mass(l, h), far[static_cast<std::size_t>(l * c.num_heads + h)] / queries, 2e-5)
          << "layer " << l << " head " << h;
    }
  }
  const std::vector<double> per_kv_head = mass.kv_head_far_mass(c.num_kv_heads);
  ASSERT_EQ(per_kv_head.size(), static_cast<std::size_t>(c.num_layers * c.num_kv_heads));
  EXPECT_NEAR(per_kv_head[1], (mass.far_mass(0, 2) + mass.far_mass(0, 3)) / 2, 1e-12);
  EXPECT_GT(per_kv_head[1], 0.0);
  const std::string csv = temp_path("mass.csv");
  const std::string table = mass.report(csv);
  EXPECT_NE(table.find("pos0/avg    far>=3"), std::string::npos) << table;
  const std::string text = slurp(csv);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1 + c.num_layers * c.num_heads);
  EXPECT_NE(text.find(",far_distance,far_mass\n"), std::string::npos);
  std::remove(csv.c_str());
}

INSTANTIATE_TEST_SUITE_P(Chunks, AttentionMassChunks, ::testing::Values(1, 3, 64),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "chunk" + std::to_string(info.param);
                         });

// Scoring in chunks (every policy that allows it) gives the NLLs of scoring
// token by token, within float rounding; recompute's chunked passes too.
class ChunkedStreamNll : public ::testing::TestWithParam<PolicySpec> {};

TEST_P(ChunkedStreamNll, EqualsTokenAtATime) {
  const PolicySpec& spec = GetParam();
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 23);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(70, weights.config.vocab_size, 8);
  const std::vector<double> single = toy::stream_nll(weights, spec, tokens);
  for (int chunk : {4, 16, 256}) {
    const std::vector<double> chunked =
        spec.policy == Policy::kRecompute ? toy::recompute_nll(weights, spec.window, tokens, 0, SIZE_MAX, 2, {}, chunk)
                                          : toy::stream_nll(weights, spec, tokens, SIZE_MAX, {}, nullptr, 0, 0, chunk);
    ASSERT_EQ(chunked.size(), single.size());
    for (std::size_t i = 0; i < single.size(); ++i) {
      EXPECT_NEAR(chunked[i], single[i], 2e-5)
          << toy::policy_name(spec.policy) << " chunk " << chunk << " position " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, ChunkedStreamNll,
                         ::testing::Values(PolicySpec{Policy::kDense, 0, 70}, PolicySpec{Policy::kWindow, 0, 6},
                                           PolicySpec{Policy::kSink, 2, 4}, PolicySpec{Policy::kRecompute, 0, 6},
                                           PolicySpec{Policy::kSinkStream, 2, 4}),
                         [](const ::testing::TestParamInfo<PolicySpec>& info) {
                           std::string name = toy::policy_name(info.param.policy);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(AttentionMass, RecomputeRecordsOnlyTheNewestTokenOfEachPass) {
  // While the stream is shorter than L, recompute attends exactly like dense.
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 29);
  const std::vector<std::int32_t> tokens = toy_test::random_tokens(20, weights.config.vocab_size, 6);
  toy::AttentionMass dense(weights.config.num_layers, weights.config.num_heads);
  toy::AttentionMass recompute(weights.config.num_layers, weights.config.num_heads);
  toy::stream_nll(weights, {Policy::kDense, 0, 20}, tokens, SIZE_MAX, {}, &dense, 5, 15);
  toy::stream_nll(weights, {Policy::kRecompute, 0, 32}, tokens, SIZE_MAX, {}, &recompute, 5, 15);
  for (int l = 0; l < weights.config.num_layers; ++l) {
    EXPECT_EQ(recompute.queries(l), 10u);
    for (int h = 0; h < weights.config.num_heads; ++h) {
      for (int p = 0; p < 4; ++p) EXPECT_NEAR(recompute.mass(l, h, p), dense.mass(l, h, p), 1e-6);
    }
  }
}

TEST(Summaries, PerplexityAndMovingAverage) {
  const std::vector<double> nll = {1.0, 2.0, 3.0, 4.0};
  EXPECT_DOUBLE_EQ(toy::perplexity(nll, 0, 4), std::exp(2.5));
  EXPECT_DOUBLE_EQ(toy::perplexity(nll, 2, 100), std::exp(3.5));
  EXPECT_TRUE(std::isnan(toy::perplexity(nll, 4, 8)));
  EXPECT_EQ(toy::moving_average(nll, 2), (std::vector<double>{1.0, 1.5, 2.5, 3.5}));
  EXPECT_EQ(toy::moving_average(nll, 10), (std::vector<double>{1.0, 1.5, 2.0, 2.5}));
}

TEST(Writers, CsvTableAndSvg) {
  const std::vector<std::int32_t> tokens = {5, 6, 7, 8, 9};
  std::vector<toy::PolicyRun> runs(2);
  runs[0].name = "sink";
  runs[0].nll = {0.5, 1.0, 1.5, 2.0};
  runs[1].name = "recompute";
  runs[1].nll = {0.25, 0.75};  // --limit 2
  const std::string csv = temp_path("nll.csv");
  toy::write_nll_csv(csv, tokens, runs);
  EXPECT_EQ(slurp(csv),
            "position,token,sink,recompute\n1,6,0.500000,0.250000\n2,7,1.000000,0.750000\n3,8,1.500000,\n"
            "4,9,2.000000,\n");

  const std::string chunks = temp_path("chunks.csv");
  const std::string table = toy::chunk_table(runs, 4, 2, chunks);
  EXPECT_NE(table.find("n/a"), std::string::npos) << table;
  char row[128];
  std::snprintf(row, sizeof row, "1,2,%.6f,%.6f\n3,4,%.6f,\n", std::exp(0.75), std::exp(0.5), std::exp(1.75));
  EXPECT_EQ(slurp(chunks), std::string("first,last,sink,recompute\n") + row);

  const std::string svg = temp_path("plot.svg");
  toy::write_svg_plot(svg, runs, 2, 3, "a<b & c");
  const std::string text = slurp(svg);
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("</svg>"), std::string::npos);
  EXPECT_NE(text.find("data-policy=\"sink\""), std::string::npos);
  EXPECT_NE(text.find("data-policy=\"recompute\""), std::string::npos);
  EXPECT_NE(text.find("L = 3"), std::string::npos);
  EXPECT_NE(text.find(">a&lt;b &amp; c</text>"), std::string::npos) << "the title is escaped";
  for (const std::string& path : {csv, chunks, svg}) std::remove(path.c_str());
}

// --recompute-range: a run that starts later in the stream is written at its
// own positions in the CSV, the chunk table and the plot.
TEST(Writers, ARunScoredOnALaterRangeSitsAtItsPositions) {
  const std::vector<std::int32_t> tokens = {5, 6, 7, 8, 9};
  std::vector<toy::PolicyRun> runs(2);
  runs[0].name = "sink";
  runs[0].nll = {0.5, 1.0, 1.5, 2.0};
  runs[1].name = "recompute";
  runs[1].nll = {0.25, 0.75};  // predictions 2 and 3: positions 3 and 4
  runs[1].first = 2;
  EXPECT_EQ(runs[1].end(), 4u);
  EXPECT_DOUBLE_EQ(runs[1].perplexity_within(0, 4), std::exp(0.5));
  EXPECT_DOUBLE_EQ(runs[1].perplexity_within(3, 4), std::exp(0.75));
  EXPECT_TRUE(std::isnan(runs[1].perplexity_within(0, 2)));

  const std::string csv = temp_path("later_nll.csv");
  toy::write_nll_csv(csv, tokens, runs);
  EXPECT_EQ(slurp(csv),
            "position,token,sink,recompute\n1,6,0.500000,\n2,7,1.000000,\n3,8,1.500000,0.250000\n"
            "4,9,2.000000,0.750000\n");
  const std::string chunks = temp_path("later_chunks.csv");
  toy::chunk_table(runs, 4, 2, chunks);
  char row[128];
  std::snprintf(row, sizeof row, "1,2,%.6f,\n3,4,%.6f,%.6f\n", std::exp(0.75), std::exp(1.75), std::exp(0.5));
  EXPECT_EQ(slurp(chunks), std::string("first,last,sink,recompute\n") + row);

  const std::string svg = temp_path("later_plot.svg");
  toy::write_svg_plot(svg, runs, 1, 0, "later");
  // x = 70 + 720 * position / 4: the recompute line starts at position 3.
  const std::string text = slurp(svg);
  EXPECT_NE(text.find("data-policy=\"recompute\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" "
                      "points=\"610.0,"),
            std::string::npos)
      << text;
  for (const std::string& path : {csv, chunks, svg}) std::remove(path.c_str());
}

TEST(Generate, SeededStreamIsReproducibleAndInVocabulary) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 31);
  const PolicySpec spec{Policy::kSink, 2, 6};
  toy::Sampler a(weights.config.vocab_size, 1.0f, 0.95f, 77), b(weights.config.vocab_size, 1.0f, 0.95f, 77);
  const std::vector<std::int32_t> first = toy::generate_stream(weights, spec, 50, 3, a);
  const std::vector<std::int32_t> second = toy::generate_stream(weights, spec, 50, 3, b);
  EXPECT_EQ(first, second);
  ASSERT_EQ(first.size(), 50u);
  EXPECT_EQ(first[0], 3);
  for (std::int32_t t : first) EXPECT_TRUE(t >= 0 && t < weights.config.vocab_size) << t;
}

}  // namespace

// Serving (toy/batch.hpp, toy/serve.hpp): streams decoded in lock-step with
// batched products and batched attention over one SequencePool, against each
// stream decoded alone by a toy::Decoder over its own SinkKVCache; the pool's
// budget, admission and page reuse; the tiled products against a plain loop.
//
// Tolerance, served vs alone (both float): the attention is the same
// arithmetic (CpuKernel over the same rows: a pool sequence equals a
// SinkKVCache bit for bit with the same kernel), so the two differ only in
// the products' summation order — matrix-matrix tiles over the batch against
// matrix-vector products (and the alone decoder's prompt chunks, cut
// elsewhere). That is the difference chunk_test bounds, and the same
// kServeTolerance (|a - b| <= 1e-5 + 1e-5 |b|) applies; the largest
// difference seen on these cases is printed by each test (about 1e-6). A
// token must then be the one the alone decoder picks from its own logits with
// its own sampler, except at a near tie: greedy steps whose two best logits
// are within 2 x the tolerance could go either way and are counted (none
// happen in these cases; the test fails if more than 1% do). Seeded sampling
// allows no exception.
#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <cmath>
#include <cstdint>
#include <map>
#include <ostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_model.hpp"
#include "toy/batch.hpp"
#include "toy/head_policy.hpp"
#include "toy/model.hpp"
#include "toy/sampler.hpp"
#include "toy/serve.hpp"

namespace {

using toy::Policy;
using toy::PolicySpec;

constexpr double kServeTolerance = 1e-5;

/// Every token and its logits, per request.
class Recorder final : public toy::ServeObserver {
 public:
  explicit Recorder(int vocab) : vocab_(vocab) {}
  void on_token(const toy::ServeRequest& request, int position, int token, const float* logits) override {
    Record& r = records[request.index];
    EXPECT_EQ(position, static_cast<int>(r.tokens.size())) << "request " << request.index;
    EXPECT_FALSE(r.finished) << "request " << request.index << " got a token after it finished";
    r.tokens.push_back(token);
    r.logits.emplace_back(logits, logits + vocab_);
  }
  void on_finish(const toy::ServeRequest& request) override { records[request.index].finished = true; }

  struct Record {
    std::vector<int> tokens;
    std::vector<std::vector<float>> logits;
    bool finished = false;
  };
  std::map<int, Record> records;

 private:
  int vocab_;
};

/// What `request` gets decoded alone: a Decoder over a SinkKVCache (the
/// serving policy; dense as a window holding the whole request), its prompt
/// prefilled in chunks, then one token at a time.
struct AloneResult {
  double worst = 0;  // largest |served - alone| logit difference
  int near_ties = 0;
  int tokens = 0;
};

void expect_matches_alone(const toy::ModelWeights& weights, const toy::ServeConfig& config,
                          const std::vector<toy::ServeRequest>& requests, const Recorder& recorder,
                          AloneResult* result) {
  const int vocab = weights.config.vocab_size;
  for (const toy::ServeRequest& request : requests) {
    const auto found = recorder.records.find(request.index);
    ASSERT_NE(found, recorder.records.end()) << "request " << request.index << " was never served";
    const Recorder::Record& served = found->second;
    ASSERT_TRUE(served.finished) << "request " << request.index;
    ASSERT_EQ(static_cast<int>(served.tokens.size()), request.tokens) << "request " << request.index;
    PolicySpec spec = config.spec;
    if (spec.policy == Policy::kDense) spec.window = static_cast<int>(request.cached_tokens());
    toy::Decoder alone(weights, spec,
                       std::max(1, std::min(config.prefill_chunk, static_cast<int>(request.inputs.size()))));
    toy::Sampler sampler(vocab, config.temperature, config.top_p, request.seed);
    const float* logits = alone.prefill(request.inputs.data(), request.inputs.size());
    for (int k = 0; k < request.tokens; ++k) {
      const std::vector<float>& got = served.logits[static_cast<std::size_t>(k)];
      for (int i = 0; i < vocab; ++i) {
        const double diff = std::abs(static_cast<double>(got[static_cast<std::size_t>(i)]) - logits[i]);
        result->worst = std::max(result->worst, diff);
        ASSERT_LE(diff, kServeTolerance + kServeTolerance * std::abs(static_cast<double>(logits[i])))
            << "request " << request.index << " token " << k << " logit " << i << ": served "
            << got[static_cast<std::size_t>(i)] << ", alone " << logits[i];
      }
      const int own = sampler.sample(logits);
      const int token = served.tokens[static_cast<std::size_t>(k)];
      ++result->tokens;
      if (own != token) {
        std::vector<float> sorted(logits, logits + vocab);
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
        const bool near_tie = config.temperature == 0 &&
                              sorted[0] - sorted[1] <= 2 * (kServeTolerance + kServeTolerance * std::abs(sorted[0]));
        ASSERT_TRUE(near_tie) << "request " << request.index << " token " << k << ": served " << token
                              << ", decoded alone " << own;
        ++result->near_ties;
      }
      if (k + 1 < request.tokens) logits = alone.step(token);  // the served stream goes on
    }
  }
}

struct ServeCase {
  const char* name;
  int heads, kv_heads;
  PolicySpec spec;
  float temperature;
  int streams, total, min_tokens, max_tokens, min_prompt, max_prompt, prefill_chunk, page_tokens;
};

void PrintTo(const ServeCase& c, std::ostream* out) { *out << c.name; }

toy::ServeConfig serve_config(const ServeCase& c) {
  toy::ServeConfig config;
  config.spec = c.spec;
  config.streams = c.streams;
  config.total = c.total;
  config.min_tokens = c.min_tokens;
  config.max_tokens = c.max_tokens;
  config.min_prompt = c.min_prompt;
  config.max_prompt = c.max_prompt;
  config.temperature = c.temperature;
  config.top_p = 0.9f;
  config.seed = 5;
  config.start_token = 3;
  config.prefill_chunk = c.prefill_chunk;
  config.page_tokens = c.page_tokens;
  return config;
}

PolicySpec mixed_spec() {
  PolicySpec spec{Policy::kMixed, 0, 0};
  spec.head_policies = toy::parse_head_policies("all: 2+13; layer 1: 0+21; layer 0 heads 1: 1+6", 2, 2);
  return spec;
}

class ServedStreams : public ::testing::TestWithParam<ServeCase> {};

// Streams of random lengths (prompts of 0..20 tokens in chunks beside the
// others' decode tokens, then 20..150 generated, past several wraps of the
// window) arrive and finish while others run: each gets the tokens, and
// within kServeTolerance the logits, it gets alone.
TEST_P(ServedStreams, EachStreamGetsWhatItGetsDecodedAlone) {
  const ServeCase& c = GetParam();
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(c.heads, c.kv_heads, 8), 61);
  const toy::ServeConfig config = serve_config(c);
  const std::vector<toy::ServeRequest> requests = toy::make_requests(config, weights.config.vocab_size);
  toy::Server server(weights, config, requests);
  Recorder recorder(weights.config.vocab_size);
  server.run(&recorder);
  EXPECT_EQ(server.stats().completed, c.total);
  EXPECT_EQ(server.stats().most_in_flight, c.streams);
  AloneResult result;
  expect_matches_alone(weights, server.config(), requests, recorder, &result);
  EXPECT_LE(result.near_ties * 100, result.tokens)
      << result.near_ties << " near ties in " << result.tokens << " tokens";
  std::printf("[ %s ] %d tokens, largest logit difference %.2g, %d near ties\n", c.name, result.tokens, result.worst,
              result.near_ties);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, ServedStreams,
    ::testing::Values(
        ServeCase{"sink_greedy", 4, 2, PolicySpec{Policy::kSink, 4, 28}, 0.0f, 5, 12, 20, 150, 0, 20, 8, 8},
        ServeCase{"sink_sampled_gqa4", 4, 1, PolicySpec{Policy::kSink, 2, 30}, 0.9f, 4, 10, 20, 150, 0, 12, 5, 4},
        ServeCase{"window_one_token_prompts", 2, 2, PolicySpec{Policy::kWindow, 0, 17}, 0.0f, 6, 14, 10, 90, 0, 0, 16,
                  16},
        ServeCase{"dense", 4, 2, PolicySpec{Policy::kDense, 0, 1}, 0.8f, 3, 7, 10, 60, 0, 9, 4, 8},
        ServeCase{"mixed_per_head", 4, 2, mixed_spec(), 0.0f, 5, 11, 20, 120, 0, 15, 6, 8}),
    [](const ::testing::TestParamInfo<ServeCase>& info) { return std::string(info.param.name); });

// A budget that holds fewer sequences than there are streams: the rest wait
// in the queue, pages in use never pass the budget, released pages serve
// later sequences, and every request still completes with its own tokens.
TEST(Serving, ABudgetForFewerSequencesQueuesTheRestAndCompletesThemAll) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 67);
  ServeCase c{"budget", 4, 2, PolicySpec{Policy::kSink, 4, 28}, 0.0f, 6, 15, 20, 120, 0, 10, 8, 8};
  toy::ServeConfig config = serve_config(c);
  const std::vector<toy::ServeRequest> requests = toy::make_requests(config, weights.config.vocab_size);
  // Pages for two of the longest requests, five pages short of a third.
  sinkkv::CacheConfig cache = toy::SinkCacheState::cache_config(weights.config, config.spec, c.prefill_chunk);
  std::int64_t longest = 0, all = 0;
  for (const toy::ServeRequest& r : requests) {
    const std::int64_t pages = toy::pages_for_tokens(cache, c.page_tokens, r.cached_tokens());
    longest = std::max(longest, pages);
    all += pages;
  }
  config.max_pages = 3 * longest - 5;
  toy::Server server(weights, config, requests);
  ASSERT_EQ(server.pool().max_pages(), config.max_pages);
  ASSERT_GT(all, config.max_pages) << "the requests must need more pages than the budget, in all";
  Recorder recorder(weights.config.vocab_size);
  bool waited_with_free_streams = false;
  std::int64_t batched = 0;  // each step's batch: the streams still in flight after it and those it finished
  int completed = 0;
  while (server.step(&recorder)) {
    const toy::ServeStats& s = server.stats();
    ASSERT_LE(server.pool().pages_in_use(), config.max_pages);
    ASSERT_LE(s.in_flight, c.streams);
    if (s.queued > 0 && s.in_flight < c.streams) waited_with_free_streams = true;
    batched += s.in_flight + (s.completed - completed);
    completed = s.completed;
  }
  EXPECT_EQ(server.stats().batched_sequences, batched);
  EXPECT_TRUE(waited_with_free_streams) << "the budget, not the streams, should have held requests back";
  EXPECT_LT(server.stats().most_in_flight, c.streams);
  EXPECT_EQ(server.stats().completed, c.total);
  EXPECT_EQ(server.pool().pages_in_use(), 0);
  EXPECT_EQ(server.pool().num_sequences(), 0);
  AloneResult result;
  expect_matches_alone(weights, server.config(), requests, recorder, &result);
}

// More requests than streams, a budget of exactly the streams at their
// longest: slots and pages are reused, the peak stays within the budget, and
// everything is free at the end.
TEST(Serving, ReleasedSequencesPagesAreReusedAndAllAreFreeAtTheEnd) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 71);
  ServeCase c{"reuse", 4, 2, PolicySpec{Policy::kSink, 1, 15}, 0.7f, 3, 20, 5, 60, 0, 4, 4, 4};
  const toy::ServeConfig config = serve_config(c);
  const std::vector<toy::ServeRequest> requests = toy::make_requests(config, weights.config.vocab_size);
  toy::Server server(weights, config, requests);
  std::int64_t taken = 0;  // pages the finished requests held at their end, in all
  for (const toy::ServeRequest& r : requests) {
    taken += toy::pages_for_tokens(server.pool().config(), c.page_tokens, r.cached_tokens());
  }
  EXPECT_GT(taken, 2 * server.pool().max_pages());
  while (server.step()) ASSERT_LE(server.pool().pages_in_use(), server.pool().max_pages());
  EXPECT_LE(server.stats().most_pages_in_use, server.pool().max_pages());
  EXPECT_GT(server.stats().most_pages_in_use, 0);
  EXPECT_EQ(server.stats().completed, c.total);
  EXPECT_EQ(server.pool().free_pages(), server.pool().max_pages());
  EXPECT_EQ(server.pool().num_sequences(), 0);
}

// The tiles' cut depends on the shapes only, and attend_batch splits nothing
// this short: one thread or three give the same bits.
TEST(Serving, OutputsDoNotDependOnTheThreadCount) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 73);
  ServeCase c{"threads", 4, 2, PolicySpec{Policy::kSink, 4, 28}, 0.9f, 5, 9, 10, 70, 0, 12, 8, 8};
  const toy::ServeConfig config = serve_config(c);
  const std::vector<toy::ServeRequest> requests = toy::make_requests(config, weights.config.vocab_size);
  Recorder one(weights.config.vocab_size), three(weights.config.vocab_size);
  toy::Server(weights, config, requests).run(&one);
  sinkkv::ThreadPool threads(2);
  toy::Server(weights, config, requests, &threads).run(&three);
  ASSERT_EQ(one.records.size(), three.records.size());
  for (const auto& [index, record] : one.records) {
    EXPECT_EQ(record.tokens, three.records[index].tokens) << "request " << index;
    EXPECT_EQ(record.logits, three.records[index].logits) << "request " << index;
  }
}

// pages_for_tokens, which admission reserves by, against the pool's own count
// after every step of a sequence fed in chunks (uniform and per-head
// policies, tokens past the window's wrap).
TEST(Serving, PagesForTokensIsWhatThePoolHolds) {
  const toy::ModelConfig model = toy_test::small_config(4, 2, 8);
  for (const PolicySpec& spec : {PolicySpec{Policy::kSink, 4, 28}, mixed_spec()}) {
    for (int chunk : {1, 5}) {
      sinkkv::PoolConfig config;
      config.cache = toy::SinkCacheState::cache_config(model, spec, chunk);
      config.page_tokens = 4;
      config.max_pages = 1000;
      sinkkv::SequencePool<float> pool(config);
      const sinkkv::SequenceId id = pool.add();
      const int heads = model.num_heads, hd = model.head_dim();
      std::vector<float> rows(static_cast<std::size_t>(chunk * heads * hd), 0.25f), out(rows.size());
      std::uint64_t seen = 0;
      for (int step = 0; seen < 90; ++step) {
        const int n = 1 + step % chunk;
        for (int layer = 0; layer < model.num_layers; ++layer) {
          pool.append(id, layer, sinkkv::tokens_view(rows.data(), n, model.num_kv_heads, hd),
                      sinkkv::tokens_view(rows.data(), n, model.num_kv_heads, hd));
        }
        seen += static_cast<std::uint64_t>(n);
        ASSERT_EQ(pool.pages_held(id), toy::pages_for_tokens(config.cache, 4, seen))
            << toy::policy_name(spec.policy) << ", chunk " << chunk << ", " << seen << " tokens";
      }
    }
  }
}

// The tiled products against a double-precision loop: shapes that are and
// are not multiples of the tile, strided rows, out = and out +=.
TEST(TiledProducts, EqualAPlainLoopOverEveryShape) {
  toy::Rng rng(3);
  sinkkv::ThreadPool threads(2);
  for (const auto& [rows, columns, depth] :
       std::vector<std::array<int, 3>>{{1, 1, 1}, {3, 70, 5}, {64, 64, 64}, {65, 129, 200}, {130, 7, 600}}) {
    for (bool accumulate : {false, true}) {
      const int in_stride = depth + 3, out_stride = columns + 2;
      std::vector<float> in(static_cast<std::size_t>(rows * in_stride)),
          weight(static_cast<std::size_t>(columns * depth)), out(static_cast<std::size_t>(rows * out_stride));
      for (float& x : in) x = rng.symmetric(1);
      for (float& x : weight) x = rng.symmetric(1);
      for (float& x : out) x = rng.symmetric(1);
      std::vector<double> want(out.begin(), out.end());
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < columns; ++c) {
          double sum = 0;
          for (int k = 0; k < depth; ++k) {
            sum += static_cast<double>(in[static_cast<std::size_t>(r * in_stride + k)]) *
                   weight[static_cast<std::size_t>(c * depth + k)];
          }
          double& o = want[static_cast<std::size_t>(r * out_stride + c)];
          o = accumulate ? o + sum : sum;
        }
      }
      toy::TiledProducts products;
      const toy::TiledProducts::Product p{in.data(), in_stride,  weight.data(), columns,
                                          depth,     out.data(), out_stride,    accumulate};
      products.run(&p, 1, rows, &threads);
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < out_stride; ++c) {
          const std::size_t i = static_cast<std::size_t>(r * out_stride + c);
          // Float sums of `depth` products of terms below 1: |error| <= depth * 2^-23 or so.
          ASSERT_NEAR(out[i], want[i], 1e-6 * depth + 1e-6)
              << rows << "x" << columns << "x" << depth << (accumulate ? " +=" : " =") << " at " << r << ", " << c;
        }
      }
    }
  }
}

// A batch the pass cannot take is refused before anything changes.
TEST(BatchedTransformer, BadBatchesChangeNothing) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 79);
  sinkkv::PoolConfig config;
  config.cache = toy::SinkCacheState::cache_config(weights.config, PolicySpec{Policy::kSink, 4, 28}, 4);
  config.page_tokens = 8;
  config.max_pages = 12;  // a sequence's first step takes 4 (2 layers x 2 KV heads)
  config.max_sequences = 4;
  sinkkv::SequencePool<float> pool(config);
  toy::BatchedTransformer model(weights, 6, 4);
  const sinkkv::SequenceId a = pool.add(), b = pool.add(), c = pool.add(), d = pool.add();
  const std::int32_t good[4] = {1, 2, 3, 4}, bad[2] = {5, 37};
  const auto refused = [&](std::vector<toy::BatchEntry> entries, const std::string& message) {
    try {
      model.forward(entries.data(), static_cast<int>(entries.size()), pool, nullptr);
    } catch (const toy::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_EQ(pool.pages_in_use(), 0) << message;
      for (sinkkv::SequenceId id : {a, b, c, d}) EXPECT_EQ(pool.tokens_seen(id), 0u) << message;
      return;
    }
    ADD_FAILURE() << "accepted; expected: " << message;
  };
  refused({{a, good, 1}, {b, bad, 2}}, "batch entry 1: token 37 outside [0, 37)");
  refused({{a, good, 1}, {a, good, 1}}, "batch entries 0 and 1 are both sequence");
  refused({{a, good, 4}, {b, good, 3}}, "batch of more than 6 tokens");
  refused({{a, good, 5}}, "batch entry 0: 5 tokens outside [1, the pool's max_chunk 4]");
  refused({{a, good, 1}, {b, good, 1}, {c, good, 1}, {d, good, 1}}, "the batch's step needs 16 more pages, but 12");
  refused({{sinkkv::SequenceId{12345}, good, 1}}, "is not in the pool");
  // And a good one goes through.
  EXPECT_NE(model.forward(std::vector<toy::BatchEntry>{{a, good, 2}, {b, good, 1}}.data(), 2, pool, nullptr), nullptr);
  EXPECT_EQ(pool.tokens_seen(a), 2u);
  EXPECT_EQ(pool.tokens_seen(b), 1u);
}

TEST(Serving, ARequestLongerThanTheBudgetIsAnError) {
  const toy::ModelWeights weights = toy::random_weights(toy_test::small_config(4, 2, 8), 83);
  toy::ServeConfig config =
      serve_config(ServeCase{"", 4, 2, PolicySpec{Policy::kSink, 4, 28}, 0.0f, 2, 3, 40, 40, 0, 0, 8, 8});
  config.max_pages = 10;
  try {
    toy::Server server(weights, config, toy::make_requests(config, weights.config.vocab_size));
    ADD_FAILURE() << "accepted";
  } catch (const toy::Error& e) {
    EXPECT_STREQ(e.what(),
                 "a request of 40 tokens needs 16 pages of 8 tokens, but the pool holds only 10: raise the budget");
  }
  config.spec = PolicySpec{Policy::kRecompute, 0, 8};
  try {
    toy::Server server(weights, config, toy::make_requests(toy::ServeConfig{}, weights.config.vocab_size));
    ADD_FAILURE() << "accepted";
  } catch (const toy::Error& e) {
    EXPECT_STREQ(e.what(),
                 "serving keeps K/V in a sinkkv::SequencePool: policy recompute is not one (sink, window, "
                 "dense, mixed)");
  }
}

}  // namespace

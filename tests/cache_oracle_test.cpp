// SinkKVCache + both shipped kernels against the independent oracle, over
// randomised configurations, every step of streams that wrap the window
// several times.
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include <sinkkv/sinkkv.hpp>

#include "support/oracle.hpp"
#include "support/tolerance.hpp"

namespace sinkkv::testing {
namespace {

enum class Element { kFloat, kDouble, kHalf, kBfloat16 };
enum class Encoding { kNone, kAlibi, kRopeAdjacent, kRopeSplit, kRopePartial };

struct SweepCase {
  int index = 0;
  Element element = Element::kFloat;
  Encoding encoding = Encoding::kRopeAdjacent;
  int num_layers = 1;
  int num_kv_heads = 1;
  int group = 1;
  int head_dim = 8;
  int num_sinks = 4;
  int window = 8;
  double theta = 10000;
  bool sink_logits = false;
  std::uint32_t seed = 0;
};

std::string name_of(const SweepCase& c) {
  static const char* elements[] = {"float", "double", "half", "bfloat16"};
  static const char* encodings[] = {"none", "alibi", "ropeAdjacent", "ropeSplit", "ropePartial"};
  std::ostringstream name;
  name << c.index << "_" << elements[static_cast<int>(c.element)] << "_" << encodings[static_cast<int>(c.encoding)]
       << "_sinks" << c.num_sinks << "_window" << c.window << "_kv" << c.num_kv_heads << "x" << c.group << "_dim"
       << c.head_dim << "_layers" << c.num_layers << (c.sink_logits ? "_sinkLogits" : "");
  return name.str();
}

// gtest prints parameters in test listings and failures; show the name.
void PrintTo(const SweepCase& c, std::ostream* out) { *out << name_of(c); }

std::vector<SweepCase> make_cases() {
  std::mt19937 random(20261125);
  const int sinks[] = {0, 1, 4, 8};
  const int groups[] = {1, 2, 4, 8};
  const int dims[] = {8, 16, 32, 64, 128};
  std::vector<SweepCase> cases;
  for (int i = 0; i < 240; ++i) {
    SweepCase c;
    c.index = i;
    c.element = static_cast<Element>(i % 4);
    c.encoding = static_cast<Encoding>((i / 4) % 5);
    c.num_sinks = sinks[random() % 4];
    c.window = 1 + static_cast<int>(random() % 64);
    c.group = groups[random() % 4];
    c.head_dim = dims[random() % 5];
    c.num_kv_heads = c.head_dim >= 64 ? 1 : 1 + static_cast<int>(random() % 2);
    c.num_layers = 1 + static_cast<int>(random() % 2);
    c.theta = (random() % 2 == 0) ? 10000.0 : 500000.0;
    c.sink_logits = random() % 5 == 0;
    c.seed = static_cast<std::uint32_t>(random());
    cases.push_back(c);
  }
  return cases;
}

CacheConfig config_of(const SweepCase& c) {
  CacheConfig config;
  config.num_layers = c.num_layers;
  config.num_kv_heads = c.num_kv_heads;
  config.num_query_heads = c.num_kv_heads * c.group;
  config.head_dim = c.head_dim;
  config.num_sinks = c.num_sinks;
  config.window = c.window;
  switch (c.encoding) {
    case Encoding::kNone: config.encoding = PositionEncoding::none(); break;
    case Encoding::kAlibi: config.encoding = PositionEncoding::alibi_bias(); break;
    case Encoding::kRopeAdjacent:
      config.encoding = PositionEncoding::rotary({c.theta, 0, RopeLayout::kAdjacentPairs});
      break;
    case Encoding::kRopeSplit: config.encoding = PositionEncoding::rotary({c.theta, 0, RopeLayout::kSplitHalves}); break;
    case Encoding::kRopePartial:
      config.encoding = PositionEncoding::rotary({c.theta, c.head_dim / 2, RopeLayout::kSplitHalves});
      break;
  }
  return config;
}

struct Worst {
  double absolute = 0;
  double relative = 0;  // over |expected| >= 0.05
};

std::map<std::string, Worst>& worst_by_element() {
  static std::map<std::string, Worst> worst;
  return worst;
}

class CacheOracleSweep : public ::testing::TestWithParam<SweepCase> {
 public:
  static void TearDownTestSuite() {
    for (const auto& [element, worst] : worst_by_element()) {
      std::printf("[ oracle   ] worst error vs oracle, %-8s: absolute %.3g, relative %.3g\n", element.c_str(),
                  worst.absolute, worst.relative);
    }
  }
};

HeadRows random_rows(std::mt19937& random, int heads, int dim) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  HeadRows rows(static_cast<std::size_t>(heads), std::vector<double>(static_cast<std::size_t>(dim)));
  for (auto& row : rows) {
    for (auto& x : row) x = static_cast<double>(uniform(random));  // float-representable inputs
  }
  return rows;
}

std::vector<float> flatten(const HeadRows& rows) {
  std::vector<float> flat;
  for (const auto& row : rows) {
    for (double x : row) flat.push_back(static_cast<float>(x));
  }
  return flat;
}

template <class T, class Kernel>
::testing::AssertionResult matches_oracle(SinkKVCache<T>& cache, int layer, const HeadRows& query,
                                          const OracleResult& expected, Kernel kernel, const double* sink_logits,
                                          Worst& worst) {
  using C = compute_t<T>;
  const CacheConfig& config = cache.config();
  const std::vector<float> flat_query = flatten(query);
  std::vector<C> out(static_cast<std::size_t>(config.query_heads() * config.head_dim));
  std::vector<C> logits;
  typename SinkKVCache<T>::Options options;
  if (sink_logits != nullptr) {
    for (int q = 0; q < config.query_heads(); ++q) logits.push_back(static_cast<C>(sink_logits[q]));
    options.sink_logits = logits.data();
    options.num_sink_logits = config.query_heads();
  }
  cache.attend(layer, heads_view(flat_query.data(), config.query_heads(), config.head_dim),
               output_view(out.data(), config.query_heads(), config.head_dim), kernel, options);
  for (int q = 0; q < config.query_heads(); ++q) {
    for (int d = 0; d < config.head_dim; ++d) {
      const double actual = static_cast<double>(out[static_cast<std::size_t>(q * config.head_dim + d)]);
      const double want = expected.output[q][d];
      const double error = std::abs(actual - want);
      worst.absolute = std::max(worst.absolute, error);
      if (std::abs(want) >= 0.05) worst.relative = std::max(worst.relative, error / std::abs(want));
      if (!(error <= Tolerance<T>::kAbsolute + Tolerance<T>::kRelative * std::abs(want))) {
        return ::testing::AssertionFailure() << "layer " << layer << " head " << q << " dim " << d << ": got "
                                             << actual << ", oracle " << want << " (error " << error << ")";
      }
    }
    const double lse = static_cast<double>(cache.log_sum_exp()[q]);
    const double lse_tolerance = 10 * (Tolerance<T>::kAbsolute + Tolerance<T>::kRelative * std::abs(expected.log_sum_exp[q]));
    if (!(std::abs(lse - expected.log_sum_exp[q]) <= lse_tolerance)) {
      return ::testing::AssertionFailure() << "layer " << layer << " head " << q << ": log-sum-exp " << lse
                                           << ", oracle " << expected.log_sum_exp[q];
    }
  }
  return ::testing::AssertionSuccess();
}

template <class T>
void run_case(const SweepCase& c) {
  const CacheConfig config = config_of(c);
  SinkKVCache<T> cache(config);
  std::mt19937 random(c.seed);
  const std::vector<double> slopes = alibi_slopes(config.query_heads());
  std::vector<double> sink_logits;
  std::uniform_real_distribution<double> logit(-2.0, 2.0);
  for (int q = 0; q < config.query_heads(); ++q) sink_logits.push_back(logit(random));
  const double scale = 1.0 / std::sqrt(static_cast<double>(config.head_dim));

  std::vector<std::vector<HeadRows>> keys(static_cast<std::size_t>(config.num_layers));    // [layer][token]
  std::vector<std::vector<HeadRows>> values(static_cast<std::size_t>(config.num_layers));  // [layer][token]
  const int steps = 3 * config.capacity() + 7;
  Worst& worst = worst_by_element()[detail::ElementTraits<T>::kName];
  for (int step = 0; step < steps; ++step) {
    for (int layer = 0; layer < config.num_layers; ++layer) {
      keys[layer].push_back(random_rows(random, config.num_kv_heads, config.head_dim));
      values[layer].push_back(random_rows(random, config.num_kv_heads, config.head_dim));
      const std::vector<float> k = flatten(keys[layer].back());
      const std::vector<float> v = flatten(values[layer].back());
      cache.append(layer, heads_view(k.data(), config.num_kv_heads, config.head_dim),
                   heads_view(v.data(), config.num_kv_heads, config.head_dim));

      const std::vector<std::uint64_t> kept =
          expected_cached_tokens(config.num_sinks, config.window, static_cast<std::uint64_t>(step + 1));
      ASSERT_EQ(cache.size(), static_cast<int>(kept.size())) << "step " << step;
      std::vector<HeadRows> cached_keys;
      std::vector<HeadRows> cached_values;
      for (int position = 0; position < cache.size(); ++position) {
        ASSERT_EQ(cache.stream_index(position), kept[static_cast<std::size_t>(position)])
            << "step " << step << " cache position " << position;
        cached_keys.push_back(keys[layer][kept[static_cast<std::size_t>(position)]]);
        cached_values.push_back(values[layer][kept[static_cast<std::size_t>(position)]]);
      }

      const HeadRows query = random_rows(random, config.query_heads(), config.head_dim);
      const double* logits = c.sink_logits ? sink_logits.data() : nullptr;
      const OracleResult expected = oracle_attention(config, query, cached_keys, cached_values, slopes, scale, logits);
      ASSERT_TRUE(matches_oracle(cache, layer, query, expected, CpuKernel{}, logits, worst))
          << "CpuKernel, step " << step << " of " << steps;
      ASSERT_TRUE(matches_oracle(cache, layer, query, expected, ReferenceKernel{}, logits, worst))
          << "ReferenceKernel, step " << step << " of " << steps;
    }
  }
}

TEST_P(CacheOracleSweep, EveryStepMatchesDenseAttentionWithReRotatedKeys) {
  const SweepCase& c = GetParam();
  switch (c.element) {
    case Element::kFloat: run_case<float>(c); break;
    case Element::kDouble: run_case<double>(c); break;
    case Element::kHalf: run_case<Eigen::half>(c); break;
    case Element::kBfloat16: run_case<Eigen::bfloat16>(c); break;
  }
}

INSTANTIATE_TEST_SUITE_P(Randomised, CacheOracleSweep, ::testing::ValuesIn(make_cases()),
                         [](const ::testing::TestParamInfo<SweepCase>& info) { return name_of(info.param); });

}  // namespace
}  // namespace sinkkv::testing

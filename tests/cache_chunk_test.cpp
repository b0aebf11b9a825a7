// SinkKVCache fed in chunks (prefill): every query of every chunk against the
// independent oracle, and against the same cache fed one token at a time,
// over randomised configurations, chunk splits, policies and input frames.
#include <cmath>
#include <cstdio>
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
enum class Encoding { kNone, kAlibi, kRopeAdjacent, kRopeSplit, kRopePartial, kRopeYarn, kRopeLlama3 };
enum class KernelKind { kReference, kSingleQueryOnly, kCpu };

struct ChunkCase {
  int index = 0;
  Element element = Element::kFloat;
  Encoding encoding = Encoding::kRopeAdjacent;
  bool rotated_inputs = false;
  int num_layers = 1;
  int num_kv_heads = 1;
  int group = 1;
  int head_dim = 8;
  int num_sinks = 4;
  int window = 8;
  int max_chunk = 4;
  bool mixed_policies = false;
  bool sink_logits = false;
  KernelKind kernel = KernelKind::kReference;
  std::uint32_t seed = 0;
};

std::string name_of(const ChunkCase& c) {
  static const char* elements[] = {"float", "double", "half", "bfloat16"};
  static const char* encodings[] = {"none",        "alibi",    "ropeAdjacent", "ropeSplit",
                                    "ropePartial", "ropeYarn", "ropeLlama3"};
  static const char* kernels[] = {"reference", "singleQueryOnly", "cpu"};
  std::ostringstream name;
  name << c.index << "_" << elements[static_cast<int>(c.element)] << "_" << encodings[static_cast<int>(c.encoding)]
       << (c.rotated_inputs ? "_rotatedInputs" : "") << "_sinks" << c.num_sinks << "_window" << c.window << "_chunk"
       << c.max_chunk << "_kv" << c.num_kv_heads << "x" << c.group << "_dim" << c.head_dim << "_layers"
       << c.num_layers << (c.mixed_policies ? "_mixedPolicies" : "") << (c.sink_logits ? "_sinkLogits" : "") << "_"
       << kernels[static_cast<int>(c.kernel)];
  return name.str();
}
void PrintTo(const ChunkCase& c, std::ostream* out) { *out << name_of(c); }

std::vector<ChunkCase> make_cases() {
  std::mt19937 random(20261129);
  const int sinks[] = {0, 1, 4, 8};
  const int groups[] = {1, 2, 3, 4, 8};
  const int dims[] = {8, 16, 32, 64};
  const int chunks[] = {1, 2, 3, 7, 16, 33};
  std::vector<ChunkCase> cases;
  for (int i = 0; i < 150; ++i) {
    ChunkCase c;
    c.index = i;
    c.element = static_cast<Element>(i % 4);
    c.encoding = static_cast<Encoding>((i / 4) % 7);
    c.kernel = static_cast<KernelKind>((i / 20) % 3);
    const bool rope = c.encoding != Encoding::kNone && c.encoding != Encoding::kAlibi;
    c.rotated_inputs = rope && random() % 2 == 0;
    c.num_sinks = sinks[random() % 4];
    c.window = 1 + static_cast<int>(random() % 40);
    c.max_chunk = chunks[random() % 6];
    c.group = groups[random() % 5];
    c.head_dim = dims[random() % 4];
    c.num_kv_heads = 1 + static_cast<int>(random() % 3);
    c.num_layers = 1 + static_cast<int>(random() % 2);
    c.mixed_policies = random() % 3 == 0;
    c.sink_logits = random() % 4 == 0;
    c.seed = static_cast<std::uint32_t>(random());
    cases.push_back(c);
  }
  return cases;
}

CacheConfig config_of(const ChunkCase& c, std::mt19937& random) {
  CacheConfig config;
  config.num_layers = c.num_layers;
  config.num_kv_heads = c.num_kv_heads;
  config.num_query_heads = c.num_kv_heads * c.group;
  config.head_dim = c.head_dim;
  config.num_sinks = c.num_sinks;
  config.window = c.window;
  config.max_chunk = c.max_chunk;
  switch (c.encoding) {
    case Encoding::kNone: config.encoding = PositionEncoding::none(); break;
    case Encoding::kAlibi: config.encoding = PositionEncoding::alibi_bias(); break;
    case Encoding::kRopeAdjacent: config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kAdjacentPairs}); break;
    case Encoding::kRopeSplit: config.encoding = PositionEncoding::rotary({500000.0, 0, RopeLayout::kSplitHalves}); break;
    case Encoding::kRopePartial:
      config.encoding = PositionEncoding::rotary({10000.0, c.head_dim / 2, RopeLayout::kSplitHalves});
      break;
    case Encoding::kRopeYarn:  // attention factor != 1: applied once, to keys and both query frames
      config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kSplitHalves, RopeScaling::yarn(4.0, 16.0)});
      break;
    case Encoding::kRopeLlama3:
      config.encoding =
          PositionEncoding::rotary({500000.0, 0, RopeLayout::kAdjacentPairs, RopeScaling::llama3(8.0, 1.0, 4.0, 32.0)});
      break;
  }
  config.input_rotation = c.rotated_inputs ? InputRotation::kStreamRotated : InputRotation::kUnrotated;
  if (c.mixed_policies) {  // every head its own sinks and window, some shared
    const int sinks[] = {0, 1, 4};
    for (int layer = 0; layer < c.num_layers; ++layer) {
      for (int head = 0; head < c.num_kv_heads; ++head) {
        if (random() % 3 == 0) continue;  // keeps the uniform policy
        config.set_head_policy(layer, head, {sinks[random() % 3], 1 + static_cast<int>(random() % 24)});
      }
    }
  }
  return config;
}

HeadRows random_rows(std::mt19937& random, int heads, int dim) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  HeadRows rows(static_cast<std::size_t>(heads), std::vector<double>(static_cast<std::size_t>(dim)));
  for (auto& row : rows) {
    for (auto& x : row) x = static_cast<double>(uniform(random));
  }
  return rows;
}

// Token rows as an engine hands them over: un-rotated, or rotated by the
// token's stream index with its own (double) RoPE.
std::vector<float> engine_rows(const HeadRows& rows, const CacheConfig& config, std::uint64_t t) {
  std::vector<float> flat;
  for (const auto& row : rows) {
    const std::vector<double> given = config.input_rotation == InputRotation::kStreamRotated
                                          ? oracle_rotate(row, static_cast<double>(t), config.encoding.rope)
                                          : row;
    for (double x : given) flat.push_back(static_cast<float>(x));
  }
  return flat;
}

// Hides a kernel's chunk overload: the cache must then call it per query.
template <class Inner>
struct SingleQueryOnly {
  Inner inner;
  template <class T>
  void operator()(const AttentionArgs<T>& args, const AttentionOutput<compute_t<T>>& out) {
    inner(args, out);
  }
};
static_assert(!is_chunk_kernel_v<SingleQueryOnly<ReferenceKernel>, float>);
static_assert(is_chunk_kernel_v<ReferenceKernel, float>);

template <class T, class Kernel>
void run_case(const ChunkCase& c, Kernel kernel) {
  using C = compute_t<T>;
  std::mt19937 random(c.seed);
  const CacheConfig config = config_of(c, random);
  SinkKVCache<T> cache(config);
  SinkKVCache<T> one_at_a_time(config);
  const int heads = config.query_heads();
  const int kv_heads = config.num_kv_heads;
  const int dim = config.head_dim;
  const std::vector<double> slopes = alibi_slopes(heads);
  std::vector<double> sink_logits;
  std::vector<C> sink_logits_c;
  std::uniform_real_distribution<double> logit(-2.0, 2.0);
  for (int q = 0; q < heads; ++q) {
    sink_logits.push_back(logit(random));
    sink_logits_c.push_back(static_cast<C>(sink_logits.back()));
  }
  typename SinkKVCache<T>::Options options;
  if (c.sink_logits) {
    options.sink_logits = sink_logits_c.data();
    options.num_sink_logits = heads;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  // Pre-rotated inputs arrive as floats rounded after the engine's rotation,
  // which a double cache cannot undo: float tolerance then.
  const double absolute = std::max(Tolerance<T>::kAbsolute, c.rotated_inputs ? Tolerance<float>::kAbsolute : 0.0);
  const double relative = std::max(Tolerance<T>::kRelative, c.rotated_inputs ? Tolerance<float>::kRelative : 0.0);
  const double* logits = c.sink_logits ? sink_logits.data() : nullptr;

  std::vector<std::vector<HeadRows>> keys(static_cast<std::size_t>(c.num_layers));    // [layer][token]
  std::vector<std::vector<HeadRows>> values(static_cast<std::size_t>(c.num_layers));  // [layer][token]
  const int total = std::min(3 * (config.capacity() + c.max_chunk) + 7, 260);
  std::uint64_t t0 = 0;
  for (int step = 0; t0 < static_cast<std::uint64_t>(total); ++step) {
    // Mostly random sizes, sometimes the largest, so chunks straddle the
    // sinks, the first eviction and many ring wraps.
    const int n = random() % 4 == 0 ? c.max_chunk : 1 + static_cast<int>(random() % static_cast<unsigned>(c.max_chunk));
    std::vector<std::vector<float>> k(static_cast<std::size_t>(c.num_layers)), v(k.size()), q(k.size());
    std::vector<std::vector<C>> out(k.size());
    for (int layer = 0; layer < c.num_layers; ++layer) {
      std::vector<HeadRows> queries;
      for (int i = 0; i < n; ++i) {
        keys[layer].push_back(random_rows(random, kv_heads, dim));
        values[layer].push_back(random_rows(random, kv_heads, dim));
        queries.push_back(random_rows(random, heads, dim));
        const std::uint64_t t = t0 + static_cast<std::uint64_t>(i);
        for (float x : engine_rows(keys[layer].back(), config, t)) k[layer].push_back(x);
        for (const auto& row : values[layer].back()) {
          for (double x : row) v[layer].push_back(static_cast<float>(x));
        }
        for (float x : engine_rows(queries.back(), config, t)) q[layer].push_back(x);
      }
      cache.append(layer, tokens_view(k[layer].data(), n, kv_heads, dim), tokens_view(v[layer].data(), n, kv_heads, dim));
      out[layer].assign(static_cast<std::size_t>(n * heads * dim), C(0));
      cache.attend(layer, tokens_view(q[layer].data(), n, heads, dim),
                   tokens_output_view(out[layer].data(), n, heads, dim), kernel, options);
      for (int i = 0; i < n; ++i) {
        const std::uint64_t t = t0 + static_cast<std::uint64_t>(i);
        const OracleResult expected = oracle_for_token(config, layer, t, queries[static_cast<std::size_t>(i)],
                                                       keys[layer], values[layer], slopes, scale, logits);
        for (int h = 0; h < heads; ++h) {
          for (int d = 0; d < dim; ++d) {
            const double actual = static_cast<double>(out[layer][static_cast<std::size_t>((i * heads + h) * dim + d)]);
            const double want = expected.output[static_cast<std::size_t>(h)][static_cast<std::size_t>(d)];
            ASSERT_LE(std::abs(actual - want), absolute + relative * std::abs(want))
                << "step " << step << " (tokens " << t0 << ".." << t0 + n - 1 << ") layer " << layer << " query "
                << i << " (token " << t << ") head " << h << " dim " << d << ": got " << actual << ", oracle " << want;
          }
          const double lse = static_cast<double>(cache.log_sum_exp(i, h));
          const double want_lse = expected.log_sum_exp[static_cast<std::size_t>(h)];
          ASSERT_LE(std::abs(lse - want_lse),
                    10 * (absolute + relative * std::abs(want_lse)))
              << "log-sum-exp of query " << i << " head " << h << " at step " << step;
        }
      }
    }
    // The same tokens one at a time, through the same kernel, give the same
    // outputs up to float summation order.
    const double same = std::is_same_v<C, double> ? 1e-12 : 2e-5;
    for (int i = 0; i < n; ++i) {
      for (int layer = 0; layer < c.num_layers; ++layer) {
        one_at_a_time.append(layer, heads_view(k[layer].data() + i * kv_heads * dim, kv_heads, dim),
                             heads_view(v[layer].data() + i * kv_heads * dim, kv_heads, dim));
        std::vector<C> single(static_cast<std::size_t>(heads * dim));
        one_at_a_time.attend(layer, heads_view(q[layer].data() + i * heads * dim, heads, dim),
                             output_view(single.data(), heads, dim), kernel, options);
        for (int e = 0; e < heads * dim; ++e) {
          const double chunked = static_cast<double>(out[layer][static_cast<std::size_t>(i * heads * dim + e)]);
          const double alone = static_cast<double>(single[static_cast<std::size_t>(e)]);
          ASSERT_LE(std::abs(chunked - alone), same * (1 + std::abs(alone)))
              << "token " << t0 + i << " layer " << layer << " element " << e << ": chunked " << chunked
              << ", one at a time " << alone;
        }
      }
    }
    t0 += static_cast<std::uint64_t>(n);
  }
}

class ChunkedStreamSweep : public ::testing::TestWithParam<ChunkCase> {};

template <class T>
void run_with_kernel(const ChunkCase& c) {
  switch (c.kernel) {
    case KernelKind::kReference: run_case<T>(c, ReferenceKernel{}); break;
    case KernelKind::kSingleQueryOnly: run_case<T>(c, SingleQueryOnly<ReferenceKernel>{}); break;
    case KernelKind::kCpu: run_case<T>(c, CpuKernel{}); break;
  }
}

TEST_P(ChunkedStreamSweep, EveryQueryOfEveryChunkMatchesTheOracleAndTokenAtATime) {
  const ChunkCase& c = GetParam();
  switch (c.element) {
    case Element::kFloat: run_with_kernel<float>(c); break;
    case Element::kDouble: run_with_kernel<double>(c); break;
    case Element::kHalf: run_with_kernel<Eigen::half>(c); break;
    case Element::kBfloat16: run_with_kernel<Eigen::bfloat16>(c); break;
  }
}

INSTANTIATE_TEST_SUITE_P(Randomised, ChunkedStreamSweep, ::testing::ValuesIn(make_cases()),
                         [](const ::testing::TestParamInfo<ChunkCase>& info) { return name_of(info.param); });

}  // namespace
}  // namespace sinkkv::testing

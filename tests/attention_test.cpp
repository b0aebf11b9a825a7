// The kernel contract: an outside kernel plugs in; partial results merge;
// learned sink logits act as one extra softmax column. Built as C++20 so
// that the AttentionKernel concept is exercised too.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/sinkkv.hpp>

#include "support/oracle.hpp"
#include "support/segments.hpp"
#include "support/streams.hpp"

namespace sinkkv {
namespace {

using testing::HandMadeSegments;

// A kernel written only here: two passes per head, scores recomputed,
// float arithmetic. It knows nothing of the library but the contract.
struct TwoPassTestKernel {
  int calls = 0;
  void operator()(const AttentionArgs<float>& args, const AttentionOutput<float>& out) {
    ++calls;
    for (int q = 0; q < args.num_query_heads; ++q) {
      const int kv = args.kv_head_of(q);
      auto score = [&](const KVSegment<float>& segment, int j) {
        const float* key = segment.keys + kv * segment.head_stride + j * segment.token_stride;
        float dot = 0;
        for (int d = 0; d < args.head_dim; ++d) dot += segment.query[q * args.head_dim + d] * key[d];
        float bias = args.alibi_slopes ? -args.alibi_slopes[q] * float(segment.query_distance - j) : 0.0f;
        return args.scale * dot + bias;
      };
      float max_score = -INFINITY;
      for (int s = 0; s < args.num_segments; ++s) {
        for (int j = 0; j < args.segments[s].length; ++j) max_score = std::max(max_score, score(args.segments[s], j));
      }
      float sum = 0;
      float* row = out.data + q * out.head_stride;
      for (int d = 0; d < args.head_dim; ++d) row[d] = 0;
      for (int s = 0; s < args.num_segments; ++s) {
        const KVSegment<float>& segment = args.segments[s];
        for (int j = 0; j < segment.length; ++j) {
          const float weight = std::exp(score(segment, j) - max_score);
          sum += weight;
          const float* value = segment.values + kv * segment.head_stride + j * segment.token_stride;
          for (int d = 0; d < args.head_dim; ++d) row[d] += weight * value[d];
        }
      }
      for (int d = 0; d < args.head_dim; ++d) row[d] /= sum;
      out.log_sum_exp[q] = max_score + std::log(sum);
    }
  }
};

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
static_assert(AttentionKernel<TwoPassTestKernel, float>);
static_assert(AttentionKernel<CpuKernel, Eigen::half>);
static_assert(!AttentionKernel<int, float>);
#endif
static_assert(is_attention_kernel_v<TwoPassTestKernel, float>);

TEST(AttentionKernelContract, KernelWrittenOutsideTheLibraryPlugsIntoTheCache) {
  CacheConfig config = testing::small_config(2, 2, 5);
  config.encoding = PositionEncoding::rotary({10000.0, 0, RopeLayout::kSplitHalves});
  SinkKVCache<float> cache(config);
  TwoPassTestKernel custom;
  for (std::uint64_t t = 0; t < 20; ++t) {
    testing::append_token(cache, t);
    const std::vector<float> query = testing::token_rows(3, t, 7, 32);
    std::vector<float> mine(32), reference(32);
    cache.attend(1, heads_view(query.data(), 4, 8), output_view(mine.data(), 4, 8), custom);
    cache.attend(1, heads_view(query.data(), 4, 8), output_view(reference.data(), 4, 8), ReferenceKernel{});
    for (int i = 0; i < 32; ++i) ASSERT_NEAR(mine[i], reference[i], 2e-6) << "token " << t << " element " << i;
  }
  EXPECT_EQ(custom.calls, 20);
}

TEST(AttentionKernelContract, MergedPartialResultsEqualAttentionOverTheUnion) {
  const HandMadeSegments<float> segments(8, 2, 16, {13, 40, 7}, 11);
  const AttentionArgs<float> whole = segments.args(true);
  auto full = segments.make_result();
  ReferenceKernel{}(whole, full.view());

  // First segment alone, then the other two, merged.
  AttentionArgs<float> head = whole, tail = whole;
  head.num_segments = 1;
  tail.segments = whole.segments + 1;
  tail.num_segments = 2;
  auto a = segments.make_result(), b = segments.make_result();
  ReferenceKernel{}(head, a.view());
  ReferenceKernel{}(tail, b.view());
  merge_partial(8, 16, a.view(), b.view());
  for (std::size_t i = 0; i < a.output.size(); ++i) EXPECT_NEAR(a.output[i], full.output[i], 1e-6) << i;
  for (int q = 0; q < 8; ++q) EXPECT_NEAR(a.log_sum_exp[q], full.log_sum_exp[q], 1e-5) << q;
}

TEST(AttentionKernelContract, SliceOfASegmentKeepsItsDistances) {
  const HandMadeSegments<double> segments(2, 1, 8, {30}, 5);
  const AttentionArgs<double> whole = segments.args(true);
  const KVSegment<double> parts[] = {whole.segments[0].slice(0, 12), whole.segments[0].slice(12, 18)};
  AttentionArgs<double> split = whole;
  split.segments = parts;
  split.num_segments = 2;
  auto a = segments.make_result(), b = segments.make_result();
  ReferenceKernel{}(whole, a.view());
  ReferenceKernel{}(split, b.view());
  for (std::size_t i = 0; i < a.output.size(); ++i) EXPECT_NEAR(a.output[i], b.output[i], 1e-14) << i;
}

TEST(AttentionKernelContract, SinkLogitsActAsAnExtraSoftmaxColumnWithZeroValue) {
  const HandMadeSegments<double> segments(2, 1, 4, {6}, 9);
  const AttentionArgs<double> args = segments.args();
  auto result = segments.make_result();
  const AttentionOutput<double> view = result.view();
  ReferenceKernel{}(args, view);
  const std::vector<double> plain = result.output;
  const std::vector<double> plain_lse = result.log_sum_exp;
  const double sink_logits[] = {0.7, -3.0};
  apply_sink_logits(2, 4, sink_logits, view);
  for (int q = 0; q < 2; ++q) {
    // softmax over {scores, sink}: the value mass shrinks by
    // e^lse / (e^lse + e^sink).
    const double keep = std::exp(plain_lse[q]) / (std::exp(plain_lse[q]) + std::exp(sink_logits[q]));
    for (int d = 0; d < 4; ++d) EXPECT_NEAR(result.output[q * 4 + d], keep * plain[q * 4 + d], 1e-14);
    EXPECT_NEAR(result.log_sum_exp[q], std::log(std::exp(plain_lse[q]) + std::exp(sink_logits[q])), 1e-14);
  }
}

}  // namespace
}  // namespace sinkkv

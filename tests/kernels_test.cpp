// The fast CPU kernel against the reference kernel on hand-made segments:
// every storage type, long segments across blocks, large GQA groups, ALiBi,
// and scores large enough to need the online rescaling.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/sinkkv.hpp>

#include "support/segments.hpp"
#include "support/tolerance.hpp"

namespace sinkkv {
namespace {

using testing::HandMadeSegments;

struct Shape {
  int query_heads, kv_heads, head_dim;
  std::vector<int> lengths;
  bool alibi;
  double query_magnitude;
};

template <class T>
class CpuKernelTest : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, double, Eigen::half, Eigen::bfloat16>;
TYPED_TEST_SUITE(CpuKernelTest, StorageTypes);

template <class T>
void expect_matches_reference(const Shape& shape, unsigned seed) {
  using C = compute_t<T>;
  const HandMadeSegments<T> segments(shape.query_heads, shape.kv_heads, shape.head_dim, shape.lengths, seed,
                                     shape.query_magnitude);
  const AttentionArgs<T> args = segments.args(shape.alibi);
  auto fast = segments.make_result(), reference = segments.make_result();
  CpuKernel{}(args, fast.view());
  ReferenceKernel{}(args, reference.view());
  // Both read the same stored rows, so only arithmetic differs: compute
  // type rounding over head_dim-long dot products and the softmax.
  const double tolerance = std::is_same_v<C, double> ? 1e-12 : 2e-5 * std::max(1.0, shape.query_magnitude);
  for (std::size_t i = 0; i < fast.output.size(); ++i) {
    ASSERT_NEAR(static_cast<double>(fast.output[i]), static_cast<double>(reference.output[i]), tolerance)
        << "element " << i << " (head " << i / shape.head_dim << ")";
  }
  for (std::size_t q = 0; q < fast.log_sum_exp.size(); ++q) {
    ASSERT_NEAR(static_cast<double>(fast.log_sum_exp[q]), static_cast<double>(reference.log_sum_exp[q]),
                tolerance * std::max(1.0, std::abs(static_cast<double>(reference.log_sum_exp[q]))))
        << "head " << q;
  }
}

TYPED_TEST(CpuKernelTest, SingleShortSegmentMatchesReference) {
  expect_matches_reference<TypeParam>({4, 4, 8, {3}, false, 1.0}, 1);
}

TYPED_TEST(CpuKernelTest, LongSegmentsAcrossManyBlocksMatchReference) {
  expect_matches_reference<TypeParam>({8, 2, 64, {4, 1000, 333}, false, 1.0}, 2);
}

TYPED_TEST(CpuKernelTest, GroupsLargerThanOnePassMatchReference) {
  expect_matches_reference<TypeParam>({32, 2, 32, {4, 70}, false, 1.0}, 3);  // 16 query heads per KV head
}

TYPED_TEST(CpuKernelTest, MultiQueryAttentionMatchesReference) {
  expect_matches_reference<TypeParam>({8, 1, 128, {8, 129}, false, 1.0}, 4);
}

TYPED_TEST(CpuKernelTest, AlibiBiasMatchesReference) {
  expect_matches_reference<TypeParam>({4, 2, 16, {2, 90, 40}, true, 1.0}, 5);
}

TYPED_TEST(CpuKernelTest, LargeScoresNeedingRescaleMatchReference) {
  // Scores spanning ~+-100 make every new block maximum rescale the
  // accumulator; a missed rescale shows up as a large error.
  expect_matches_reference<TypeParam>({4, 4, 16, {5, 200, 64}, false, 40.0}, 6);
}

TYPED_TEST(CpuKernelTest, OddHeadDimMatchesReference) {
  expect_matches_reference<TypeParam>({6, 3, 7, {1, 45}, true, 1.0}, 7);
}

}  // namespace
}  // namespace sinkkv

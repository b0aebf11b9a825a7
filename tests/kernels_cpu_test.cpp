// Tests for kernels/cpu.hpp: CpuKernel against ReferenceKernel (the double-
// precision oracle) over awkward shapes, segment splits, ALiBi and every
// storage type; and that it never allocates.
//
// Build this file with different flags to test each vector path: the ISA it
// ran with is printed (detail::simd::kIsa), e.g. -march=native (AVX-512),
// -mavx2 -mfma -mf16c, and no flags (SSE2).
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/reference.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>
// Last: it defines malloc & co. after the system headers declared them.
#include "support/allocation_counter.hpp"


namespace {

enum class Storage { kFloat, kHalf, kBfloat16, kDouble };

struct Case {
  Storage storage;
  int query_heads;
  int kv_heads;
  int head_dim;
  std::vector<int> segment_lengths;
  bool alibi;
  bool bfloat16_dot = false;  ///< CpuKernel::bfloat16_dot_products
};

std::string storage_name(Storage s) {
  switch (s) {
    case Storage::kFloat: return "float";
    case Storage::kHalf: return "half";
    case Storage::kBfloat16: return "bfloat16";
    case Storage::kDouble: return "double";
  }
  return "?";
}

std::string describe(const Case& c) {
  std::ostringstream os;
  os << storage_name(c.storage) << " q" << c.query_heads << " kv" << c.kv_heads << " d" << c.head_dim << " segs";
  for (int n : c.segment_lengths) os << "_" << n;
  os << (c.alibi ? " alibi" : "");
  os << (c.bfloat16_dot ? " bf16dot" : "");
  return os.str();
}

/// Per-type bound on |cpu - reference| <= atol + rtol * |reference|. Both see
/// the same stored (rounded) K/V, so only the kernel's float arithmetic
/// differs: scores of magnitude up to ~|q||k| ~ sqrt(d) accumulate d
/// products (error ~ d * 2^-24 * that), which moves the weights relatively
/// by as much; outputs are O(1). 2e-5 holds with margin up to d = 128.
constexpr double kAbsolute = 2e-5;
constexpr double kRelative = 2e-5;

template <class T>
void run_case(const Case& c, unsigned seed) {
  using C = sinkkv::compute_t<T>;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  int total = 0;
  for (int n : c.segment_lengths) total += n;
  const int capacity = total + 5;  // a gap between heads, as in a cache with free slots
  // [kv_heads][capacity][head_dim]
  std::vector<T> keys(static_cast<std::size_t>(c.kv_heads) * capacity * c.head_dim);
  std::vector<T> values(keys.size());
  for (auto& k : keys) k = sinkkv::detail::from_double<T>(2.0 * uniform(rng));
  for (auto& v : values) v = sinkkv::detail::from_double<T>(uniform(rng));
  const int num_segments = static_cast<int>(c.segment_lengths.size());
  // [num_segments][query_heads][head_dim]: each segment its own rotated query.
  std::vector<C> queries(static_cast<std::size_t>(num_segments) * c.query_heads * c.head_dim);
  for (auto& q : queries) q = static_cast<C>(2.0 * uniform(rng));
  std::vector<C> slopes(static_cast<std::size_t>(c.query_heads));
  for (int h = 0; h < c.query_heads; ++h) slopes[h] = static_cast<C>(std::pow(2.0, -(h % 8 + 1)));

  std::vector<sinkkv::KVSegment<T>> segments(static_cast<std::size_t>(num_segments));
  int first = 0;
  for (int s = 0; s < num_segments; ++s) {
    auto& seg = segments[s];
    seg.query = queries.data() + static_cast<std::size_t>(s) * c.query_heads * c.head_dim;
    seg.keys = keys.data() + static_cast<std::size_t>(first) * c.head_dim;
    seg.values = values.data() + static_cast<std::size_t>(first) * c.head_dim;
    seg.token_stride = c.head_dim;
    seg.head_stride = static_cast<std::ptrdiff_t>(capacity) * c.head_dim;
    seg.length = c.segment_lengths[s];
    seg.query_distance = total - 1 - first;
    first += c.segment_lengths[s];
  }
  sinkkv::AttentionArgs<T> args;
  args.num_query_heads = c.query_heads;
  args.num_kv_heads = c.kv_heads;
  args.head_dim = c.head_dim;
  args.scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  args.alibi_slopes = c.alibi ? slopes.data() : nullptr;
  args.segments = segments.data();
  args.num_segments = num_segments;

  const int out_stride = c.head_dim + 3;  // non-packed output rows
  std::vector<C> expected(static_cast<std::size_t>(c.query_heads) * out_stride, C(0));
  std::vector<C> actual(expected.size(), C(-7));  // garbage: the kernel overwrites
  std::vector<C> expected_lse(static_cast<std::size_t>(c.query_heads)), actual_lse(expected_lse.size());
  // With bfloat16 dot products in effect the kernel sees the query rounded
  // to bfloat16; so does the reference, which stays exact otherwise.
  sinkkv::CpuKernel kernel;
  kernel.bfloat16_dot_products = c.bfloat16_dot;
  const bool rounded = c.bfloat16_dot && sinkkv::CpuKernel::uses_bfloat16_dot<T>(c.head_dim);
  std::vector<C> rounded_queries(queries);
  for (auto& q : rounded_queries) q = static_cast<C>(static_cast<float>(Eigen::bfloat16(static_cast<float>(q))));
  std::vector<sinkkv::KVSegment<T>> reference_segments(segments);
  for (int s = 0; s < num_segments; ++s) {
    reference_segments[s].query = (rounded ? rounded_queries : queries).data() +
                                  static_cast<std::size_t>(s) * c.query_heads * c.head_dim;
  }
  sinkkv::AttentionArgs<T> reference_args = args;
  reference_args.segments = reference_segments.data();
  sinkkv::ReferenceKernel{}(reference_args,
                            sinkkv::AttentionOutput<C>{expected.data(), out_stride, expected_lse.data()});

  const std::size_t before = sinkkv::testing::allocation_count;
  kernel(args, sinkkv::AttentionOutput<C>{actual.data(), out_stride, actual_lse.data()});
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << "CpuKernel allocated during a call: " << describe(c);

  const double tolerance_scale = std::is_same_v<T, double> ? 1e-6 : 1.0;
  for (int h = 0; h < c.query_heads; ++h) {
    for (int d = 0; d < c.head_dim; ++d) {
      const double want = static_cast<double>(expected[static_cast<std::size_t>(h) * out_stride + d]);
      const double got = static_cast<double>(actual[static_cast<std::size_t>(h) * out_stride + d]);
      ASSERT_LE(std::abs(got - want), tolerance_scale * (kAbsolute + kRelative * std::abs(want)))
          << "head " << h << " dim " << d << ": cpu " << got << " reference " << want << " (" << describe(c)
          << ", isa " << sinkkv::detail::simd::kIsa << ")";
    }
    const double want = static_cast<double>(expected_lse[h]);
    const double got = static_cast<double>(actual_lse[h]);
    ASSERT_LE(std::abs(got - want), tolerance_scale * (kAbsolute + kRelative * std::abs(want)))
        << "log-sum-exp of head " << h << ": cpu " << got << " reference " << want << " (" << describe(c) << ")";
  }
}

class CpuKernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuKernelTest, MatchesReference) {
  const Case& c = GetParam();
  switch (c.storage) {
    case Storage::kFloat: run_case<float>(c, 1); break;
    case Storage::kHalf: run_case<Eigen::half>(c, 2); break;
    case Storage::kBfloat16: run_case<Eigen::bfloat16>(c, 3); break;
    case Storage::kDouble: run_case<double>(c, 4); break;
  }
}

std::vector<Case> all_cases() {
  struct Shape {
    int query_heads, kv_heads, head_dim;
  };
  // Group sizes 1..20 (16 is the one-read limit; 20 takes two passes), head
  // sizes on and off every vector width, odd head counts.
  const Shape shapes[] = {{1, 1, 16},  {4, 4, 64},  {32, 8, 128}, {64, 8, 128}, {6, 2, 32},  {7, 7, 48},
                          {3, 1, 17},  {24, 1, 80}, {40, 2, 64},  {5, 1, 8},    {12, 4, 256}, {2, 1, 4}};
  const std::vector<std::vector<int>> splits = {{1}, {15}, {16}, {17}, {63, 1}, {64}, {4, 61}, {4, 200, 57}, {1000}};
  std::vector<Case> cases;
  for (Storage storage : {Storage::kFloat, Storage::kHalf, Storage::kBfloat16, Storage::kDouble}) {
    for (const Shape& shape : shapes) {
      for (const auto& split : splits) {
        int total = 0;
        for (int n : split) total += n;
        // ReferenceKernel costs heads * tokens * head_dim^2: keep each case
        // well under a second (the long splits still run on the small shapes).
        const double reference_cost = 1.0 * shape.query_heads * total * shape.head_dim * shape.head_dim;
        if (reference_cost > 3e7 && total > 70) continue;
        for (bool alibi : {false, true}) {
          if (alibi && split.size() < 2 && split[0] != 17) continue;  // ALiBi on a subset, keep it quick
          cases.push_back({storage, shape.query_heads, shape.kv_heads, shape.head_dim, split, alibi});
          if (storage == Storage::kBfloat16) {
            cases.push_back({storage, shape.query_heads, shape.kv_heads, shape.head_dim, split, alibi, true});
          }
        }
      }
    }
  }
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = describe(info.param);
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuKernelTest, ::testing::ValuesIn(all_cases()), case_name);

TEST(CpuKernel, LongTwoSegmentCache) {
  // Many blocks: the running maximum and output are rescaled many times.
  Case c{Storage::kFloat, 8, 2, 64, {4, 3000}, false};
  run_case<float>(c, 9);
}

TEST(CpuKernel, Bfloat16DotProductsChangeOnlyBfloat16Storage) {
  // Rounding the query is a real change where the path exists: the sweep's
  // reference follows it; here, that it is confined to bfloat16 storage.
  EXPECT_FALSE(sinkkv::CpuKernel::uses_bfloat16_dot<float>(128));
  EXPECT_FALSE(sinkkv::CpuKernel::uses_bfloat16_dot<Eigen::half>(128));
  EXPECT_FALSE(sinkkv::CpuKernel::uses_bfloat16_dot<Eigen::bfloat16>(48));
  EXPECT_FALSE(sinkkv::CpuKernel::uses_bfloat16_dot<Eigen::bfloat16>(512));
  EXPECT_EQ(sinkkv::CpuKernel::uses_bfloat16_dot<Eigen::bfloat16>(128), sinkkv::detail::simd::kBfloat16Dot);
  std::cout << "bfloat16 dot products: " << (sinkkv::detail::simd::kBfloat16Dot ? "VDPBF16PS" : "not built") << "\n";
}

TEST(CpuKernel, ReportsItsVectorPath) {
  std::cout << "vector path: " << sinkkv::detail::simd::kIsa << ", " << sinkkv::CpuKernel::simd_lanes()
            << " lanes\n";
  EXPECT_EQ(sinkkv::CpuKernel::uses_vector_path<double>(64), false);
  EXPECT_EQ(sinkkv::CpuKernel::uses_vector_path<float>(64), sinkkv::detail::simd::kAvailable);
}

}  // namespace

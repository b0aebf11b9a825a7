// Tests for kernels/cpu.hpp: every instruction-set variant of CpuKernel
// against ReferenceKernel (the double-precision oracle) over awkward shapes,
// segment splits, ALiBi, every storage type, and NaN/Inf inputs; the
// dispatcher's choice of variant; and that a call never allocates.
//
// One binary tests every variant this CPU runs (the others skip): the
// variants are compiled whatever the flags and chosen at run time. CTest
// also runs it under qemu-x86_64 as CPUs without AVX2 or AVX-512, with
// SINKKV_EXPECT_BEST_ISA naming the variant the dispatcher must pick there.
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/reference.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "support/kernel_variants.hpp"
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

/// Where to put a non-finite input (NaN/Inf tests), else kNone.
enum class Poison { kNone, kKeyNan, kValueNan, kQueryNan, kKeyPlusInf, kKeyMinusInf, kValuePlusInf };

std::string poison_name(Poison p) {
  switch (p) {
    case Poison::kNone: return "none";
    case Poison::kKeyNan: return "key NaN";
    case Poison::kValueNan: return "value NaN";
    case Poison::kQueryNan: return "query NaN";
    case Poison::kKeyPlusInf: return "key plus inf";
    case Poison::kKeyMinusInf: return "key minus inf";
    case Poison::kValuePlusInf: return "value plus inf";
  }
  return "?";
}

/// Runs CpuKernel with variant `isa` on case c and checks every output and
/// log-sum-exp against ReferenceKernel; with a poison, one element of one
/// token of KV head 0 (or of query head 0) is replaced first.
template <class T>
void run_case(sinkkv::InstructionSet isa, const Case& c, unsigned seed, Poison poison = Poison::kNone) {
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

  // The poisoned element: token total / 2 (slot total / 2 of KV head 0), dim head_dim / 2.
  const std::size_t poisoned = static_cast<std::size_t>(total / 2) * c.head_dim + c.head_dim / 2;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  switch (poison) {
    case Poison::kNone: break;
    case Poison::kKeyNan: keys[poisoned] = sinkkv::detail::from_double<T>(nan); break;
    case Poison::kValueNan: values[poisoned] = sinkkv::detail::from_double<T>(nan); break;
    case Poison::kQueryNan: queries[static_cast<std::size_t>(c.head_dim / 2)] = static_cast<C>(nan); break;
    case Poison::kKeyPlusInf: keys[poisoned] = sinkkv::detail::from_double<T>(inf); break;
    case Poison::kKeyMinusInf: keys[poisoned] = sinkkv::detail::from_double<T>(-inf); break;
    case Poison::kValuePlusInf: values[poisoned] = sinkkv::detail::from_double<T>(inf); break;
  }

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
  sinkkv::CpuKernel kernel(isa);
  kernel.bfloat16_dot_products = c.bfloat16_dot;
  const bool rounded = c.bfloat16_dot && kernel.uses_bfloat16_dot<T>(c.head_dim);
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
  const double atol = tolerance_scale * kAbsolute, rtol = tolerance_scale * kRelative;
  const std::string where = describe(c) + ", variant " + sinkkv::instruction_set_name(isa) +
                            (poison == Poison::kNone ? "" : ", poison " + poison_name(poison));
  bool any_non_finite = false;
  for (int h = 0; h < c.query_heads; ++h) {
    for (int d = 0; d < c.head_dim; ++d) {
      const double want = static_cast<double>(expected[static_cast<std::size_t>(h) * out_stride + d]);
      const double got = static_cast<double>(actual[static_cast<std::size_t>(h) * out_stride + d]);
      any_non_finite = any_non_finite || !std::isfinite(want);
      const std::string problem = sinkkv::testing::compare_value(got, want, atol, rtol);
      ASSERT_TRUE(problem.empty()) << "head " << h << " dim " << d << ": " << problem << " (" << where << ")";
    }
    const double want = static_cast<double>(expected_lse[h]);
    const double got = static_cast<double>(actual_lse[h]);
    const std::string problem = sinkkv::testing::compare_value(got, want, atol, rtol);
    ASSERT_TRUE(problem.empty()) << "log-sum-exp of head " << h << ": " << problem << " (" << where << ")";
  }
  if (poison == Poison::kKeyNan || poison == Poison::kValueNan || poison == Poison::kQueryNan ||
      poison == Poison::kKeyPlusInf || poison == Poison::kValuePlusInf) {
    // The reference must itself see the poison, or the check above proves nothing.
    EXPECT_TRUE(any_non_finite) << "the reference stayed finite: the poisoned input was not read (" << where << ")";
  }
}

template <class... Args>
void run_for_storage(Storage storage, sinkkv::InstructionSet isa, const Case& c, Args... args) {
  switch (storage) {
    case Storage::kFloat: run_case<float>(isa, c, args...); break;
    case Storage::kHalf: run_case<Eigen::half>(isa, c, args...); break;
    case Storage::kBfloat16: run_case<Eigen::bfloat16>(isa, c, args...); break;
    case Storage::kDouble: run_case<double>(isa, c, args...); break;
  }
}

std::string identifier(std::string name) {
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

class CpuKernelSweep : public ::testing::TestWithParam<std::tuple<sinkkv::InstructionSet, Case>> {};

TEST_P(CpuKernelSweep, MatchesReference) {
  const auto& [isa, c] = GetParam();
  SINKKV_SKIP_UNLESS_SUPPORTED(isa);
  const unsigned seed = 1 + static_cast<unsigned>(c.storage);
  run_for_storage(c.storage, isa, c, seed);
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
        // Keep each case quick: the long splits run on the small shapes.
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

INSTANTIATE_TEST_SUITE_P(
    Variants, CpuKernelSweep,
    ::testing::Combine(::testing::ValuesIn(sinkkv::testing::all_variants()), ::testing::ValuesIn(all_cases())),
    [](const ::testing::TestParamInfo<CpuKernelSweep::ParamType>& info) {
      return identifier(std::string(sinkkv::instruction_set_name(std::get<0>(info.param))) + " " +
                        describe(std::get<1>(info.param)));
    });

/// Non-finite inputs, one kind per test, on every variant and storage type.
class CpuKernelNonFinite
    : public ::testing::TestWithParam<std::tuple<sinkkv::InstructionSet, Storage, Poison>> {};

TEST_P(CpuKernelNonFinite, NeverComesOutFinite) {
  const auto& [isa, storage, poison] = GetParam();
  SINKKV_SKIP_UNLESS_SUPPORTED(isa);
  // Two KV heads (the poison is in head 0's rows: head 1's outputs must stay
  // exact), three segments, a block boundary inside, ALiBi.
  const Case c{storage, 8, 2, 64, {4, 90, 40}, true};
  run_for_storage(storage, isa, c, 11u, poison);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CpuKernelNonFinite,
    ::testing::Combine(::testing::ValuesIn(sinkkv::testing::all_variants()),
                       ::testing::Values(Storage::kFloat, Storage::kHalf, Storage::kBfloat16, Storage::kDouble),
                       ::testing::Values(Poison::kKeyNan, Poison::kValueNan, Poison::kQueryNan, Poison::kKeyPlusInf,
                                         Poison::kKeyMinusInf, Poison::kValuePlusInf)),
    [](const ::testing::TestParamInfo<CpuKernelNonFinite::ParamType>& info) {
      return identifier(std::string(sinkkv::instruction_set_name(std::get<0>(info.param))) + " " +
                        storage_name(std::get<1>(info.param)) + " " + poison_name(std::get<2>(info.param)));
    });

class CpuKernelVariant : public ::testing::TestWithParam<sinkkv::InstructionSet> {};

TEST_P(CpuKernelVariant, LongTwoSegmentCacheMatchesReference) {
  // Many blocks: the running maximum and output are rescaled many times.
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  run_case<float>(GetParam(), Case{Storage::kFloat, 8, 2, 64, {4, 3000}, false}, 9);
}

TEST_P(CpuKernelVariant, Bfloat16DotProductsTakeEffectOnlyOnBfloat16StorageWithVdpbf16ps) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  const sinkkv::CpuKernel kernel(GetParam());
  EXPECT_FALSE(kernel.uses_bfloat16_dot<float>(128));
  EXPECT_FALSE(kernel.uses_bfloat16_dot<Eigen::half>(128));
  EXPECT_FALSE(kernel.uses_bfloat16_dot<Eigen::bfloat16>(48));
  EXPECT_FALSE(kernel.uses_bfloat16_dot<Eigen::bfloat16>(512));
  EXPECT_EQ(kernel.uses_bfloat16_dot<Eigen::bfloat16>(128), GetParam() == sinkkv::InstructionSet::kAvx512Bf16);
}

TEST_P(CpuKernelVariant, ReportsItsVectorWidth) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  const sinkkv::CpuKernel kernel(GetParam());
  EXPECT_EQ(kernel.instruction_set(), GetParam());
  int lanes = 1;
  switch (GetParam()) {
    case sinkkv::InstructionSet::kSse2:
    case sinkkv::InstructionSet::kNeon: lanes = 4; break;
    case sinkkv::InstructionSet::kAvx2: lanes = 8; break;
    case sinkkv::InstructionSet::kAvx512:
    case sinkkv::InstructionSet::kAvx512Bf16: lanes = 16; break;
    default: break;
  }
  EXPECT_EQ(kernel.vector_lanes(), lanes);
  EXPECT_FALSE(kernel.uses_vector_path<double>(64));
  EXPECT_EQ(kernel.uses_vector_path<float>(64), lanes > 1);
  EXPECT_EQ(kernel.uses_vector_path<Eigen::half>(lanes * 3), lanes > 1);
  EXPECT_EQ(kernel.uses_vector_path<float>(lanes * 3 + 1), false);
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuKernelVariant, ::testing::ValuesIn(sinkkv::testing::all_variants()),
                         [](const ::testing::TestParamInfo<sinkkv::InstructionSet>& info) {
                           return identifier(sinkkv::instruction_set_name(info.param));
                         });

// ---- dispatch ----------------------------------------------------------------

TEST(CpuKernelDispatch, DefaultIsTheBestVariantTheCpuRuns) {
  if (std::getenv("SINKKV_CPU_ISA") != nullptr) GTEST_SKIP() << "SINKKV_CPU_ISA chooses the default here";
  EXPECT_EQ(sinkkv::CpuKernel{}.instruction_set(), sinkkv::CpuKernel::best_instruction_set());
  std::cout << "best variant here: " << sinkkv::instruction_set_name(sinkkv::CpuKernel::best_instruction_set())
            << "\n";
}

TEST(CpuKernelDispatch, PicksTheVariantThisCpuIsExpectedToRun) {
  // Set by the CTest runs under qemu-x86_64 -cpu <model>, whose variant is known.
  const char* expected = std::getenv("SINKKV_EXPECT_BEST_ISA");
  if (expected == nullptr) GTEST_SKIP() << "SINKKV_EXPECT_BEST_ISA not set";
  EXPECT_STREQ(sinkkv::instruction_set_name(sinkkv::CpuKernel::best_instruction_set()), expected);
}

TEST(CpuKernelDispatch, AgreesWithTheFlagsTheKernelReports) {
  // An independent account of this CPU: the flags Linux lists for it.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = line + " ";
      break;
    }
  }
  if (!SINKKV_DYNAMIC_DISPATCH) GTEST_SKIP() << "static dispatch: the variant is the flags', not the CPU's";
  if (flags.empty() || std::getenv("SINKKV_EXPECT_BEST_ISA") != nullptr) {
    GTEST_SKIP() << "no x86 /proc/cpuinfo flags (or an emulated CPU, whose flags Linux does not list)";
  }
  const auto has = [&](const char* flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
  EXPECT_EQ(sinkkv::CpuKernel::supports(sinkkv::InstructionSet::kSse2), has("sse2"));
  EXPECT_EQ(sinkkv::CpuKernel::supports(sinkkv::InstructionSet::kAvx2), has("avx2") && has("fma") && has("f16c"));
  const bool avx512 = has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq");
  EXPECT_EQ(sinkkv::CpuKernel::supports(sinkkv::InstructionSet::kAvx512), avx512);
  EXPECT_EQ(sinkkv::CpuKernel::supports(sinkkv::InstructionSet::kAvx512Bf16), avx512 && has("avx512_bf16"));
}

TEST(CpuKernelDispatch, ScalarVariantRunsEverywhere) {
  EXPECT_TRUE(sinkkv::CpuKernel::supports(sinkkv::InstructionSet::kScalar));
}

TEST(CpuKernelDispatch, UnsupportedVariantIsAnErrorNamingIt) {
  sinkkv::InstructionSet missing = sinkkv::InstructionSet::kAuto;
  for (sinkkv::InstructionSet isa : sinkkv::testing::all_variants()) {
    if (!sinkkv::CpuKernel::supports(isa)) missing = isa;
  }
  if (missing == sinkkv::InstructionSet::kAuto) GTEST_SKIP() << "this machine runs every variant";
  try {
    sinkkv::CpuKernel kernel(missing);
    FAIL() << "constructing with " << sinkkv::instruction_set_name(missing) << " did not throw";
  } catch (const sinkkv::Error& e) {
    EXPECT_NE(std::string(e.what()).find(sinkkv::instruction_set_name(missing)), std::string::npos) << e.what();
  }
}

TEST(CpuKernelDispatch, EnvironmentVariableNamesTheDefault) {
  // The cached default is read once per process; the reading itself is
  // checked here through the uncached function.
  const char* saved = std::getenv("SINKKV_CPU_ISA");
  const std::string restore = saved != nullptr ? saved : "";
  ::setenv("SINKKV_CPU_ISA", "scalar", 1);
  EXPECT_EQ(sinkkv::detail::instruction_set_from_environment(), sinkkv::InstructionSet::kScalar);
  ::setenv("SINKKV_CPU_ISA", "auto", 1);
  EXPECT_EQ(sinkkv::detail::instruction_set_from_environment(), sinkkv::CpuKernel::best_instruction_set());
  ::setenv("SINKKV_CPU_ISA", "avx3000", 1);
  try {
    sinkkv::detail::instruction_set_from_environment();
    ADD_FAILURE() << "an unknown name did not throw";
  } catch (const sinkkv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("avx3000"), std::string::npos) << e.what();
  }
  if (saved != nullptr) {
    ::setenv("SINKKV_CPU_ISA", restore.c_str(), 1);
  } else {
    ::unsetenv("SINKKV_CPU_ISA");
  }
}

}  // namespace

// Tests for kernels/cpu.hpp, chunks: every instruction-set variant of
// CpuKernel's chunk operator against ReferenceKernel (the double-precision
// oracle) on random bands, two frames, sink-cache layouts, GQA groups 1..16
// (non-powers of two included), awkward head sizes, ALiBi, every storage
// type, queries that see nothing, NaN/Inf; and that a call never allocates.
#include <sinkkv/kernels/cpu.hpp>
#include <sinkkv/kernels/reference.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "support/chunks.hpp"
#include "support/kernel_variants.hpp"
// Last: it defines malloc & co. after the system headers declared them.
#include "support/allocation_counter.hpp"

namespace {

using sinkkv::InstructionSet;
using sinkkv::testing::ChunkSpec;
using sinkkv::testing::HandMadeChunk;

enum class Storage { kFloat, kHalf, kBfloat16, kDouble };

std::string storage_name(Storage s) {
  switch (s) {
    case Storage::kFloat: return "float";
    case Storage::kHalf: return "half";
    case Storage::kBfloat16: return "bfloat16";
    case Storage::kDouble: return "double";
  }
  return "?";
}

std::string identifier(std::string name) {
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

/// |kernel - reference| <= atol + rtol |reference| as in kernels_cpu_test:
/// both read the same stored K/V, so only float arithmetic differs.
constexpr double kTolerance = 2e-5;

/// How a test's kernel is configured and what it is compared with.
struct KernelRun {
  InstructionSet isa;
  bool bfloat16_dot = false;
  double query_magnitude = 1.0;
};

/// Runs CpuKernel (variant run.isa) and ReferenceKernel on the chunk and
/// compares every output element and log-sum-exp; returns the kernel's
/// result for further checks.
template <class T>
typename HandMadeChunk<T>::Result expect_matches_reference(HandMadeChunk<T>& chunk, const KernelRun& run,
                                                           const std::string& what) {
  using C = sinkkv::compute_t<T>;
  const ChunkSpec& spec = chunk.spec();
  sinkkv::CpuKernel kernel(run.isa);
  kernel.bfloat16_dot_products = run.bfloat16_dot;
  const bool rounded = run.bfloat16_dot && kernel.uses_bfloat16_dot<T>(spec.head_dim);

  // The reference sees the query rounded to bfloat16 when the kernel does.
  HandMadeChunk<T> reference_chunk = chunk;
  if (rounded) {
    for (int f = 0; f < sinkkv::kNumFrames; ++f) {
      for (int i = 0; i < spec.num_queries; ++i) {
        for (int q = 0; q < spec.query_heads; ++q) {
          C* row = reference_chunk.query(f, i, q);
          for (int d = 0; d < spec.head_dim; ++d) {
            row[d] = static_cast<C>(static_cast<float>(Eigen::bfloat16(static_cast<float>(row[d]))));
          }
        }
      }
    }
  }
  auto expected = reference_chunk.make_result();
  sinkkv::ReferenceKernel{}(reference_chunk.args(), expected.view());

  auto actual = chunk.make_result();
  const std::size_t before = sinkkv::testing::allocation_count;
  kernel(chunk.args(), actual.view());
  EXPECT_EQ(sinkkv::testing::allocation_count - before, 0u) << "CpuKernel allocated during a chunk call: " << what;

  const double scale = (std::is_same_v<T, double> ? 1e-6 : 1.0) * std::max(1.0, run.query_magnitude);
  for (int i = 0; i < spec.num_queries; ++i) {
    for (int q = 0; q < spec.query_heads; ++q) {
      for (int d = 0; d < spec.head_dim; ++d) {
        const std::string problem =
            sinkkv::testing::compare_value(static_cast<double>(actual.at(i, q, d)),
                                           static_cast<double>(expected.at(i, q, d)), scale * kTolerance,
                                           scale * kTolerance);
        if (!problem.empty()) {
          ADD_FAILURE() << "query " << i << " head " << q << " dim " << d << ": " << problem << " (" << what << ")";
          return actual;
        }
      }
      const double want = static_cast<double>(expected.lse(i, q)), got = static_cast<double>(actual.lse(i, q));
      const std::string problem = sinkkv::testing::compare_value(got, want, scale * kTolerance, scale * kTolerance);
      if (!problem.empty() || (want == -INFINITY) != (got == -INFINITY)) {
        ADD_FAILURE() << "log-sum-exp of query " << i << " head " << q << ": got " << got << ", reference " << want
                      << " (" << what << ")";
        return actual;
      }
    }
  }
  return actual;
}

template <class F>
void for_storage(Storage storage, F&& f) {
  switch (storage) {
    case Storage::kFloat: f(float{}); break;
    case Storage::kHalf: f(Eigen::half{}); break;
    case Storage::kBfloat16: f(Eigen::bfloat16{}); break;
    case Storage::kDouble: f(double{}); break;
  }
}

// ---- random bands, every variant -------------------------------------------

struct RandomCase {
  Storage storage;
  int num_queries, query_heads, kv_heads, head_dim;
  bool alibi;
  bool bfloat16_dot;
  unsigned seed;
};

std::string describe(const RandomCase& c) {
  std::ostringstream os;
  os << storage_name(c.storage) << " C" << c.num_queries << " q" << c.query_heads << " kv" << c.kv_heads << " d"
     << c.head_dim << (c.alibi ? " alibi" : "") << (c.bfloat16_dot ? " bf16dot" : "") << " seed" << c.seed;
  return os.str();
}

class CpuKernelChunkSweep : public ::testing::TestWithParam<std::tuple<InstructionSet, RandomCase>> {};

TEST_P(CpuKernelChunkSweep, RandomBandsMatchReference) {
  const auto& [isa, c] = GetParam();
  SINKKV_SKIP_UNLESS_SUPPORTED(isa);
  std::mt19937 rng(c.seed);
  const ChunkSpec spec = sinkkv::testing::random_chunk(rng, c.num_queries, c.query_heads, c.kv_heads, c.head_dim,
                                                       c.alibi);
  for_storage(c.storage, [&](auto tag) {
    using T = decltype(tag);
    HandMadeChunk<T> chunk(spec, c.seed);
    expect_matches_reference(chunk, KernelRun{isa, c.bfloat16_dot}, describe(c));
  });
}

std::vector<RandomCase> random_cases() {
  struct Shape {
    int query_heads, kv_heads, head_dim;
  };
  // Groups 1..16 (3, 5, 6, 12 not powers of two; 16 and 20 beyond one vector
  // of rows on some variants), head sizes on and off every vector width.
  const Shape shapes[] = {{2, 2, 16}, {8, 2, 64}, {6, 2, 32}, {5, 1, 48}, {12, 1, 32}, {16, 1, 64},
                          {20, 1, 32}, {3, 1, 17}, {8, 8, 64}, {32, 8, 128}, {4, 1, 256}};
  const int queries[] = {1, 3, 17, 40};
  std::vector<RandomCase> cases;
  unsigned seed = 100;
  for (Storage storage : {Storage::kFloat, Storage::kHalf, Storage::kBfloat16, Storage::kDouble}) {
    for (const Shape& shape : shapes) {
      for (int c : queries) {
        // Keep the reference quick: it costs queries x heads x tokens x dim.
        if (static_cast<double>(c) * shape.query_heads * shape.head_dim > 60000) continue;
        const bool alibi = (seed % 3) == 0;
        cases.push_back({storage, c, shape.query_heads, shape.kv_heads, shape.head_dim, alibi, false, seed++});
        if (storage == Storage::kBfloat16 && shape.head_dim % 32 == 0) {
          cases.push_back({storage, c, shape.query_heads, shape.kv_heads, shape.head_dim, alibi, true, seed++});
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CpuKernelChunkSweep,
    ::testing::Combine(::testing::ValuesIn(sinkkv::testing::all_variants()), ::testing::ValuesIn(random_cases())),
    [](const ::testing::TestParamInfo<CpuKernelChunkSweep::ParamType>& info) {
      return identifier(std::string(sinkkv::instruction_set_name(std::get<0>(info.param))) + " " +
                        describe(std::get<1>(info.param)));
    });

// ---- one behaviour each, every variant -------------------------------------

class CpuKernelChunk : public ::testing::TestWithParam<InstructionSet> {};

TEST_P(CpuKernelChunk, SinkCacheChunkWrappingTheRingMatchesReference) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // 4 sinks, window 100, 150 cached tokens, a 70-query chunk, the ring
  // wrapped after 90 slots: two stream-frame segments and a sink segment.
  HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 100, 150, 70, 90, 32, 8, 128), 1);
  expect_matches_reference(chunk, KernelRun{GetParam()}, "sink cache chunk");
}

TEST_P(CpuKernelChunk, ChunkStraddlingTheFirstEvictionMatchesReference) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // 20 cached tokens and a 50-query chunk through a 40-token window: the
  // window fills during the chunk, so early queries see all, later ones a
  // sliding part, and the sink frame's offsets stop growing.
  HandMadeChunk<Eigen::half> chunk(sinkkv::testing::sink_cache_chunk(2, 40, 20, 50, 0, 8, 2, 64), 2);
  expect_matches_reference(chunk, KernelRun{GetParam()}, "first eviction");
}

TEST_P(CpuKernelChunk, WindowOfOneSeesOnlyItselfAndTheSinks) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 1, 0, 33, 0, 16, 4, 64), 3);
  expect_matches_reference(chunk, KernelRun{GetParam()}, "window 1");
}

TEST_P(CpuKernelChunk, QueriesThatSeeNothingGetZerosAndMinusInfinity) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // One stream segment of 30 tokens, token j at distance -10 + i - j from
  // query i: queries 0..9 see nothing, query i >= 10 tokens 0..i-10.
  ChunkSpec spec;
  spec.num_queries = 24;
  spec.query_heads = 8;
  spec.kv_heads = 2;
  spec.head_dim = 64;
  spec.segments = {{30, sinkkv::kStreamFrame, -10}};
  for (int f = 0; f < sinkkv::kNumFrames; ++f) {
    for (int i = 0; i < spec.num_queries; ++i) spec.offsets[f].push_back(i);
  }
  HandMadeChunk<float> chunk(spec, 4);
  const auto result = expect_matches_reference(chunk, KernelRun{GetParam()}, "empty visibility");
  for (int q = 0; q < spec.query_heads; ++q) {
    EXPECT_EQ(result.lse(0, q), -std::numeric_limits<float>::infinity()) << "head " << q;
    EXPECT_EQ(result.at(0, q, 5), 0.0f) << "head " << q;
  }
}

TEST_P(CpuKernelChunk, NanInATokenAQueryDoesNotSeeLeavesItFinite) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // The chunk's last token (the newest of the stream segment) gets NaN in
  // its key and value: only the last query sees it, as when the tokens come
  // one at a time; every earlier query's output must stay exact.
  HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 64, 10, 20, 0, 8, 2, 64), 5);
  const int stream_segment = 1, newest = 10 + 20 - 1;
  for (int kv = 0; kv < 2; ++kv) {
    chunk.key(stream_segment, kv, newest)[3] = std::numeric_limits<float>::quiet_NaN();
    chunk.value(stream_segment, kv, newest)[7] = std::numeric_limits<float>::quiet_NaN();
  }
  const auto result = expect_matches_reference(chunk, KernelRun{GetParam()}, "NaN in the newest token");
  EXPECT_TRUE(std::isfinite(result.at(18, 0, 0)));
  EXPECT_TRUE(std::isnan(result.at(19, 0, 0)));
}

TEST_P(CpuKernelChunk, LargeScoresNeedingRescaleMatchReference) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // Scores of magnitude ~100 make every new block maximum rescale.
  HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 200, 180, 20, 0, 16, 4, 16), 6, 40.0);
  KernelRun run{GetParam()};
  run.query_magnitude = 40.0;
  expect_matches_reference(chunk, run, "large scores");
}

TEST_P(CpuKernelChunk, AQueryRangeWritesOnlyItsQueries) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  HandMadeChunk<float> chunk(sinkkv::testing::sink_cache_chunk(4, 64, 30, 20, 0, 8, 2, 64), 7);
  auto whole = chunk.make_result(), part = chunk.make_result(-7.0f);
  const sinkkv::CpuKernel kernel(GetParam());
  kernel(chunk.args(), whole.view());
  kernel.attend_queries(chunk.args(), part.view(), 5, 9);
  for (int i = 0; i < 20; ++i) {
    for (int q = 0; q < 8; ++q) {
      if (i >= 5 && i < 14) {
        EXPECT_NEAR(part.at(i, q, 11), whole.at(i, q, 11), 1e-6) << "query " << i << " head " << q;
        EXPECT_NEAR(part.lse(i, q), whole.lse(i, q), 1e-6) << "query " << i << " head " << q;
      } else {
        EXPECT_EQ(part.at(i, q, 11), -7.0f) << "query " << i << " outside the range was written";
        EXPECT_EQ(part.lse(i, q), -7.0f) << "query " << i << " outside the range was written";
      }
    }
  }
}

TEST_P(CpuKernelChunk, OneQueryChunkEqualsDecode) {
  SINKKV_SKIP_UNLESS_SUPPORTED(GetParam());
  // A chunk of one query over one stream segment is a decode step: the same
  // kernel's two entry points agree to float rounding.
  ChunkSpec spec;
  spec.num_queries = 1;
  spec.query_heads = 32;
  spec.kv_heads = 8;
  spec.head_dim = 128;
  spec.segments = {{300, sinkkv::kStreamFrame, 299}};
  for (int f = 0; f < sinkkv::kNumFrames; ++f) spec.offsets[f] = {0};
  HandMadeChunk<Eigen::half> chunk(spec, 8);
  const sinkkv::ChunkArgs<Eigen::half> args = chunk.args();
  auto chunk_result = chunk.make_result();
  const sinkkv::CpuKernel kernel(GetParam());
  kernel(args, chunk_result.view());

  sinkkv::KVSegment<Eigen::half> segment;
  segment.query = args.frames[sinkkv::kStreamFrame].rows;
  segment.keys = args.segments[0].keys;
  segment.values = args.segments[0].values;
  segment.token_stride = args.segments[0].token_stride;
  segment.head_stride = args.segments[0].head_stride;
  segment.length = 300;
  segment.query_distance = 299;
  sinkkv::AttentionArgs<Eigen::half> decode;
  decode.num_query_heads = 32;
  decode.num_kv_heads = 8;
  decode.head_dim = 128;
  decode.scale = args.scale;
  decode.segments = &segment;
  decode.num_segments = 1;
  std::vector<float> out(32 * 128), lse(32);
  kernel(decode, sinkkv::AttentionOutput<float>{out.data(), 128, lse.data()});
  for (int q = 0; q < 32; ++q) {
    for (int d = 0; d < 128; ++d) {
      ASSERT_NEAR(chunk_result.at(0, q, d), out[q * 128 + d], 1e-5) << "head " << q << " dim " << d;
    }
    ASSERT_NEAR(chunk_result.lse(0, q), lse[q], 1e-5) << "head " << q;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuKernelChunk, ::testing::ValuesIn(sinkkv::testing::all_variants()),
                         [](const ::testing::TestParamInfo<InstructionSet>& info) {
                           return identifier(sinkkv::instruction_set_name(info.param));
                         });

// ---- NaN and infinity in, every variant and storage type --------------------

enum class Poison { kKeyNan, kValueNan, kQueryNan, kKeyPlusInf, kValuePlusInf };

std::string poison_name(Poison p) {
  switch (p) {
    case Poison::kKeyNan: return "key NaN";
    case Poison::kValueNan: return "value NaN";
    case Poison::kQueryNan: return "query NaN";
    case Poison::kKeyPlusInf: return "key plus inf";
    case Poison::kValuePlusInf: return "value plus inf";
  }
  return "?";
}

class CpuKernelChunkNonFinite : public ::testing::TestWithParam<std::tuple<InstructionSet, Storage, Poison>> {};

TEST_P(CpuKernelChunkNonFinite, NeverComesOutFinite) {
  const auto& [isa, storage, poison] = GetParam();
  SINKKV_SKIP_UNLESS_SUPPORTED(isa);
  for_storage(storage, [&](auto tag) {
    using T = decltype(tag);
    using C = sinkkv::compute_t<T>;
    // Token 5 of the window (seen by every query), KV head 0; or query 3's
    // row of head 1. Every other output must stay exact.
    HandMadeChunk<T> chunk(sinkkv::testing::sink_cache_chunk(4, 64, 40, 24, 0, 16, 4, 64), 9);
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    switch (poison) {
      case Poison::kKeyNan: chunk.key(1, 0, 30)[5] = sinkkv::detail::from_double<T>(nan); break;
      case Poison::kValueNan: chunk.value(1, 0, 30)[5] = sinkkv::detail::from_double<T>(nan); break;
      case Poison::kQueryNan: chunk.query(sinkkv::kStreamFrame, 3, 1)[9] = static_cast<C>(nan); break;
      case Poison::kKeyPlusInf: chunk.key(1, 0, 30)[5] = sinkkv::detail::from_double<T>(inf); break;
      case Poison::kValuePlusInf: chunk.value(1, 0, 30)[5] = sinkkv::detail::from_double<T>(inf); break;
    }
    const auto result = expect_matches_reference(chunk, KernelRun{isa}, storage_name(storage) + " " + poison_name(poison));
    const int poisoned_query = poison == Poison::kQueryNan ? 3 : 10;
    const int poisoned_head = poison == Poison::kQueryNan ? 1 : 0;
    // (A +inf key element may meet a negative query element: a -inf score,
    // weight 0, a finite output; the comparison above covers it.)
    if (poison != Poison::kKeyPlusInf) {
      EXPECT_FALSE(std::isfinite(static_cast<double>(result.at(poisoned_query, poisoned_head, 5))))
          << "the poisoned input did not reach the output";
    }
  });
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CpuKernelChunkNonFinite,
    ::testing::Combine(::testing::ValuesIn(sinkkv::testing::all_variants()),
                       ::testing::Values(Storage::kFloat, Storage::kHalf, Storage::kBfloat16, Storage::kDouble),
                       ::testing::Values(Poison::kKeyNan, Poison::kValueNan, Poison::kQueryNan, Poison::kKeyPlusInf,
                                         Poison::kValuePlusInf)),
    [](const ::testing::TestParamInfo<CpuKernelChunkNonFinite::ParamType>& info) {
      return identifier(std::string(sinkkv::instruction_set_name(std::get<0>(info.param))) + " " +
                        storage_name(std::get<1>(info.param)) + " " + poison_name(std::get<2>(info.param)));
    });

// ---- the contract ---------------------------------------------------------------

static_assert(sinkkv::is_chunk_kernel_v<sinkkv::CpuKernel, float>);
static_assert(sinkkv::is_chunk_kernel_v<sinkkv::CpuKernel, Eigen::half>);
static_assert(sinkkv::is_chunk_kernel_v<sinkkv::CpuKernel, Eigen::bfloat16>);
static_assert(sinkkv::is_chunk_kernel_v<sinkkv::CpuKernel, double>);

}  // namespace

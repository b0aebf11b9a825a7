// SinkKVCache: the per-token protocol, engine-facing inputs, ownership.
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/sinkkv.hpp>

#include "support/streams.hpp"

namespace sinkkv {
namespace {

using testing::append_token;
using testing::small_config;
using testing::token_rows;

// The message of the sinkkv::Error that `action` throws, or "" if none.
template <class Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

std::vector<float> attend_all(SinkKVCache<float>& cache, int layer, std::uint64_t query_seed) {
  const CacheConfig& config = cache.config();
  const std::vector<float> query = token_rows(query_seed, 0, 99, config.query_heads() * config.head_dim);
  std::vector<float> out(query.size());
  cache.attend(layer, heads_view(query.data(), config.query_heads(), config.head_dim),
               output_view(out.data(), config.query_heads(), config.head_dim), CpuKernel{});
  return out;
}

TEST(SinkKVCache, IsMoveOnlyWithExplicitClone) {
  static_assert(!std::is_copy_constructible_v<SinkKVCache<float>>);
  static_assert(!std::is_copy_assignable_v<SinkKVCache<float>>);
  static_assert(std::is_nothrow_move_constructible_v<SinkKVCache<float>>);
}

TEST(SinkKVCache, TokensSeenCountsTokensNotLayers) {
  SinkKVCache<float> cache(small_config(3));
  for (int t = 0; t < 10; ++t) append_token(cache, t);
  EXPECT_EQ(cache.tokens_seen(), 10u);
  EXPECT_EQ(cache.size(), 6);
  EXPECT_EQ(cache.capacity(), 6);
  EXPECT_EQ(cache.stream_index(0), 0u);
  EXPECT_EQ(cache.stream_index(2), 6u);
  EXPECT_EQ(cache.stream_index(5), 9u);
}

TEST(SinkKVCache, AppendingALayerTwiceForOneTokenIsRejected) {
  SinkKVCache<float> cache(small_config(3));
  const std::vector<float> rows(16, 0.5f);
  cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  cache.append(2, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  EXPECT_EQ(error_of([&] { cache.append(2, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: layer 2 appended twice for token 0; layer 1 has not received it (every layer takes each "
            "step exactly once)");
}

TEST(SinkKVCache, SkippedLayerIsReportedWhenTheNextTokenStarts) {
  SinkKVCache<float> cache(small_config(2));
  const std::vector<float> rows(16, 0.5f);
  cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  // Layer 1 skipped; the engine moves on to the next token.
  EXPECT_EQ(error_of([&] { cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: layer 0 appended twice for token 0; layer 1 has not received it (every layer takes each "
            "step exactly once)");
}

TEST(SinkKVCache, LayersMayAppendInAnyOrder) {
  SinkKVCache<float> forward(small_config(3));
  SinkKVCache<float> shuffled(small_config(3));
  for (std::uint64_t t = 0; t < 9; ++t) {
    append_token(forward, t);
    for (int layer : {2, 0, 1}) {
      const std::vector<float> k = token_rows(1, t, 2 * layer, 16);
      const std::vector<float> v = token_rows(1, t, 2 * layer + 1, 16);
      shuffled.append(layer, heads_view(k.data(), 2, 8), heads_view(v.data(), 2, 8));
    }
  }
  for (int layer = 0; layer < 3; ++layer) EXPECT_EQ(attend_all(forward, layer, 5), attend_all(shuffled, layer, 5));
}

TEST(SinkKVCache, AttendBeforeAppendIsRejected) {
  SinkKVCache<float> cache(small_config(2));
  EXPECT_EQ(error_of([&] { attend_all(cache, 0, 1); }), "sinkkv: attend on layer 0 of an empty cache");
  const std::vector<float> rows(16, 0.5f);
  cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  EXPECT_EQ(error_of([&] { attend_all(cache, 1, 1); }), "sinkkv: attend on layer 1 before it appended token 0");
}

TEST(SinkKVCache, LayerIndexOutOfRangeIsRejected) {
  SinkKVCache<float> cache(small_config(2));
  const std::vector<float> rows(16, 0.5f);
  EXPECT_EQ(error_of([&] { cache.append(2, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: append: layer 2 outside [0, num_layers 2)");
  EXPECT_EQ(error_of([&] { cache.append(-1, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: append: layer -1 outside [0, num_layers 2)");
}

TEST(SinkKVCache, NullPointersAreRejected) {
  SinkKVCache<float> cache(small_config(1));
  const std::vector<float> rows(32, 0.5f);
  const float* null = nullptr;
  EXPECT_EQ(error_of([&] { cache.append(0, heads_view(null, 2, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: keys pointer is null");
  EXPECT_EQ(error_of([&] { cache.append(0, heads_view(rows.data(), 2, 8), heads_view(null, 2, 8)); }),
            "sinkkv: values pointer is null");
  cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  std::vector<float> out(32);
  EXPECT_EQ(error_of([&] {
              cache.attend(0, heads_view(null, 4, 8), output_view(out.data(), 4, 8), CpuKernel{});
            }),
            "sinkkv: query pointer is null");
  EXPECT_EQ(error_of([&] {
              cache.attend(0, heads_view(rows.data(), 4, 8), output_view(static_cast<float*>(nullptr), 4, 8),
                           CpuKernel{});
            }),
            "sinkkv: attend on layer 0: output pointer is null");
}

TEST(SinkKVCache, WrongShapesAreRejected) {
  SinkKVCache<float> cache(small_config(1));
  const std::vector<float> rows(32, 0.5f);
  EXPECT_EQ(error_of([&] { cache.append(0, heads_view(rows.data(), 4, 8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: keys is [4, 8], expected [2, 8]");
  cache.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8));
  std::vector<float> out(32);
  EXPECT_EQ(error_of([&] {
              cache.attend(0, heads_view(rows.data(), 2, 8), output_view(out.data(), 4, 8), CpuKernel{});
            }),
            "sinkkv: query is [2, 8], expected [4, 8]");
  EXPECT_EQ(error_of([&] {
              cache.attend(0, heads_view(rows.data(), 4, 8), output_view(out.data(), 4, 4), CpuKernel{});
            }),
            "sinkkv: attend on layer 0: output is [4, 4], expected [4, 8]");
}

TEST(SinkKVCache, RejectedAppendChangesNothing) {
  SinkKVCache<float> cache(small_config(1));
  for (int t = 0; t < 5; ++t) append_token(cache, t);
  const std::vector<float> before = attend_all(cache, 0, 3);
  const std::vector<float> rows(32, 0.5f);
  EXPECT_THROW(cache.append(0, heads_view(rows.data(), 3, 8), heads_view(rows.data(), 2, 8)), Error);
  EXPECT_EQ(cache.tokens_seen(), 5u);
  EXPECT_EQ(attend_all(cache, 0, 3), before);
}

TEST(SinkKVCache, EigenInputInEitherStorageOrderMatchesRawPointers) {
  SinkKVCache<float> raw(small_config(1));
  SinkKVCache<float> eigen(small_config(1));
  for (std::uint64_t t = 0; t < 11; ++t) {
    const std::vector<float> k = token_rows(1, t, 0, 16);
    const std::vector<float> v = token_rows(1, t, 1, 16);
    raw.append(0, heads_view(k.data(), 2, 8), heads_view(v.data(), 2, 8));
    const Eigen::Map<const Eigen::Matrix<float, 2, 8, Eigen::RowMajor>> keys(k.data());
    const Eigen::MatrixXf values_column_major = Eigen::Map<const Eigen::Matrix<float, 2, 8, Eigen::RowMajor>>(v.data());
    eigen.append(0, keys, values_column_major);
  }
  const std::vector<float> query = token_rows(7, 0, 99, 32);  // as attend_all(raw, 0, 7)
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(4, 8);
  const Eigen::MatrixXf query_matrix = Eigen::Map<const Eigen::Matrix<float, 4, 8, Eigen::RowMajor>>(query.data());
  eigen.attend(0, query_matrix, out, CpuKernel{});
  const std::vector<float> want = attend_all(raw, 0, 7);
  for (int q = 0; q < 4; ++q) {
    for (int d = 0; d < 8; ++d) EXPECT_EQ(out(q, d), want[static_cast<std::size_t>(q * 8 + d)]);
  }
}

TEST(SinkKVCache, HeadsMajorTensorIsReadThroughItsStrides) {
  // An engine tensor [heads=2, tokens=6, dim=8]: token t of head h at
  // (h * 6 + t) * 8, so head_stride = 48.
  SinkKVCache<float> packed(small_config(1));
  SinkKVCache<float> strided(small_config(1));
  std::vector<float> keys(2 * 6 * 8), values(2 * 6 * 8);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    keys[i] = static_cast<float>(std::sin(0.1 * static_cast<double>(i)));
    values[i] = static_cast<float>(std::cos(0.3 * static_cast<double>(i)));
  }
  for (int t = 0; t < 6; ++t) {
    std::vector<float> k(16), v(16);
    for (int h = 0; h < 2; ++h) {
      for (int d = 0; d < 8; ++d) {
        k[static_cast<std::size_t>(h * 8 + d)] = keys[static_cast<std::size_t>((h * 6 + t) * 8 + d)];
        v[static_cast<std::size_t>(h * 8 + d)] = values[static_cast<std::size_t>((h * 6 + t) * 8 + d)];
      }
    }
    packed.append(0, heads_view(k.data(), 2, 8), heads_view(v.data(), 2, 8));
    strided.append(0, heads_view(keys.data() + t * 8, 2, 8, 48), heads_view(values.data() + t * 8, 2, 8, 48));
  }
  EXPECT_EQ(attend_all(packed, 0, 2), attend_all(strided, 0, 2));
}

TEST(SinkKVCache, CloneIsAnIndependentDeepCopy) {
  SinkKVCache<float> original(small_config(2));
  for (int t = 0; t < 7; ++t) append_token(original, t);
  SinkKVCache<float> copy = original.clone();
  EXPECT_EQ(attend_all(copy, 1, 4), attend_all(original, 1, 4));
  append_token(copy, 7, /*seed=*/2);
  EXPECT_EQ(original.tokens_seen(), 7u);
  EXPECT_EQ(copy.tokens_seen(), 8u);
  SinkKVCache<float> reference(small_config(2));
  for (int t = 0; t < 7; ++t) append_token(reference, t);
  EXPECT_EQ(attend_all(original, 1, 4), attend_all(reference, 1, 4));
}

TEST(SinkKVCache, MovedCacheKeepsItsTokens) {
  SinkKVCache<float> original(small_config(1));
  for (int t = 0; t < 7; ++t) append_token(original, t);
  const std::vector<float> before = attend_all(original, 0, 4);
  SinkKVCache<float> moved(std::move(original));
  EXPECT_EQ(moved.tokens_seen(), 7u);
  EXPECT_EQ(attend_all(moved, 0, 4), before);
}

TEST(SinkKVCache, ResetStartsANewSequence) {
  SinkKVCache<float> reused(small_config(1));
  for (int t = 0; t < 9; ++t) append_token(reused, t, 5);
  reused.reset();
  EXPECT_EQ(reused.tokens_seen(), 0u);
  EXPECT_EQ(reused.size(), 0);
  SinkKVCache<float> fresh(small_config(1));
  for (int t = 0; t < 3; ++t) {
    append_token(reused, t);
    append_token(fresh, t);
  }
  EXPECT_EQ(attend_all(reused, 0, 4), attend_all(fresh, 0, 4));
}

TEST(SinkKVCache, AKernelWithTheWrongSignatureIsNotAKernel) {
  struct NotAKernel {
    void operator()(int) const {}
  };
  static_assert(!is_attention_kernel_v<NotAKernel, float>);
  static_assert(is_attention_kernel_v<CpuKernel, float>);
  static_assert(is_attention_kernel_v<ReferenceKernel, Eigen::bfloat16>);
}

TEST(SinkKVCache, StorageIsSizedOnceFromTheConfiguration) {
  const SinkKVCache<Eigen::half> cache(small_config(3, 4, 60));
  // 3 layers x (K, V) x 2 KV heads x 64 tokens x 8 dims x 2 bytes.
  EXPECT_EQ(cache.storage_bytes(), 3u * 2 * 2 * 64 * 8 * 2);
}

TEST(SinkKVCache, EigenOutputMayBeATemporaryBlock) {
  SinkKVCache<float> cache(small_config(1));
  for (int t = 0; t < 3; ++t) append_token(cache, t);
  const std::vector<float> query = token_rows(7, 0, 99, 32);
  const Eigen::Map<const Eigen::Matrix<float, 4, 8, Eigen::RowMajor>> query_matrix(query.data());
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> big = Eigen::MatrixXf::Zero(6, 8);
  cache.attend(0, query_matrix, big.middleRows(1, 4), CpuKernel{});
  const std::vector<float> want = attend_all(cache, 0, 7);
  for (int q = 0; q < 4; ++q) {
    for (int d = 0; d < 8; ++d) EXPECT_EQ(big(q + 1, d), want[static_cast<std::size_t>(q * 8 + d)]);
  }
  EXPECT_EQ(big.row(0).squaredNorm(), 0.0f);
  EXPECT_EQ(big.row(5).squaredNorm(), 0.0f);
}

TEST(SinkKVCache, ColumnMajorEigenOutputIsRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  const Eigen::MatrixXf query = Eigen::MatrixXf::Ones(4, 8);
  Eigen::MatrixXf out(4, 8);
  EXPECT_EQ(error_of([&] { cache.attend(0, query, out, CpuKernel{}); }),
            "sinkkv: attend on layer 0: output rows must be contiguous (row-major), column stride is 4");
}


// ---- explicit steps -------------------------------------------------------

// Appends token `t`'s rows on `layer` and attends with its query.
void step_layer(SinkKVCache<float>& cache, int layer, std::uint64_t t, bool append = true) {
  const CacheConfig& config = cache.config();
  const std::vector<float> k = token_rows(1, t, 2 * layer, config.num_kv_heads * config.head_dim);
  const std::vector<float> q = token_rows(1, t, 50 + layer, config.query_heads() * config.head_dim);
  std::vector<float> out(q.size());
  if (append) {
    cache.append(layer, heads_view(k.data(), config.num_kv_heads, config.head_dim),
                 heads_view(k.data(), config.num_kv_heads, config.head_dim));
  }
  cache.attend(layer, heads_view(q.data(), config.query_heads(), config.head_dim),
               output_view(out.data(), config.query_heads(), config.head_dim), ReferenceKernel{});
}

TEST(SinkKVCache, SkippedFirstLayerAppendIsCaughtAtItsFirstStepWithExplicitSteps) {
  SinkKVCache<float> cache(small_config(3));
  for (std::uint64_t t = 0; t < 2; ++t) {
    cache.begin_step(t);
    for (int layer = 0; layer < 3; ++layer) step_layer(cache, layer, t);
  }
  cache.begin_step(2);
  EXPECT_EQ(error_of([&] { step_layer(cache, 0, 2, /*append=*/false); }),
            "sinkkv: attend on layer 0 before it appended token 2");
}

TEST(SinkKVCache, SkippedAppendAndAttendIsReportedByTheNextBeginStep) {
  SinkKVCache<float> cache(small_config(3));
  cache.begin_step(0);
  for (int layer = 0; layer < 3; ++layer) step_layer(cache, layer, 0);
  cache.begin_step(1);
  step_layer(cache, 1, 1);
  step_layer(cache, 2, 1);  // layer 0 never ran for token 1
  EXPECT_EQ(error_of([&] { cache.begin_step(2); }), "sinkkv: begin_step at stream index 2: layer 0 has not appended token 1");
  EXPECT_EQ(cache.tokens_seen(), 2u);
}

TEST(SinkKVCache, ExplicitStepsRejectAnAppendOutsideABegunStep) {
  SinkKVCache<float> cache(small_config(1));
  cache.begin_step(0);
  step_layer(cache, 0, 0);
  EXPECT_EQ(error_of([&] { step_layer(cache, 0, 1); }),
            "sinkkv: append on layer 0: step at stream index 1 was not begun; this sequence begins its steps "
            "explicitly (call begin_step first)");
  EXPECT_EQ(cache.tokens_seen(), 1u);
}

TEST(SinkKVCache, BeginStepAtAnotherStreamIndexThanTheNextTokenIsRejected) {
  SinkKVCache<float> cache(small_config(1));
  for (std::uint64_t t = 0; t < 3; ++t) append_token(cache, t);
  EXPECT_EQ(error_of([&] { cache.begin_step(4); }),
            "sinkkv: begin_step at stream index 4, but the next token of this sequence has stream index 3");
  EXPECT_EQ(cache.tokens_seen(), 3u);
}

TEST(SinkKVCache, ResetReturnsToImplicitSteps) {
  SinkKVCache<float> cache(small_config(1));
  cache.begin_step(0);
  step_layer(cache, 0, 0);
  cache.reset();
  step_layer(cache, 0, 0);  // no begin_step needed after a reset
  EXPECT_EQ(cache.tokens_seen(), 1u);
}

// ---- chunks -----------------------------------------------------------------

CacheConfig chunk_config(int max_chunk) {
  CacheConfig config = small_config(2, 2, 5);
  config.max_chunk = max_chunk;
  return config;
}

TEST(SinkKVCache, ChunkLongerThanMaxChunkIsRejected) {
  SinkKVCache<float> cache(chunk_config(4));
  const std::vector<float> rows(5 * 16, 0.5f);
  EXPECT_EQ(error_of([&] { cache.append(0, tokens_view(rows.data(), 5, 2, 8), tokens_view(rows.data(), 5, 2, 8)); }),
            "sinkkv: append of 5 tokens outside [1, max_chunk 4]");
  EXPECT_EQ(cache.tokens_seen(), 0u);
}

TEST(SinkKVCache, LayersAppendingDifferentChunkLengthsAreRejected) {
  SinkKVCache<float> cache(chunk_config(4));
  const std::vector<float> rows(4 * 16, 0.5f);
  cache.append(0, tokens_view(rows.data(), 3, 2, 8), tokens_view(rows.data(), 3, 2, 8));
  EXPECT_EQ(error_of([&] { cache.append(1, tokens_view(rows.data(), 2, 2, 8), tokens_view(rows.data(), 2, 2, 8)); }),
            "sinkkv: append on layer 1 of 2 tokens, but tokens 0..2 has 3 (every layer appends the same tokens)");
}

TEST(SinkKVCache, QueryCountMustEqualTheAppendedTokens) {
  SinkKVCache<float> cache(chunk_config(4));
  const std::vector<float> rows(4 * 32, 0.5f);
  std::vector<float> out(4 * 32);
  cache.append(0, tokens_view(rows.data(), 3, 2, 8), tokens_view(rows.data(), 3, 2, 8));
  EXPECT_EQ(error_of([&] {
              cache.attend(0, tokens_view(rows.data(), 2, 4, 8), tokens_output_view(out.data(), 2, 4, 8),
                           ReferenceKernel{});
            }),
            "sinkkv: attend on layer 0 with 2 queries, but it appended 3 tokens (one query per token)");
}

// Streams chunks; before each chunk, makes one random mistake, expects an
// error, and checks that continuing gives what a clone taken before the
// mistake gives.
TEST(SinkKVCache, EveryRejectedChunkCallLeavesTheCacheAsItWas) {
  std::mt19937 random(11);
  SinkKVCache<float> cache(chunk_config(6));
  const int kv = 2 * 8, q = 4 * 8;
  for (std::uint64_t t = 0, step = 0; step < 40; ++step) {
    const int n = 1 + static_cast<int>(random() % 6);
    std::vector<float> k(static_cast<std::size_t>(6 * kv)), queries(static_cast<std::size_t>(6 * q));
    for (int i = 0; i < 6; ++i) {
      const std::vector<float> row = token_rows(3, t + i, 0, kv);
      const std::vector<float> query = token_rows(3, t + i, 1, q);
      std::copy(row.begin(), row.end(), k.begin() + i * kv);
      std::copy(query.begin(), query.end(), queries.begin() + i * q);
    }
    SinkKVCache<float> before = cache.clone();
    std::vector<float> out(static_cast<std::size_t>(6 * q));
    const auto bad_call = [&](int kind) {
      switch (kind) {
        case 0: cache.append(0, tokens_view(k.data(), 7, 2, 8), tokens_view(k.data(), 7, 2, 8)); break;
        case 1: cache.append(0, tokens_view(k.data(), n, 2, 8), tokens_view(k.data(), n, 3, 8)); break;
        case 2: cache.append(2, tokens_view(k.data(), n, 2, 8), tokens_view(k.data(), n, 2, 8)); break;
        case 3: cache.append(0, tokens_view<float>(nullptr, n, 2, 8), tokens_view(k.data(), n, 2, 8)); break;
        case 4:
          cache.attend(0, tokens_view(queries.data(), n, 3, 8), tokens_output_view(out.data(), n, 3, 8),
                       ReferenceKernel{});
          break;
        default: cache.append(0, tokens_view(k.data() + 8, n, 2, 8, kPacked, -8), tokens_view(k.data(), n, 2, 8)); break;
      }
    };
    EXPECT_THROW(bad_call(static_cast<int>(random() % 6)), Error) << "step " << step;
    std::vector<float> got(static_cast<std::size_t>(n * q)), want(got.size());
    for (SinkKVCache<float>* c : {&cache, &before}) {
      for (int layer = 0; layer < 2; ++layer) {
        c->append(layer, tokens_view(k.data(), n, 2, 8), tokens_view(k.data(), n, 2, 8));
        c->attend(layer, tokens_view(queries.data(), n, 4, 8),
                  tokens_output_view((c == &cache ? got : want).data(), n, 4, 8), ReferenceKernel{});
      }
    }
    ASSERT_EQ(got, want) << "step " << step;
    t += static_cast<std::uint64_t>(n);
  }
}

TEST(SinkKVCache, HeadMajorChunkIsReadThroughItsStrides) {
  SinkKVCache<float> packed(chunk_config(3));
  SinkKVCache<float> head_major(chunk_config(3));
  const std::vector<float> k = token_rows(4, 0, 0, 3 * 16);  // [3 tokens, 2 heads, 8]
  std::vector<float> transposed(k.size());                  // [2 heads, 3 tokens, 8]
  for (int i = 0; i < 3; ++i) {
    for (int h = 0; h < 2; ++h) {
      for (int d = 0; d < 8; ++d) transposed[(h * 3 + i) * 8 + d] = k[(i * 2 + h) * 8 + d];
    }
  }
  for (int layer = 0; layer < 2; ++layer) {
    packed.append(layer, tokens_view(k.data(), 3, 2, 8), tokens_view(k.data(), 3, 2, 8));
    head_major.append(layer, tokens_view(transposed.data(), 3, 2, 8, /*token_stride=*/8, /*head_stride=*/24),
                      tokens_view(transposed.data(), 3, 2, 8, 8, 24));
  }
  const std::vector<float> q = token_rows(4, 0, 1, 3 * 32);
  std::vector<float> from_packed(q.size()), from_head_major(q.size());
  packed.attend(1, tokens_view(q.data(), 3, 4, 8), tokens_output_view(from_packed.data(), 3, 4, 8), CpuKernel{});
  head_major.attend(1, tokens_view(q.data(), 3, 4, 8), tokens_output_view(from_head_major.data(), 3, 4, 8),
                    CpuKernel{});
  EXPECT_EQ(from_packed, from_head_major);
}

TEST(SinkKVCache, EigenChunkMatchesRawPointers) {
  SinkKVCache<float> raw(chunk_config(3));
  SinkKVCache<float> eigen(chunk_config(3));
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::MatrixXf keys = Eigen::MatrixXf::Random(3, 16);  // column-major [tokens, heads * dim]
  const RowMajor queries = RowMajor::Random(3, 32);
  const RowMajor row_major_keys = keys;
  RowMajor eigen_out(3, 32);
  std::vector<float> raw_out(3 * 32);
  for (int layer = 0; layer < 2; ++layer) {
    raw.append(layer, tokens_view(row_major_keys.data(), 3, 2, 8), tokens_view(row_major_keys.data(), 3, 2, 8));
    eigen.append(layer, tokens_view(keys, 2), tokens_view(keys, 2));
  }
  raw.attend(1, tokens_view(queries.data(), 3, 4, 8), tokens_output_view(raw_out.data(), 3, 4, 8), ReferenceKernel{});
  eigen.attend(1, tokens_view(queries, 4), tokens_output_view(eigen_out, 4), ReferenceKernel{});
  for (int i = 0; i < 3 * 32; ++i) EXPECT_EQ(eigen_out.data()[i], raw_out[static_cast<std::size_t>(i)]) << i;
}

// ---- moved-from caches ------------------------------------------------------

TEST(SinkKVCache, MovedFromCacheIsEmptyAndRejectsUseWithAnError) {
  SinkKVCache<float> original(small_config(1));
  for (int t = 0; t < 3; ++t) append_token(original, t);
  SinkKVCache<float> moved(std::move(original));
  EXPECT_EQ(original.tokens_seen(), 0u);  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(original.size(), 0);
  EXPECT_EQ(original.storage_bytes(), 0u);
  const std::vector<float> rows(32, 0.5f);
  std::vector<float> out(32);
  EXPECT_NE(error_of([&] { original.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)); })
                .find("moved-from"),
            std::string::npos);
  EXPECT_THROW(original.attend(0, heads_view(rows.data(), 4, 8), output_view(out.data(), 4, 8), CpuKernel{}), Error);
  EXPECT_THROW(original.begin_step(0), Error);
  original.reset();
  SinkKVCache<float> copy = original.clone();
  EXPECT_EQ(copy.tokens_seen(), 0u);
  EXPECT_THROW(copy.append(0, heads_view(rows.data(), 2, 8), heads_view(rows.data(), 2, 8)), Error);
  original = SinkKVCache<float>(small_config(1));
  append_token(original, 0);
  EXPECT_EQ(original.tokens_seen(), 1u);
}

// ---- hostile inputs -----------------------------------------------------------

TEST(SinkKVCache, NegativeHeadStrideIsRejected) {
  SinkKVCache<float> cache(small_config(1));
  const std::vector<float> rows(64, 0.5f);
  EXPECT_EQ(error_of([&] { cache.append(0, heads_view(rows.data() + 32, 2, 8, -8), heads_view(rows.data(), 2, 8)); }),
            "sinkkv: keys head stride -8 must be >= 0");
  EXPECT_EQ(cache.tokens_seen(), 0u);
}

TEST(SinkKVCache, RowOfAnUnknownKvHeadIsRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  EXPECT_EQ(error_of([&] { (void)cache.key_row(0, 2, 0); }), "sinkkv: key_row: KV head 2 outside [0, num_kv_heads 2)");
  EXPECT_THROW((void)cache.value_row(0, -1, 0), Error);
}

TEST(SinkKVCache, SinkLogitsOfTheWrongLengthAreRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  const std::vector<float> logits(3, 0.5f), q(32, 0.1f);
  std::vector<float> out(32);
  SinkKVCache<float>::Options options;
  options.sink_logits = logits.data();
  options.num_sink_logits = 3;
  EXPECT_EQ(error_of([&] { cache.attend(0, heads_view(q.data(), 4, 8), output_view(out.data(), 4, 8), CpuKernel{}, options); }),
            "sinkkv: attend on layer 0: 3 sink logits, expected one per query head (4)");
}

TEST(SinkKVCache, NanAndPositiveInfiniteSinkLogitsAreRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  const std::vector<float> q(32, 0.1f);
  std::vector<float> out(32);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const std::vector<float> logits = {0.5f, bad, 0.5f, 0.5f};
    SinkKVCache<float>::Options options;
    options.sink_logits = logits.data();
    options.num_sink_logits = 4;
    EXPECT_NE(error_of([&] {
                cache.attend(0, heads_view(q.data(), 4, 8), output_view(out.data(), 4, 8), CpuKernel{}, options);
              }).find("sink logit of query head 1 is"),
              std::string::npos);
  }
}

TEST(SinkKVCache, NegativeInfiniteSinkLogitMeansNoSink) {
  SinkKVCache<float> cache(small_config(1));
  for (int t = 0; t < 4; ++t) append_token(cache, t);
  const std::vector<float> logits(4, -std::numeric_limits<float>::infinity());
  SinkKVCache<float>::Options options;
  options.sink_logits = logits.data();
  options.num_sink_logits = 4;
  const std::vector<float> q(32, 0.1f);
  std::vector<float> with(32), without(32);
  cache.attend(0, heads_view(q.data(), 4, 8), output_view(with.data(), 4, 8), ReferenceKernel{}, options);
  cache.attend(0, heads_view(q.data(), 4, 8), output_view(without.data(), 4, 8), ReferenceKernel{});
  EXPECT_EQ(with, without);
}

TEST(SinkKVCache, NonFiniteScaleIsRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  const std::vector<float> q(32, 0.1f);
  std::vector<float> out(32);
  SinkKVCache<float>::Options options;
  options.scale = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(error_of([&] { cache.attend(0, heads_view(q.data(), 4, 8), output_view(out.data(), 4, 8), CpuKernel{}, options); }),
            "sinkkv: attend on layer 0: scale nan must be finite");
}

TEST(SinkKVCache, OverlappingOutputRowsAreRejected) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  const std::vector<float> q(32, 0.1f);
  std::vector<float> out(32);
  EXPECT_EQ(error_of([&] { cache.attend(0, heads_view(q.data(), 4, 8), output_view(out.data(), 4, 8, 0), CpuKernel{}); }),
            "sinkkv: attend on layer 0: output rows overlap (head stride 0, token stride 0, head_dim 8)");
}

TEST(SinkKVCache, LogSumExpOfAFinishedStepIsNotServedOnceTheNextBegins) {
  SinkKVCache<float> cache(small_config(1));
  append_token(cache, 0);
  (void)attend_all(cache, 0, 1);
  EXPECT_NO_THROW((void)cache.log_sum_exp(0, 0));
  append_token(cache, 1);
  EXPECT_EQ(error_of([&] { (void)cache.log_sum_exp(0, 0); }), "sinkkv: log_sum_exp: nothing was attended yet");
  (void)attend_all(cache, 0, 1);
  cache.reset();
  EXPECT_THROW((void)cache.log_sum_exp(0, 0), Error);
}

// A kernel that records which query heads each call covers.
struct HeadRangeProbe {
  std::vector<std::pair<int, int>>* calls;
  void operator()(const AttentionArgs<float>& args, const AttentionOutput<float>& out) const {
    calls->emplace_back(args.first_query_head, args.num_query_heads);
    ReferenceKernel{}(args, out);
  }
};

TEST(SinkKVCache, KernelCallsOfHeadsWithTheirOwnPoliciesNameTheirFirstQueryHead) {
  CacheConfig config = small_config(1);  // 2 KV heads, 4 query heads
  config.set_head_policy(0, 1, {0, 3});
  SinkKVCache<float> cache(config);
  append_token(cache, 0);
  std::vector<std::pair<int, int>> calls;
  const std::vector<float> q(32, 0.1f);
  std::vector<float> out(32);
  cache.attend(0, heads_view(q.data(), 4, 8), output_view(out.data(), 4, 8), HeadRangeProbe{&calls});
  EXPECT_EQ(calls, (std::vector<std::pair<int, int>>{{0, 2}, {2, 2}}));
}

// ---- per-layer and per-head policies ----------------------------------------

// Streams `tokens` tokens through `cache` and returns every layer's output
// for every token.
template <class Kernel>
std::vector<float> stream_outputs(SinkKVCache<float>& cache, int tokens, Kernel kernel) {
  const CacheConfig& c = cache.config();
  std::vector<float> all;
  for (int t = 0; t < tokens; ++t) {
    for (int layer = 0; layer < c.num_layers; ++layer) {
      const std::vector<float> k = token_rows(5, t, layer, c.num_kv_heads * c.head_dim);
      const std::vector<float> q = token_rows(5, t, 9 + layer, c.query_heads() * c.head_dim);
      std::vector<float> out(q.size());
      cache.append(layer, heads_view(k.data(), c.num_kv_heads, c.head_dim), heads_view(k.data(), c.num_kv_heads, c.head_dim));
      cache.attend(layer, heads_view(q.data(), c.query_heads(), c.head_dim), output_view(out.data(), c.query_heads(), c.head_dim),
                   kernel);
      all.insert(all.end(), out.begin(), out.end());
    }
  }
  return all;
}

TEST(SinkKVCache, PoliciesSetPerHeadToTheUniformValuesGiveBitIdenticalOutputs) {
  const CacheConfig uniform = small_config(2, 3, 7);
  CacheConfig spelled_out = uniform;
  spelled_out.set_layer_policy(0, {3, 7});
  spelled_out.set_head_policy(1, 1, {3, 7});
  SinkKVCache<float> a(uniform), b(spelled_out), c(uniform), d(spelled_out);
  EXPECT_EQ(stream_outputs(a, 40, CpuKernel{}), stream_outputs(b, 40, CpuKernel{}));
  EXPECT_EQ(stream_outputs(c, 40, ReferenceKernel{}), stream_outputs(d, 40, ReferenceKernel{}));
  EXPECT_EQ(a.storage_bytes(), b.storage_bytes());
}

TEST(SinkKVCache, MemoryOfMixedPoliciesIsTheSumOfTheHeads) {
  CacheConfig config = small_config(3, 4, 60);  // 2 KV heads x 8 dims per layer
  config.max_chunk = 5;
  config.set_layer_policy(1, {0, 8});
  config.set_head_policy(2, 0, {1, 500});
  const SinkKVCache<Eigen::half> cache(config);
  std::size_t rows = 0;  // K and V rows over every head: sinks + window + chunk room
  for (int layer = 0; layer < 3; ++layer) {
    for (int head = 0; head < 2; ++head) rows += 2 * static_cast<std::size_t>(config.policy(layer, head).capacity() + 4);
  }
  EXPECT_EQ(cache.storage_bytes(), rows * 8 * sizeof(Eigen::half));
}

}  // namespace
}  // namespace sinkkv

// SinkKVCache: the per-token protocol, engine-facing inputs, ownership.
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

}  // namespace
}  // namespace sinkkv

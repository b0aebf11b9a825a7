// append() and attend() never allocate: every call into the C library's
// allocator made by this binary is counted.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <sinkkv/pool.hpp>
#include <sinkkv/sinkkv.hpp>

#include "support/streams.hpp"
// Last: it defines malloc & co. after the system headers declared them.
#include "support/allocation_counter.hpp"

namespace sinkkv {
namespace {

using testing::allocation_count;

// Streams `tokens` tokens (append on every layer, attend with both kernels)
// and returns how many allocations that made. All inputs are prepared first.
template <class T>
std::size_t allocations_while_streaming(const CacheConfig& config, int tokens) {
  SinkKVCache<T> cache(config);
  const int kv_count = config.num_kv_heads * config.head_dim;
  const int query_count = config.query_heads() * config.head_dim;
  const std::vector<float> keys = testing::token_rows(1, 0, 0, kv_count);
  const std::vector<float> values = testing::token_rows(1, 0, 1, kv_count);
  const std::vector<float> query = testing::token_rows(1, 0, 2, query_count);
  const Eigen::MatrixXf eigen_keys = Eigen::MatrixXf::Random(config.num_kv_heads, config.head_dim);
  const Eigen::MatrixXf eigen_query = Eigen::MatrixXf::Random(config.query_heads(), config.head_dim);
  Eigen::Matrix<compute_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> eigen_out(config.query_heads(),
                                                                                        config.head_dim);
  std::vector<compute_t<T>> out(static_cast<std::size_t>(query_count));
  std::vector<compute_t<T>> sink_logits(static_cast<std::size_t>(config.query_heads()), compute_t<T>(0.5));
  typename SinkKVCache<T>::Options options;
  options.sink_logits = sink_logits.data();
  options.num_sink_logits = config.query_heads();

  const std::size_t before = allocation_count;
  for (int t = 0; t < tokens; ++t) {
    for (int layer = 0; layer < config.num_layers; ++layer) {
      if (layer % 2 == 0) {
        cache.append(layer, heads_view(keys.data(), config.num_kv_heads, config.head_dim),
                     heads_view(values.data(), config.num_kv_heads, config.head_dim));
      } else {
        cache.append(layer, eigen_keys, eigen_keys);
      }
      cache.attend(layer, heads_view(query.data(), config.query_heads(), config.head_dim),
                   output_view(out.data(), config.query_heads(), config.head_dim), CpuKernel{}, options);
      cache.attend(layer, eigen_query, eigen_out, ReferenceKernel{});
    }
  }
  return allocation_count - before;
}

CacheConfig config_for(PositionEncoding encoding) {
  CacheConfig config = testing::small_config(2, 4, 37);
  config.num_query_heads = 8;
  config.head_dim = 16;
  config.encoding = std::move(encoding);
  return config;
}

TEST(ZeroAllocation, CountingSeesOperatorNewAndEigen) {
  if (!testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  std::size_t before = allocation_count;
  std::vector<int> probe(3);
  EXPECT_GT(allocation_count, before);
  before = allocation_count;
  Eigen::MatrixXf matrix(40, 40);
  EXPECT_GT(allocation_count, before);
}

TEST(ZeroAllocation, FloatCacheWithRopeStreamsWithoutAllocating) {
  EXPECT_EQ(allocations_while_streaming<float>(config_for(PositionEncoding::rotary()), 200), 0u);
}

TEST(ZeroAllocation, HalfCacheWithAlibiStreamsWithoutAllocating) {
  EXPECT_EQ(allocations_while_streaming<Eigen::half>(config_for(PositionEncoding::alibi_bias()), 200), 0u);
}

TEST(ZeroAllocation, Bfloat16CacheWithoutPositionsStreamsWithoutAllocating) {
  EXPECT_EQ(allocations_while_streaming<Eigen::bfloat16>(config_for(PositionEncoding::none()), 200), 0u);
}

TEST(ZeroAllocation, DoubleCacheStreamsWithoutAllocating) {
  EXPECT_EQ(allocations_while_streaming<double>(config_for(PositionEncoding::rotary()), 200), 0u);
}

// Streams `steps` chunks of random sizes through append/attend with
// tokens_view (and begin_step if asked); returns the allocations made meanwhile.
template <class T>
std::size_t allocations_while_prefilling(CacheConfig config, int steps, bool explicit_steps) {
  config.max_chunk = 16;
  SinkKVCache<T> cache(config);
  const int kv_count = 16 * config.num_kv_heads * config.head_dim;
  const int query_count = 16 * config.query_heads() * config.head_dim;
  const std::vector<float> keys = testing::token_rows(1, 0, 0, kv_count);
  const std::vector<float> query = testing::token_rows(1, 0, 2, query_count);
  std::vector<compute_t<T>> out(static_cast<std::size_t>(query_count));
  const int sizes[] = {16, 1, 7, 3, 16, 9};
  const std::size_t before = allocation_count;
  for (int step = 0; step < steps; ++step) {
    const int n = sizes[step % 6];
    if (explicit_steps) cache.begin_step(cache.tokens_seen(), n);
    for (int layer = 0; layer < config.num_layers; ++layer) {
      cache.append(layer, tokens_view(keys.data(), n, config.num_kv_heads, config.head_dim),
                   tokens_view(keys.data(), n, config.num_kv_heads, config.head_dim));
      cache.attend(layer, tokens_view(query.data(), n, config.query_heads(), config.head_dim),
                   tokens_output_view(out.data(), n, config.query_heads(), config.head_dim), ReferenceKernel{});
      cache.attend(layer, tokens_view(query.data(), n, config.query_heads(), config.head_dim),
                   tokens_output_view(out.data(), n, config.query_heads(), config.head_dim), CpuKernel{});
    }
  }
  return allocation_count - before;
}

TEST(ZeroAllocation, ChunkedPrefillWithRopeAllocatesNothing) {
  EXPECT_EQ(allocations_while_prefilling<float>(config_for(PositionEncoding::rotary()), 60, true), 0u);
}

TEST(ZeroAllocation, ChunkedPrefillOfPerHeadPoliciesWithAlibiAllocatesNothing) {
  CacheConfig config = config_for(PositionEncoding::alibi_bias());
  config.set_head_policy(1, 1, {0, 5});
  config.set_layer_policy(0, {1, 64});
  EXPECT_EQ(allocations_while_prefilling<Eigen::half>(config, 60, false), 0u);
}

TEST(ZeroAllocation, PreRotatedChunksAllocateNothing) {
  CacheConfig config = config_for(PositionEncoding::rotary());
  config.input_rotation = InputRotation::kStreamRotated;
  EXPECT_EQ(allocations_while_prefilling<Eigen::bfloat16>(config, 60, true), 0u);
}

// A configuration whose storage cannot exist is rejected before any large
// allocation (it once allocated and zeroed a 2 GiB table first).
TEST(ValidationBeforeAllocation, AbsurdLayerCountAllocatesNothingLarge) {
  if (!testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  CacheConfig config = testing::small_config(1);
  config.num_layers = 1 << 28;
  testing::largest_allocation = 0;
  EXPECT_THROW(SinkKVCache<float> cache(config), Error);
  EXPECT_LT(testing::largest_allocation.load(), std::size_t{1} << 16);
}

TEST(ValidationBeforeAllocation, OverflowingProductsAllocateNothingLarge) {
  if (!testing::kCountsAllocations) GTEST_SKIP() << "allocations are not counted under AddressSanitizer";
  CacheConfig config = testing::small_config(1);
  config.num_kv_heads = 1 << 16;
  config.num_query_heads = 1 << 16;
  config.head_dim = 1 << 16;
  testing::largest_allocation = 0;
  EXPECT_THROW(SinkKVCache<float> cache(config), Error);
  EXPECT_LT(testing::largest_allocation.load(), std::size_t{1} << 16);
}

TEST(ValidationBeforeAllocation, StorageTheMachineCannotHoldIsAnErrorNamingItsSize) {
  // AddressSanitizer's operator new aborts on a request this size instead of
  // throwing std::bad_alloc, so the translation into Error is unobservable there.
  if (!testing::kCountsAllocations) GTEST_SKIP() << "AddressSanitizer aborts instead of throwing bad_alloc";
  CacheConfig config = testing::small_config(1);
  config.num_layers = 4096;
  config.num_kv_heads = 64;
  config.num_query_heads = 64;
  config.head_dim = 1024;
  config.window = 1 << 24;  // 2^12 x 2^6 x 2 x 2^24 x 2^10 x 4 bytes = 2^55 bytes
  try {
    SinkKVCache<float> cache(config);
    FAIL() << "allocated 2^55 bytes";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cannot allocate"), std::string::npos) << error.what();
  }
}

// A pool after construction: adding, streaming (single tokens and chunks),
// attending one sequence and batches on a thread pool, releasing.
TEST(ZeroAllocation, SequencePoolStreamsAndBatchesWithoutAllocating) {
  CacheConfig cache = config_for(PositionEncoding::rotary());
  cache.max_chunk = 4;
  cache.set_head_policy(1, 1, {0, 9});
  PoolConfig config;
  config.cache = cache;
  config.page_tokens = 16;
  config.max_pages = 400;
  config.max_sequences = 4;
  SequencePool<float> pool(config);
  ThreadPool threads(1);
  CpuKernel kernel;
  const int kv = cache.num_kv_heads * cache.head_dim, heads = cache.query_heads();
  const std::vector<float> keys = testing::token_rows(1, 0, 0, 4 * kv);
  const std::vector<float> query = testing::token_rows(1, 0, 2, 4 * heads * cache.head_dim);
  std::vector<float> out(query.size()), out2(query.size());
  std::vector<BatchItem<float, float>> items(2);
  const std::size_t before = allocation_count;
  for (int round = 0; round < 3; ++round) {
    const SequenceId a = pool.add(), b = pool.add();
    for (int step = 0; step < 30; ++step) {
      const int n = step % 2 == 0 ? 1 : 4;
      for (int layer = 0; layer < cache.num_layers; ++layer) {
        pool.append(a, layer, tokens_view(keys.data(), n, cache.num_kv_heads, cache.head_dim),
                    tokens_view(keys.data(), n, cache.num_kv_heads, cache.head_dim));
        pool.append(b, layer, tokens_view(keys.data(), 1, cache.num_kv_heads, cache.head_dim),
                    tokens_view(keys.data(), 1, cache.num_kv_heads, cache.head_dim));
        pool.attend(a, layer, tokens_view(query.data(), n, heads, cache.head_dim),
                    tokens_output_view(out.data(), n, heads, cache.head_dim), kernel);
        items[0] = {a, tokens_view(query.data(), n, heads, cache.head_dim),
                    tokens_output_view(out.data(), n, heads, cache.head_dim)};
        items[1] = {b, tokens_view(query.data(), 1, heads, cache.head_dim),
                    tokens_output_view(out2.data(), 1, heads, cache.head_dim)};
        pool.attend_batch(layer, items.data(), 2, kernel, &threads);
      }
    }
    pool.release(a);
    pool.release(b);
  }
  EXPECT_EQ(allocation_count - before, 0u);
}

}  // namespace
}  // namespace sinkkv

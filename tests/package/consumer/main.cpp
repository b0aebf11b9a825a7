#include <sinkkv/sinkkv.hpp>

#include <vector>

int main() {
  sinkkv::CacheConfig config;
  config.num_kv_heads = 1;
  config.head_dim = 4;
  config.num_sinks = 1;
  config.window = 2;
  sinkkv::SinkKVCache<float> cache(config);
  const std::vector<float> k = {1, 0, 0, 1}, v = {1, 2, 3, 4}, q = {0, 1, 1, 0};
  std::vector<float> out(4);
  for (int token = 0; token < 5; ++token) {
    cache.append(0, sinkkv::heads_view(k.data(), 1, 4), sinkkv::heads_view(v.data(), 1, 4));
    cache.attend(0, sinkkv::heads_view(q.data(), 1, 4), sinkkv::output_view(out.data(), 1, 4), sinkkv::CpuKernel{});
  }
  // Every cached value row is {1, 2, 3, 4}, so any softmax gives it back.
  return cache.size() == 3 && out[3] > 3.99f && out[3] < 4.01f ? 0 : 1;
}

/* The C interface from a downstream project: every cached value row is
 * {1, 2, 3, 4}, so any softmax gives it back. */
#include <sinkkv/sinkkv.h>
#include <stdio.h>

int main(void) {
  sinkkv_cache_config config;
  sinkkv_cache* cache = NULL;
  const float k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4}, q[4] = {0, 1, 1, 0};
  float out[4] = {0, 0, 0, 0};
  int token, size = 0, ok = 1;
  if (sinkkv_version() != SINKKV_VERSION || sinkkv_cache_config_init(&config, sizeof config) != SINKKV_OK) return 1;
  config.head_dim = 4;
  config.num_sinks = 1;
  config.window = 2;
  if (sinkkv_cache_create(&config, &cache) != SINKKV_OK) {
    fprintf(stderr, "%s\n", sinkkv_last_error_message());
    return 1;
  }
  for (token = 0; token < 5; ++token) {
    ok = ok && sinkkv_cache_append(cache, 0, 1, k, NULL, v, NULL) == SINKKV_OK;
    ok = ok && sinkkv_cache_attend(cache, 0, 1, q, NULL, out, NULL, NULL) == SINKKV_OK;
  }
  ok = ok && sinkkv_cache_size(cache, 0, 0, &size) == SINKKV_OK && size == 3;
  /* errors come back as codes with a message, never as a crash */
  ok = ok && sinkkv_cache_append(cache, 7, 1, k, NULL, v, NULL) == SINKKV_ERROR_INVALID_ARGUMENT;
  sinkkv_cache_destroy(cache);
  return ok && out[3] > 3.99f && out[3] < 4.01f ? 0 : 1;
}

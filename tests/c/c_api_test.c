/* Tests of the C interface (include/sinkkv/sinkkv.h), written in C.
 *
 * The oracle is independent of the library: a dense attention in double
 * written here (reference_attention) over the tokens StreamingLLM keeps
 * (the first num_sinks of the stream plus the `window` most recent), with
 * the positions it assigns (cache positions 0..n-1, the query last) and
 * the encoding applied to raw rows. Every happy path is checked against
 * it; chunked prefill, strides, explicit steps, reset and clone are also
 * checked against token-at-a-time runs of the same stream.
 *
 * Run `c_api_test` for every test, `c_api_test NAME` for one. Exit code 77
 * means skipped (a test that needs the allocation hooks, under a sanitizer). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <sinkkv/sinkkv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocation_hooks.h"

/* ---- a tiny test harness ---------------------------------------------------- */

static const char* current_test = "";
static int failures = 0;
static int skipped = 0;

#define EXPECT(condition)                                                                         \
  do {                                                                                            \
    if (!(condition)) {                                                                           \
      fprintf(stderr, "%s:%d: [%s] expected %s\n", __FILE__, __LINE__, current_test, #condition); \
      ++failures;                                                                                 \
    }                                                                                             \
  } while (0)

/* The call succeeds, and leaves the thread's message empty. */
#define EXPECT_OK(call)                                                                                           \
  do {                                                                                                            \
    const sinkkv_status status_ = (call);                                                                         \
    if (status_ != SINKKV_OK) {                                                                                   \
      fprintf(stderr, "%s:%d: [%s] %s returned %s: %s\n", __FILE__, __LINE__, current_test, #call,                \
              sinkkv_status_string(status_), sinkkv_last_error_message());                                        \
      ++failures;                                                                                                 \
    } else if (sinkkv_last_error_message()[0] != '\0') {                                                          \
      fprintf(stderr, "%s:%d: [%s] %s succeeded but left the message \"%s\"\n", __FILE__, __LINE__, current_test, \
              #call, sinkkv_last_error_message());                                                                \
      ++failures;                                                                                                 \
    }                                                                                                             \
  } while (0)

/* The call returns `code`, with a message that starts with the function's
 * name and contains `fragment` (the value it names). */
#define EXPECT_STATUS(call, code, fragment) expect_status((call), (code), (fragment), #call, __FILE__, __LINE__)

static void expect_status(sinkkv_status status, sinkkv_status code, const char* fragment, const char* call,
                          const char* file, int line) {
  const char* message = sinkkv_last_error_message();
  size_t name_length = strcspn(call, "(");
  if (status != code) {
    fprintf(stderr, "%s:%d: [%s] %s returned %s, expected %s (message: \"%s\")\n", file, line, current_test, call,
            sinkkv_status_string(status), sinkkv_status_string(code), message);
    ++failures;
    return;
  }
  if (strncmp(message, call, name_length) != 0 || strncmp(message + name_length, ": ", 2) != 0) {
    fprintf(stderr, "%s:%d: [%s] message \"%s\" does not start with \"%.*s: \"\n", file, line, current_test, message,
            (int)name_length, call);
    ++failures;
  }
  if (strstr(message, fragment) == NULL) {
    fprintf(stderr, "%s:%d: [%s] %s: message \"%s\" does not contain \"%s\"\n", file, line, current_test, call, message,
            fragment);
    ++failures;
  }
}

/* |got - want| <= atol + rtol |want| for n values; reports the first miss. */
static int close_to(const float* got, const double* want, int n, double atol, double rtol, const char* what, long t,
                    int layer, int head) {
  int i;
  for (i = 0; i < n; ++i) {
    const double error = fabs((double)got[i] - want[i]);
    if (!(error <= atol + rtol * fabs(want[i]))) {
      fprintf(stderr, "[%s] %s: token %ld layer %d head %d dim %d: got %.9g, reference %.9g (error %.3g)\n",
              current_test, what, t, layer, head, i, (double)got[i], want[i], error);
      ++failures;
      return 0;
    }
  }
  return 1;
}

static int same_floats(const float* a, const float* b, size_t n, const char* what, long t) {
  size_t i;
  for (i = 0; i < n; ++i) {
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      fprintf(stderr, "[%s] %s: token %ld element %zu: %.9g != %.9g\n", current_test, what, t, i, (double)a[i],
              (double)b[i]);
      ++failures;
      return 0;
    }
  }
  return 1;
}

static void* checked_calloc(size_t count, size_t size) {
  void* block = calloc(count, size);
  if (block == NULL) {
    fprintf(stderr, "test: out of memory\n");
    exit(2);
  }
  return block;
}

/* ---- deterministic inputs -------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(void) { /* in [-1, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(rng_state >> 40) / (double)(1ull << 23) - 1.0);
}

/* Every token's raw rows: keys/values [tokens][layers][kv_heads][head_dim],
 * queries [tokens][layers][query_heads][head_dim]. */
typedef struct Stream {
  int tokens, layers, query_heads, kv_heads, head_dim;
  float* keys;
  float* values;
  float* queries;
} Stream;

static Stream make_stream(int tokens, int layers, int query_heads, int kv_heads, int head_dim, uint64_t seed) {
  Stream s;
  size_t i, kv, q;
  s.tokens = tokens;
  s.layers = layers;
  s.query_heads = query_heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  kv = (size_t)tokens * layers * kv_heads * head_dim;
  q = (size_t)tokens * layers * query_heads * head_dim;
  s.keys = (float*)checked_calloc(kv, sizeof(float));
  s.values = (float*)checked_calloc(kv, sizeof(float));
  s.queries = (float*)checked_calloc(q, sizeof(float));
  rng_state = seed;
  for (i = 0; i < kv; ++i) s.keys[i] = uniform();
  for (i = 0; i < kv; ++i) s.values[i] = uniform();
  for (i = 0; i < q; ++i) s.queries[i] = uniform();
  return s;
}

static void free_stream(Stream* s) {
  free(s->keys);
  free(s->values);
  free(s->queries);
}

/* Rows of token t, layer l (then head h at + h * head_dim). */
static const float* key_rows(const Stream* s, long t, int l) {
  return s->keys + ((size_t)t * s->layers + l) * s->kv_heads * s->head_dim;
}
static const float* value_rows(const Stream* s, long t, int l) {
  return s->values + ((size_t)t * s->layers + l) * s->kv_heads * s->head_dim;
}
static const float* query_rows(const Stream* s, long t, int l) {
  return s->queries + ((size_t)t * s->layers + l) * s->query_heads * s->head_dim;
}

/* ---- the independent reference ----------------------------------------------------- */

typedef struct Encoding {
  sinkkv_encoding kind;
  double theta;
  int rotary_dim; /* 0: head_dim */
  sinkkv_rope_layout layout;
  const double* alibi_slopes; /* [query_heads]; the tests always pass explicit slopes */
} Encoding;

static Encoding rope_encoding(double theta) {
  Encoding e;
  memset(&e, 0, sizeof e);
  e.kind = SINKKV_ENCODING_ROPE;
  e.theta = theta;
  e.layout = SINKKV_ROPE_ADJACENT_PAIRS;
  return e;
}

/* Rotates x[head_dim] by RoPE at `position`, in double. */
static void rotate(const Encoding* e, int head_dim, double position, const double* x, double* out) {
  const int rotary = e->rotary_dim == 0 ? head_dim : e->rotary_dim;
  int d, pair;
  for (d = 0; d < head_dim; ++d) out[d] = x[d];
  for (pair = 0; pair < rotary / 2; ++pair) {
    const double angle = position * pow(e->theta, -2.0 * pair / rotary);
    const int a = e->layout == SINKKV_ROPE_ADJACENT_PAIRS ? 2 * pair : pair;
    const int b = e->layout == SINKKV_ROPE_ADJACENT_PAIRS ? 2 * pair + 1 : pair + rotary / 2;
    out[a] = x[a] * cos(angle) - x[b] * sin(angle);
    out[b] = x[a] * sin(angle) + x[b] * cos(angle);
  }
}

/* Attention of query head `head` of token t on `layer` over the tokens a
 * KV head with `policy` keeps after t + 1 tokens, in double: kept tokens
 * at cache positions 0..n-1 in stream order, the query at n-1. `sink_logit`
 * NULL for none. out[head_dim]; returns the log-sum-exp. */
static double reference_attention(const Stream* s, long t, int layer, int head, sinkkv_retention_policy policy,
                                  const Encoding* e, double scale, const float* sink_logit, double* out) {
  const int dim = s->head_dim, kv_head = head / (s->query_heads / s->kv_heads);
  const long sinks = t + 1 < policy.num_sinks ? t + 1 : policy.num_sinks;
  const long first_window = t + 1 - policy.window > policy.num_sinks ? t + 1 - policy.window : policy.num_sinks;
  const long kept = sinks + (t + 1 > first_window ? t + 1 - first_window : 0);
  double* scores = (double*)checked_calloc((size_t)kept, sizeof(double));
  double* query = (double*)checked_calloc((size_t)dim, sizeof(double));
  double* key = (double*)checked_calloc((size_t)dim, sizeof(double));
  double* row = (double*)checked_calloc((size_t)dim, sizeof(double));
  double largest = -INFINITY, total = 0.0, lse;
  long j;
  int d;
  if (scale == 0) scale = 1.0 / sqrt((double)dim);
  for (d = 0; d < dim; ++d) row[d] = query_rows(s, t, layer)[head * dim + d];
  if (e->kind == SINKKV_ENCODING_ROPE) {
    rotate(e, dim, (double)(kept - 1), row, query);
  } else {
    memcpy(query, row, (size_t)dim * sizeof(double));
  }
  for (j = 0; j < kept; ++j) {
    const long stream_index = j < sinks ? j : first_window + (j - sinks);
    double dot = 0.0;
    for (d = 0; d < dim; ++d) row[d] = key_rows(s, stream_index, layer)[kv_head * dim + d];
    if (e->kind == SINKKV_ENCODING_ROPE) {
      rotate(e, dim, (double)j, row, key);
    } else {
      memcpy(key, row, (size_t)dim * sizeof(double));
    }
    for (d = 0; d < dim; ++d) dot += query[d] * key[d];
    scores[j] = scale * dot;
    if (e->kind == SINKKV_ENCODING_ALIBI) scores[j] -= e->alibi_slopes[head] * (double)(kept - 1 - j);
    if (scores[j] > largest) largest = scores[j];
  }
  if (sink_logit != NULL && *sink_logit > largest) largest = *sink_logit;
  for (j = 0; j < kept; ++j) total += exp(scores[j] - largest);
  if (sink_logit != NULL) total += exp(*sink_logit - largest);
  for (d = 0; d < dim; ++d) out[d] = 0.0;
  for (j = 0; j < kept; ++j) {
    const long stream_index = j < sinks ? j : first_window + (j - sinks);
    const double weight = exp(scores[j] - largest) / total;
    for (d = 0; d < dim; ++d) out[d] += weight * value_rows(s, stream_index, layer)[kv_head * dim + d];
  }
  lse = largest + log(total);
  free(scores);
  free(query);
  free(key);
  free(row);
  return lse;
}

/* The policy of one KV head as the configuration says. */
static sinkkv_retention_policy policy_of(const sinkkv_cache_config* c, int layer, int kv_head) {
  sinkkv_retention_policy p;
  p.num_sinks = c->num_sinks;
  p.window = c->window;
  if (c->layer_policies != NULL) p = c->layer_policies[layer];
  if (c->head_policies != NULL) p = c->head_policies[layer * c->num_kv_heads + kv_head];
  return p;
}

/* A small configuration: 2 layers, 4 query heads over 2 KV heads, head_dim
 * 8, 2 sinks + 5 window, RoPE theta 10000, float32. */
static void small_config(sinkkv_cache_config* c) {
  if (sinkkv_cache_config_init(c, sizeof *c) != SINKKV_OK) {
    fprintf(stderr, "sinkkv_cache_config_init failed: %s\n", sinkkv_last_error_message());
    exit(2);
  }
  c->num_layers = 2;
  c->num_query_heads = 4;
  c->num_kv_heads = 2;
  c->head_dim = 8;
  c->num_sinks = 2;
  c->window = 5;
}

typedef struct Scenario {
  sinkkv_cache_config config;
  Encoding encoding;
  long tokens;
  double atol, rtol;
  int use_f64;              /* the _f64 calls (FLOAT64 caches) */
  double scale;             /* 0: default */
  const float* sink_logits; /* [query_heads] or NULL */
} Scenario;

static Scenario small_scenario(void) {
  Scenario s;
  memset(&s, 0, sizeof s);
  small_config(&s.config);
  s.encoding = rope_encoding(10000.0);
  s.tokens = 30; /* several evictions past 2 + 5 */
  s.atol = 2e-6;
  s.rtol = 2e-5;
  return s;
}

/* Streams the scenario one token at a time and checks every output of
 * every layer against the reference. */
static void stream_against_reference(const Scenario* sc) {
  const sinkkv_cache_config* c = &sc->config;
  const int heads = c->num_query_heads == 0 ? c->num_kv_heads : c->num_query_heads;
  const int dim = c->head_dim;
  Stream s = make_stream((int)sc->tokens, c->num_layers, heads, c->num_kv_heads, dim, 1234);
  sinkkv_cache* cache = NULL;
  float* out = (float*)checked_calloc((size_t)heads * dim, sizeof(float));
  double* out64 = (double*)checked_calloc((size_t)heads * dim, sizeof(double));
  double* k64 = (double*)checked_calloc((size_t)c->num_kv_heads * dim, sizeof(double));
  double* v64 = (double*)checked_calloc((size_t)c->num_kv_heads * dim, sizeof(double));
  double* q64 = (double*)checked_calloc((size_t)heads * dim, sizeof(double));
  double* want = (double*)checked_calloc((size_t)dim, sizeof(double));
  sinkkv_attend_options options;
  long t;
  int layer, h, i, ok = 1;
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.scale = sc->scale;
  options.sink_logits = sc->sink_logits;
  options.num_sink_logits = sc->sink_logits != NULL ? heads : 0;

  EXPECT_OK(sinkkv_cache_create(c, &cache));
  if (cache == NULL) return;
  for (t = 0; t < sc->tokens && ok; ++t) { /* stops at the first miss */
    for (layer = 0; layer < c->num_layers && ok; ++layer) {
      if (sc->use_f64) {
        for (i = 0; i < c->num_kv_heads * dim; ++i) k64[i] = key_rows(&s, t, layer)[i];
        for (i = 0; i < c->num_kv_heads * dim; ++i) v64[i] = value_rows(&s, t, layer)[i];
        for (i = 0; i < heads * dim; ++i) q64[i] = query_rows(&s, t, layer)[i];
        EXPECT_OK(sinkkv_cache_append_f64(cache, layer, 1, k64, NULL, v64, NULL));
        EXPECT_OK(sinkkv_cache_attend_f64(cache, layer, 1, q64, NULL, out64, NULL, &options));
        for (i = 0; i < heads * dim; ++i) out[i] = (float)out64[i];
      } else {
        EXPECT_OK(sinkkv_cache_append(cache, layer, 1, key_rows(&s, t, layer), NULL, value_rows(&s, t, layer), NULL));
        EXPECT_OK(sinkkv_cache_attend(cache, layer, 1, query_rows(&s, t, layer), NULL, out, NULL, &options));
      }
      for (h = 0; h < heads && ok; ++h) {
        const sinkkv_retention_policy p = policy_of(c, layer, h / (heads / c->num_kv_heads));
        reference_attention(&s, t, layer, h, p, &sc->encoding, sc->scale,
                            sc->sink_logits != NULL ? &sc->sink_logits[h] : NULL, want);
        if (sc->use_f64) {
          /* compare in double: the float copy above would hide errors below 1e-7 */
          for (i = 0; i < dim; ++i) {
            const double error = fabs(out64[h * dim + i] - want[i]);
            if (!(error <= sc->atol + sc->rtol * fabs(want[i]))) {
              fprintf(stderr, "[%s] token %ld layer %d head %d dim %d: got %.17g, reference %.17g\n", current_test, t,
                      layer, h, i, out64[h * dim + i], want[i]);
              ++failures;
              ok = 0;
              break;
            }
          }
        } else {
          ok = close_to(out + h * dim, want, dim, sc->atol, sc->rtol, "attend", t, layer, h);
        }
      }
    }
  }
  sinkkv_cache_destroy(cache);
  free_stream(&s);
  free(out);
  free(out64);
  free(k64);
  free(v64);
  free(q64);
  free(want);
}

/* ---- happy paths against the reference ------------------------------------------- */

static void test_float32_rope_matches_reference(void) {
  Scenario sc = small_scenario();
  stream_against_reference(&sc);
}

static void test_float32_rope_reference_kernel_matches_reference(void) {
  Scenario sc = small_scenario();
  sc.config.kernel = SINKKV_KERNEL_REFERENCE;
  stream_against_reference(&sc);
}

static void test_float64_f64_calls_match_reference_to_double_rounding(void) {
  Scenario sc = small_scenario();
  sc.config.element_type = SINKKV_ELEMENT_FLOAT64;
  sc.use_f64 = 1;
  sc.atol = 1e-13;
  sc.rtol = 1e-12;
  stream_against_reference(&sc);
}

static void test_float64_float_calls_round_outputs_to_float(void) {
  Scenario sc = small_scenario();
  sc.config.element_type = SINKKV_ELEMENT_FLOAT64;
  sc.atol = 1e-7; /* float rounding of the output only */
  sc.rtol = 1.2e-7;
  stream_against_reference(&sc);
}

static void test_float16_matches_reference_to_half_rounding(void) {
  Scenario sc = small_scenario();
  sc.config.element_type = SINKKV_ELEMENT_FLOAT16;
  sc.atol = 4e-3; /* keys and values rounded to 11 significant bits */
  sc.rtol = 4e-3;
  stream_against_reference(&sc);
}

static void test_bfloat16_matches_reference_to_bfloat16_rounding(void) {
  Scenario sc = small_scenario();
  sc.config.element_type = SINKKV_ELEMENT_BFLOAT16;
  sc.atol = 3e-2; /* 8 significant bits */
  sc.rtol = 3e-2;
  stream_against_reference(&sc);
}

static void test_no_encoding_matches_reference(void) {
  Scenario sc = small_scenario();
  sc.config.encoding = SINKKV_ENCODING_NONE;
  sc.encoding.kind = SINKKV_ENCODING_NONE;
  stream_against_reference(&sc);
}

static void test_alibi_with_slopes_matches_reference(void) {
  static const double slopes[4] = {0.5, 0.25, 0.125, 0.0625};
  Scenario sc = small_scenario();
  sc.config.encoding = SINKKV_ENCODING_ALIBI;
  sc.config.alibi_slopes = slopes;
  sc.config.num_alibi_slopes = 4;
  sc.encoding.kind = SINKKV_ENCODING_ALIBI;
  sc.encoding.alibi_slopes = slopes;
  stream_against_reference(&sc);
}

static void test_split_halves_partial_rotary_matches_reference(void) {
  Scenario sc = small_scenario();
  sc.config.rope_layout = SINKKV_ROPE_SPLIT_HALVES;
  sc.config.rope_rotary_dim = 4;
  sc.config.rope_theta = 500000.0;
  sc.encoding = rope_encoding(500000.0);
  sc.encoding.layout = SINKKV_ROPE_SPLIT_HALVES;
  sc.encoding.rotary_dim = 4;
  stream_against_reference(&sc);
}

static void test_explicit_frequencies_match_reference(void) {
  /* theta 10000 written out per pair: the cache must rotate exactly so. */
  double frequencies[4];
  int pair;
  Scenario sc = small_scenario();
  for (pair = 0; pair < 4; ++pair) frequencies[pair] = pow(10000.0, -2.0 * pair / 8.0);
  sc.config.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT;
  sc.config.rope_inv_frequencies = frequencies;
  sc.config.num_rope_inv_frequencies = 4;
  sc.config.rope_theta = 3.0; /* unused by explicit frequencies, but validated */
  stream_against_reference(&sc);
}

static void test_per_layer_policies_match_reference(void) {
  static const sinkkv_retention_policy layers[2] = {{1, 3}, {0, 6}};
  Scenario sc = small_scenario();
  sc.config.layer_policies = layers;
  sc.config.num_layer_policies = 2;
  stream_against_reference(&sc);
}

static void test_per_head_policies_match_reference(void) {
  /* layer-major [layer][kv head] */
  static const sinkkv_retention_policy heads[4] = {{2, 5}, {0, 2}, {4, 9}, {1, 1}};
  Scenario sc = small_scenario();
  sc.config.head_policies = heads;
  sc.config.num_head_policies = 4;
  stream_against_reference(&sc);
}

static void test_sink_logits_and_scale_match_reference(void) {
  static const float logits[4] = {0.5f, -1.0f, 2.0f, -INFINITY};
  Scenario sc = small_scenario();
  sc.sink_logits = logits;
  sc.scale = 0.7;
  stream_against_reference(&sc);
}

static void test_float64_sink_logits_match_reference(void) {
  static const float logits[4] = {0.5f, -1.0f, 2.0f, -INFINITY};
  Scenario sc = small_scenario();
  sc.config.element_type = SINKKV_ELEMENT_FLOAT64;
  sc.use_f64 = 1;
  sc.atol = 1e-13;
  sc.rtol = 1e-12;
  sc.sink_logits = logits;
  stream_against_reference(&sc);
}

/* ---- chunks, strides, explicit steps ---------------------------------------------- */

/* Chunked prefill: chunks of awkward sizes give every query what it gets
 * token at a time, and what the reference says. */
static void test_chunked_prefill_matches_token_at_a_time_and_reference(void) {
  static const int sizes[] = {5, 8, 1, 3, 7, 2, 8, 6};
  sinkkv_cache_config c;
  sinkkv_cache *chunked = NULL, *single = NULL;
  const Encoding e = rope_encoding(10000.0);
  Stream s;
  float *out, *one;
  double want[8];
  long t0 = 0;
  size_t k;
  int layer, i, h;
  small_config(&c);
  c.max_chunk = 8;
  s = make_stream(40, 2, 4, 2, 8, 99);
  out = (float*)checked_calloc(8 * 4 * 8, sizeof(float));
  one = (float*)checked_calloc(4 * 8, sizeof(float));
  EXPECT_OK(sinkkv_cache_create(&c, &chunked));
  EXPECT_OK(sinkkv_cache_create(&c, &single));
  if (chunked == NULL || single == NULL) return;
  for (k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
    const int n = sizes[k];
    for (layer = 0; layer < 2; ++layer) {
      /* consecutive tokens are consecutive in the stream arrays: packed chunks */
      EXPECT_OK(sinkkv_cache_append(chunked, layer, n, key_rows(&s, t0, layer), &(sinkkv_strides){2 * 2 * 8, 8},
                                    value_rows(&s, t0, layer), &(sinkkv_strides){2 * 2 * 8, 8}));
      EXPECT_OK(sinkkv_cache_attend(chunked, layer, n, query_rows(&s, t0, layer), &(sinkkv_strides){2 * 4 * 8, 8}, out,
                                    NULL, NULL));
    }
    for (i = 0; i < n; ++i) {
      for (layer = 0; layer < 2; ++layer) {
        EXPECT_OK(sinkkv_cache_append(single, layer, 1, key_rows(&s, t0 + i, layer), NULL,
                                      value_rows(&s, t0 + i, layer), NULL));
      }
      /* the chunk's last layer is layer 1: compare it against the single run */
      EXPECT_OK(sinkkv_cache_attend(single, 1, 1, query_rows(&s, t0 + i, 1), NULL, one, NULL, NULL));
      for (h = 0; h < 4; ++h) {
        double token_at_a_time[8];
        int d;
        for (d = 0; d < 8; ++d) token_at_a_time[d] = one[h * 8 + d];
        close_to(out + (i * 4 + h) * 8, token_at_a_time, 8, 1e-6, 1e-6, "chunk vs token at a time", t0 + i, 1, h);
        reference_attention(&s, t0 + i, 1, h, policy_of(&c, 1, h / 2), &e, 0, NULL, want);
        close_to(out + (i * 4 + h) * 8, want, 8, 2e-6, 2e-5, "chunk vs reference", t0 + i, 1, h);
      }
    }
    t0 += n;
  }
  sinkkv_cache_destroy(chunked);
  sinkkv_cache_destroy(single);
  free_stream(&s);
  free(out);
  free(one);
}

/* Head-major inputs ([heads, tokens, dim]) and padded outputs give exactly
 * the packed results. */
static void test_head_major_and_padded_strides_equal_packed(void) {
  enum { kTokens = 4, kKv = 2, kQ = 4, kDim = 8, kPad = 3 };
  sinkkv_cache_config c;
  sinkkv_cache *packed = NULL, *strided = NULL;
  Stream s;
  float keys[kKv][kTokens][kDim], values[kKv][kTokens][kDim], queries[kQ][kTokens][kDim];
  float packed_out[kTokens * kQ * kDim];
  float padded_out[kTokens * (kQ * (kDim + kPad) + 5)];
  const sinkkv_strides kv_strides = {kDim, kTokens * kDim};
  const sinkkv_strides query_strides = {kDim, kTokens * kDim};
  const sinkkv_strides out_strides = {kQ * (kDim + kPad) + 5, kDim + kPad};
  long t0;
  int layer, t, h, d;
  small_config(&c);
  c.max_chunk = kTokens;
  s = make_stream(5 * kTokens, 2, kQ, kKv, kDim, 5);
  EXPECT_OK(sinkkv_cache_create(&c, &packed));
  EXPECT_OK(sinkkv_cache_create(&c, &strided));
  if (packed == NULL || strided == NULL) return;
  for (t0 = 0; t0 < s.tokens; t0 += kTokens) {
    for (layer = 0; layer < 2; ++layer) {
      for (t = 0; t < kTokens; ++t) {
        for (h = 0; h < kKv; ++h) {
          for (d = 0; d < kDim; ++d) {
            keys[h][t][d] = key_rows(&s, t0 + t, layer)[h * kDim + d];
            values[h][t][d] = value_rows(&s, t0 + t, layer)[h * kDim + d];
          }
        }
        for (h = 0; h < kQ; ++h) {
          for (d = 0; d < kDim; ++d) queries[h][t][d] = query_rows(&s, t0 + t, layer)[h * kDim + d];
        }
      }
      EXPECT_OK(sinkkv_cache_append(packed, layer, kTokens, key_rows(&s, t0, layer),
                                    &(sinkkv_strides){2 * kKv * kDim, kDim}, value_rows(&s, t0, layer),
                                    &(sinkkv_strides){2 * kKv * kDim, kDim}));
      EXPECT_OK(sinkkv_cache_attend(packed, layer, kTokens, query_rows(&s, t0, layer),
                                    &(sinkkv_strides){2 * kQ * kDim, kDim}, packed_out, NULL, NULL));
      EXPECT_OK(
          sinkkv_cache_append(strided, layer, kTokens, &keys[0][0][0], &kv_strides, &values[0][0][0], &kv_strides));
      EXPECT_OK(sinkkv_cache_attend(strided, layer, kTokens, &queries[0][0][0], &query_strides, padded_out,
                                    &out_strides, NULL));
      for (t = 0; t < kTokens; ++t) {
        for (h = 0; h < kQ; ++h) {
          same_floats(padded_out + t * out_strides.token_stride + h * out_strides.head_stride,
                      packed_out + (t * kQ + h) * kDim, kDim, "strided vs packed", t0 + t);
        }
      }
    }
  }
  sinkkv_cache_destroy(packed);
  sinkkv_cache_destroy(strided);
  free_stream(&s);
}

/* An engine that applies RoPE itself at each token's stream index gets
 * what the un-rotated mode (and the reference) gives, across evictions. */
static void test_stream_rotated_inputs_match_unrotated(void) {
  sinkkv_cache_config c;
  sinkkv_cache *unrotated = NULL, *rotated = NULL;
  const Encoding e = rope_encoding(10000.0);
  Stream s = make_stream(60, 2, 4, 2, 8, 7);
  float k[2 * 8], q[4 * 8], out_a[4 * 8], out_b[4 * 8];
  double raw[8], turned[8], want[8];
  long t;
  int layer, h, d;
  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &unrotated));
  c.input_rotation = SINKKV_INPUT_STREAM_ROTATED;
  EXPECT_OK(sinkkv_cache_create(&c, &rotated));
  if (unrotated == NULL || rotated == NULL) return;
  for (t = 0; t < s.tokens; ++t) {
    for (layer = 0; layer < 2; ++layer) {
      for (h = 0; h < 2; ++h) {
        for (d = 0; d < 8; ++d) raw[d] = key_rows(&s, t, layer)[h * 8 + d];
        rotate(&e, 8, (double)t, raw, turned);
        for (d = 0; d < 8; ++d) k[h * 8 + d] = (float)turned[d];
      }
      for (h = 0; h < 4; ++h) {
        for (d = 0; d < 8; ++d) raw[d] = query_rows(&s, t, layer)[h * 8 + d];
        rotate(&e, 8, (double)t, raw, turned);
        for (d = 0; d < 8; ++d) q[h * 8 + d] = (float)turned[d];
      }
      EXPECT_OK(sinkkv_cache_append(unrotated, layer, 1, key_rows(&s, t, layer), NULL, value_rows(&s, t, layer), NULL));
      EXPECT_OK(sinkkv_cache_attend(unrotated, layer, 1, query_rows(&s, t, layer), NULL, out_a, NULL, NULL));
      EXPECT_OK(sinkkv_cache_append(rotated, layer, 1, k, NULL, value_rows(&s, t, layer), NULL));
      EXPECT_OK(sinkkv_cache_attend(rotated, layer, 1, q, NULL, out_b, NULL, NULL));
      for (h = 0; h < 4; ++h) {
        double a[8];
        for (d = 0; d < 8; ++d) a[d] = out_a[h * 8 + d];
        /* the engine's rows are float-rounded after rotation: float tolerance */
        close_to(out_b + h * 8, a, 8, 1e-5, 1e-4, "stream-rotated vs unrotated", t, layer, h);
        reference_attention(&s, t, layer, h, policy_of(&c, layer, h / 2), &e, 0, NULL, want);
        close_to(out_b + h * 8, want, 8, 1e-5, 1e-4, "stream-rotated vs reference", t, layer, h);
      }
    }
  }
  sinkkv_cache_destroy(unrotated);
  sinkkv_cache_destroy(rotated);
  free_stream(&s);
}

/* Steps begun explicitly (tokens and chunks) give exactly the implicit
 * protocol's results. */
static void test_begin_step_gives_implicit_results(void) {
  static const int sizes[] = {1, 3, 1, 4, 2, 4, 1, 1, 3};
  sinkkv_cache_config c;
  sinkkv_cache *implicit_steps = NULL, *explicit_steps = NULL;
  Stream s = make_stream(40, 2, 4, 2, 8, 11);
  float out_a[4 * 4 * 8], out_b[4 * 4 * 8];
  const sinkkv_strides kv = {2 * 2 * 8, 8}, qs = {2 * 4 * 8, 8};
  long t0 = 0;
  size_t k;
  int layer;
  small_config(&c);
  c.max_chunk = 4;
  EXPECT_OK(sinkkv_cache_create(&c, &implicit_steps));
  EXPECT_OK(sinkkv_cache_create(&c, &explicit_steps));
  if (implicit_steps == NULL || explicit_steps == NULL) return;
  for (k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
    const int n = sizes[k];
    EXPECT_OK(sinkkv_cache_begin_step(explicit_steps, (uint64_t)t0, n));
    for (layer = 1; layer >= 0; --layer) { /* any layer order */
      EXPECT_OK(
          sinkkv_cache_append(implicit_steps, layer, n, key_rows(&s, t0, layer), &kv, value_rows(&s, t0, layer), &kv));
      EXPECT_OK(sinkkv_cache_attend(implicit_steps, layer, n, query_rows(&s, t0, layer), &qs, out_a, NULL, NULL));
      EXPECT_OK(
          sinkkv_cache_append(explicit_steps, layer, n, key_rows(&s, t0, layer), &kv, value_rows(&s, t0, layer), &kv));
      EXPECT_OK(sinkkv_cache_attend(explicit_steps, layer, n, query_rows(&s, t0, layer), &qs, out_b, NULL, NULL));
      same_floats(out_a, out_b, (size_t)n * 4 * 8, "explicit vs implicit steps", t0);
    }
    t0 += n;
  }
  sinkkv_cache_destroy(implicit_steps);
  sinkkv_cache_destroy(explicit_steps);
  free_stream(&s);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Streams tokens [first, last) of `s` through every layer; writes the last
 * layer's outputs of the last token to out. */
static void stream_tokens(sinkkv_cache* cache, const Stream* s, long first, long last, float* out) {
  long t;
  int layer;
  for (t = first; t < last; ++t) {
    for (layer = 0; layer < s->layers; ++layer) {
      EXPECT_OK(sinkkv_cache_append(cache, layer, 1, key_rows(s, t, layer), NULL, value_rows(s, t, layer), NULL));
      EXPECT_OK(sinkkv_cache_attend(cache, layer, 1, query_rows(s, t, layer), NULL, out, NULL, NULL));
    }
  }
}

static void test_reset_starts_a_new_sequence_in_the_same_memory(void) {
  sinkkv_cache_config c;
  sinkkv_cache *cache = NULL, *fresh = NULL;
  Stream s = make_stream(20, 2, 4, 2, 8, 3), other = make_stream(20, 2, 4, 2, 8, 4);
  float out_a[32], out_b[32];
  uint64_t seen = 99, bytes_before = 0, bytes_after = 1;
  int size = -1;
  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  EXPECT_OK(sinkkv_cache_create(&c, &fresh));
  if (cache == NULL || fresh == NULL) return;
  stream_tokens(cache, &other, 0, 20, out_a);
  EXPECT_OK(sinkkv_cache_storage_bytes(cache, &bytes_before));
  EXPECT_OK(sinkkv_cache_reset(cache));
  EXPECT_OK(sinkkv_cache_tokens_seen(cache, &seen));
  EXPECT(seen == 0);
  EXPECT_OK(sinkkv_cache_size(cache, 1, 1, &size));
  EXPECT(size == 0);
  EXPECT_OK(sinkkv_cache_storage_bytes(cache, &bytes_after));
  EXPECT(bytes_after == bytes_before);
  /* the same tokens now give exactly what a fresh cache gives, at every step */
  {
    long t;
    for (t = 0; t < 20; ++t) {
      stream_tokens(cache, &s, t, t + 1, out_a);
      stream_tokens(fresh, &s, t, t + 1, out_b);
      same_floats(out_a, out_b, 32, "after reset vs fresh", t);
    }
  }
  sinkkv_cache_destroy(cache);
  sinkkv_cache_destroy(fresh);
  free_stream(&s);
  free_stream(&other);
}

static void test_clone_is_an_independent_deep_copy(void) {
  sinkkv_cache_config c;
  sinkkv_cache *original = NULL, *copy = NULL, *witness = NULL;
  Stream s = make_stream(40, 2, 4, 2, 8, 21), other = make_stream(40, 2, 4, 2, 8, 22);
  float out_a[32], out_b[32];
  uint64_t seen = 0, bytes_a = 0, bytes_b = 1;
  long t;
  small_config(&c);
  c.element_type = SINKKV_ELEMENT_FLOAT16;
  EXPECT_OK(sinkkv_cache_create(&c, &original));
  EXPECT_OK(sinkkv_cache_create(&c, &witness));
  if (original == NULL || witness == NULL) return;
  stream_tokens(original, &s, 0, 15, out_a);
  stream_tokens(witness, &s, 0, 15, out_a);
  EXPECT_OK(sinkkv_cache_clone(original, &copy));
  if (copy == NULL) return;
  EXPECT_OK(sinkkv_cache_tokens_seen(copy, &seen));
  EXPECT(seen == 15);
  EXPECT_OK(sinkkv_cache_storage_bytes(original, &bytes_a));
  EXPECT_OK(sinkkv_cache_storage_bytes(copy, &bytes_b));
  EXPECT(bytes_a == bytes_b);
  /* the copy continues exactly like the original */
  for (t = 15; t < 25; ++t) {
    stream_tokens(original, &s, t, t + 1, out_a);
    stream_tokens(copy, &s, t, t + 1, out_b);
    same_floats(out_a, out_b, 32, "clone vs original", t);
  }
  /* and the original never sees what the copy is fed */
  stream_tokens(witness, &s, 15, 25, out_a);
  for (t = 25; t < 40; ++t) {
    stream_tokens(copy, &other, t, t + 1, out_b);
    stream_tokens(original, &s, t, t + 1, out_a);
    stream_tokens(witness, &s, t, t + 1, out_b);
    same_floats(out_a, out_b, 32, "original after the copy diverged vs witness", t);
  }
  sinkkv_cache_destroy(original);
  sinkkv_cache_destroy(copy);
  sinkkv_cache_destroy(witness);
  free_stream(&s);
  free_stream(&other);
}

static void test_observers_report_positions_and_storage(void) {
  static const sinkkv_retention_policy heads[4] = {{2, 5}, {0, 3}, {1, 1}, {3, 4}};
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  Stream s = make_stream(12, 2, 4, 2, 8, 8);
  float out[32];
  uint64_t seen = 0, bytes = 0, index = 0;
  int size = 0, capacity = 0, layer, head, position;
  small_config(&c);
  c.element_type = SINKKV_ELEMENT_BFLOAT16;
  c.max_chunk = 3;
  c.head_policies = heads;
  c.num_head_policies = 4;
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;
  EXPECT_OK(sinkkv_cache_storage_bytes(cache, &bytes));
  /* sum over heads of 2 (K, V) x (sinks + window + max_chunk - 1) x head_dim x 2 bytes */
  EXPECT(bytes == (uint64_t)2 * ((2 + 5 + 2) + (0 + 3 + 2) + (1 + 1 + 2) + (3 + 4 + 2)) * 8 * 2);
  stream_tokens(cache, &s, 0, 12, out);
  EXPECT_OK(sinkkv_cache_tokens_seen(cache, &seen));
  EXPECT(seen == 12);
  for (layer = 0; layer < 2; ++layer) {
    for (head = 0; head < 2; ++head) {
      const sinkkv_retention_policy p = heads[layer * 2 + head];
      EXPECT_OK(sinkkv_cache_size(cache, layer, head, &size));
      EXPECT_OK(sinkkv_cache_capacity(cache, layer, head, &capacity));
      EXPECT(capacity == p.num_sinks + p.window);
      EXPECT(size == capacity); /* 12 tokens fill every head */
      for (position = 0; position < size; ++position) {
        /* sinks 0..S-1, then the window oldest to newest, ending at token 11 */
        const uint64_t expected =
            position < p.num_sinks ? (uint64_t)position : (uint64_t)(12 - p.window + (position - p.num_sinks));
        EXPECT_OK(sinkkv_cache_stream_index(cache, layer, head, position, &index));
        EXPECT(index == expected);
      }
    }
  }
  sinkkv_cache_destroy(cache);
  free_stream(&s);
}

static void test_log_sum_exp_matches_reference(void) {
  static const float logits[4] = {0.25f, 1.5f, -2.0f, 0.0f};
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  const Encoding e = rope_encoding(10000.0);
  Stream s = make_stream(14, 2, 4, 2, 8, 13);
  float out[3 * 32];
  double want[8], lse = 0;
  sinkkv_attend_options options;
  int layer, i, h;
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.sink_logits = logits;
  options.num_sink_logits = 4;
  small_config(&c);
  c.max_chunk = 3;
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;
  stream_tokens(cache, &s, 0, 11, out);
  for (layer = 0; layer < 2; ++layer) {
    EXPECT_OK(sinkkv_cache_append(cache, layer, 3, key_rows(&s, 11, layer), &(sinkkv_strides){2 * 2 * 8, 8},
                                  value_rows(&s, 11, layer), &(sinkkv_strides){2 * 2 * 8, 8}));
    EXPECT_OK(sinkkv_cache_attend(cache, layer, 3, query_rows(&s, 11, layer), &(sinkkv_strides){2 * 4 * 8, 8}, out,
                                  NULL, &options));
  }
  for (i = 0; i < 3; ++i) {
    for (h = 0; h < 4; ++h) {
      const double expected = reference_attention(&s, 11 + i, 1, h, policy_of(&c, 1, h / 2), &e, 0, &logits[h], want);
      EXPECT_OK(sinkkv_cache_log_sum_exp(cache, i, h, &lse));
      if (!(fabs(lse - expected) <= 1e-5 + 1e-5 * fabs(expected))) {
        fprintf(stderr, "[%s] query %d head %d: log-sum-exp %.9g, reference %.9g\n", current_test, i, h, lse, expected);
        ++failures;
      }
    }
  }
  sinkkv_cache_destroy(cache);
  free_stream(&s);
}

/* ---- thread pools --------------------------------------------------------------------- */

enum { kPoolTokens = 2300, kPoolWindow = 2200, kPoolDim = 16 };

/* One long single-layer stream; outputs of the last 50 tokens. */
static void stream_long(sinkkv_cache* cache, const Stream* s, float* last_outputs /* [50][2 * kPoolDim] */) {
  long t;
  float out[2 * kPoolDim];
  for (t = 0; t < s->tokens; ++t) {
    EXPECT_OK(sinkkv_cache_append(cache, 0, 1, key_rows(s, t, 0), NULL, value_rows(s, t, 0), NULL));
    EXPECT_OK(sinkkv_cache_attend(cache, 0, 1, query_rows(s, t, 0), NULL, out, NULL, NULL));
    if (t >= s->tokens - 50) memcpy(last_outputs + (t - (s->tokens - 50)) * 2 * kPoolDim, out, sizeof out);
  }
}

static void long_config(sinkkv_cache_config* c, sinkkv_thread_pool* pool) {
  sinkkv_cache_config_init(c, sizeof *c);
  c->num_layers = 1;
  c->num_query_heads = 2;
  c->num_kv_heads = 1;
  c->head_dim = kPoolDim;
  c->num_sinks = 4;
  c->window = kPoolWindow;
  c->thread_pool = pool;
}

typedef struct PoolJob {
  sinkkv_cache* cache;
  const Stream* stream;
  float outputs[50 * 2 * kPoolDim];
} PoolJob;

static void* run_pool_job(void* argument) {
  PoolJob* job = (PoolJob*)argument;
  stream_long(job->cache, job->stream, job->outputs);
  return NULL;
}

/* Attends split across a pool match the single-threaded kernel and the
 * reference; the pool may be destroyed while caches still use it, and two
 * caches on two threads may share it. */
static void test_thread_pool_matches_single_thread(void) {
  sinkkv_cache_config c;
  sinkkv_thread_pool* pool = NULL;
  sinkkv_cache *single = NULL, *shared_a = NULL, *shared_b = NULL;
  const Encoding e = rope_encoding(10000.0);
  Stream s = make_stream(kPoolTokens, 1, 2, 1, kPoolDim, 31);
  static float expected[50 * 2 * kPoolDim];
  static PoolJob jobs[2];
  pthread_t threads[2];
  double want[kPoolDim];
  int i, h, j;
  EXPECT_OK(sinkkv_thread_pool_create(2, &pool));
  long_config(&c, NULL);
  EXPECT_OK(sinkkv_cache_create(&c, &single));
  long_config(&c, pool);
  EXPECT_OK(sinkkv_cache_create(&c, &shared_a));
  EXPECT_OK(sinkkv_cache_create(&c, &shared_b));
  sinkkv_thread_pool_destroy(pool); /* the caches keep it alive */
  if (single == NULL || shared_a == NULL || shared_b == NULL) return;
  stream_long(single, &s, expected);
  for (j = 0; j < 2; ++j) {
    jobs[j].cache = j == 0 ? shared_a : shared_b;
    jobs[j].stream = &s;
    EXPECT(pthread_create(&threads[j], NULL, run_pool_job, &jobs[j]) == 0);
  }
  for (j = 0; j < 2; ++j) pthread_join(threads[j], NULL);
  for (j = 0; j < 2; ++j) {
    for (i = 0; i < 50; ++i) {
      for (h = 0; h < 2; ++h) {
        double single_row[kPoolDim];
        int d;
        for (d = 0; d < kPoolDim; ++d) single_row[d] = expected[(i * 2 + h) * kPoolDim + d];
        /* partial softmaxes merged by log-sum-exp: float rounding, not bits */
        close_to(jobs[j].outputs + (i * 2 + h) * kPoolDim, single_row, kPoolDim, 1e-6, 1e-5, "pool vs single",
                 kPoolTokens - 50 + i, 0, h);
      }
    }
  }
  for (h = 0; h < 2; ++h) {
    reference_attention(&s, kPoolTokens - 1, 0, h, policy_of(&c, 0, 0), &e, 0, NULL, want);
    close_to(jobs[0].outputs + (49 * 2 + h) * kPoolDim, want, kPoolDim, 1e-5, 1e-4, "pool vs reference",
             kPoolTokens - 1, 0, h);
  }
  sinkkv_cache_destroy(single);
  sinkkv_cache_destroy(shared_a);
  sinkkv_cache_destroy(shared_b); /* the pool's threads stop here */
  free_stream(&s);
}

/* ---- version, codes, defaults ------------------------------------------------------------ */

static void test_version_matches_header(void) {
  char text[32];
  snprintf(text, sizeof text, "%d.%d.%d", SINKKV_VERSION_MAJOR, SINKKV_VERSION_MINOR, SINKKV_VERSION_PATCH);
  EXPECT(sinkkv_version() == SINKKV_VERSION);
  EXPECT(strcmp(sinkkv_version_string(), text) == 0);
}

static void test_status_strings_name_every_code(void) {
  EXPECT(strcmp(sinkkv_status_string(SINKKV_OK), "SINKKV_OK") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_INVALID_ARGUMENT), "SINKKV_ERROR_INVALID_ARGUMENT") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_PROTOCOL), "SINKKV_ERROR_PROTOCOL") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_OUT_OF_MEMORY), "SINKKV_ERROR_OUT_OF_MEMORY") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_UNSUPPORTED), "SINKKV_ERROR_UNSUPPORTED") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_SYSTEM), "SINKKV_ERROR_SYSTEM") == 0);
  EXPECT(strcmp(sinkkv_status_string(SINKKV_ERROR_INTERNAL), "SINKKV_ERROR_INTERNAL") == 0);
  EXPECT(strcmp(sinkkv_status_string(77), "SINKKV_UNKNOWN_STATUS") == 0);
}

static void test_config_init_sets_the_documented_defaults(void) {
  sinkkv_cache_config c;
  memset(&c, 0xAB, sizeof c);
  EXPECT_OK(sinkkv_cache_config_init(&c, sizeof c));
  EXPECT(c.struct_size == sizeof c);
  EXPECT(c.element_type == SINKKV_ELEMENT_FLOAT32);
  EXPECT(c.num_layers == 1 && c.num_query_heads == 0 && c.num_kv_heads == 1 && c.head_dim == 64);
  EXPECT(c.num_sinks == 4 && c.window == 1020 && c.max_chunk == 1);
  EXPECT(c.layer_policies == NULL && c.num_layer_policies == 0 && c.head_policies == NULL && c.num_head_policies == 0);
  EXPECT(c.encoding == SINKKV_ENCODING_ROPE && c.input_rotation == SINKKV_INPUT_UNROTATED);
  EXPECT(c.rope_theta == 10000.0 && c.rope_rotary_dim == 0 && c.rope_layout == SINKKV_ROPE_ADJACENT_PAIRS);
  EXPECT(c.rope_scaling == SINKKV_ROPE_SCALING_NONE && c.rope_factor == 1.0 && c.rope_original_max_positions == 0.0);
  EXPECT(c.rope_low_freq_factor == 1.0 && c.rope_high_freq_factor == 4.0);
  EXPECT(c.rope_beta_fast == 32.0 && c.rope_beta_slow == 1.0 && c.rope_truncate == 1);
  EXPECT(c.rope_mscale == 0.0 && c.rope_mscale_all_dim == 0.0 && c.rope_attention_factor == 0.0);
  EXPECT(c.rope_inv_frequencies == NULL && c.num_rope_inv_frequencies == 0);
  EXPECT(c.alibi_slopes == NULL && c.num_alibi_slopes == 0);
  EXPECT(c.kernel == SINKKV_KERNEL_CPU && c.thread_pool == NULL);
}

/* A struct from a newer header: accepted when the fields this library does
 * not know are 0, rejected as unsupported otherwise; a size no header ever
 * had is a bad argument. */
static void test_struct_size_accepts_zero_tails_only(void) {
  struct {
    sinkkv_cache_config config;
    unsigned char newer_fields[24];
  } newer;
  struct {
    sinkkv_attend_options options;
    unsigned char newer_fields[16];
  } newer_options;
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  float q[32], out[32], kv[16];
  memset(kv, 0, sizeof kv);
  memset(q, 0, sizeof q);
  memset(&newer, 0x5A, sizeof newer);
  EXPECT_OK(sinkkv_cache_config_init(&newer.config, sizeof newer));
  EXPECT(newer.newer_fields[0] == 0 && newer.newer_fields[23] == 0); /* init zeroes what it does not know */
  newer.config.head_dim = 8;
  EXPECT_OK(sinkkv_cache_create(&newer.config, &cache));
  sinkkv_cache_destroy(cache);
  cache = NULL;
  newer.newer_fields[5] = 1;
  EXPECT_STATUS(sinkkv_cache_create(&newer.config, &cache), SINKKV_ERROR_UNSUPPORTED, "sets byte");
  EXPECT(cache == NULL);

  small_config(&c);
  c.struct_size = sizeof c - 8;
  EXPECT_STATUS(sinkkv_cache_create(&c, &cache), SINKKV_ERROR_INVALID_ARGUMENT, "config struct_size");
  c.struct_size = 1u << 20;
  EXPECT_STATUS(sinkkv_cache_create(&c, &cache), SINKKV_ERROR_INVALID_ARGUMENT, "struct_size 1048576");
  EXPECT_STATUS(sinkkv_cache_config_init(&c, 3), SINKKV_ERROR_INVALID_ARGUMENT, "struct_size 3");
  EXPECT_STATUS(sinkkv_cache_config_init(NULL, sizeof c), SINKKV_ERROR_INVALID_ARGUMENT, "config is NULL");

  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;
  memset(&newer_options, 0, sizeof newer_options);
  newer_options.options.struct_size = sizeof newer_options;
  EXPECT_OK(sinkkv_cache_append(cache, 0, 1, kv, NULL, kv, NULL));
  EXPECT_OK(sinkkv_cache_attend(cache, 0, 1, q, NULL, out, NULL, &newer_options.options));
  newer_options.newer_fields[15] = 9;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, q, NULL, out, NULL, &newer_options.options), SINKKV_ERROR_UNSUPPORTED,
                "attend options");
  newer_options.options.struct_size = 4;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, q, NULL, out, NULL, &newer_options.options),
                SINKKV_ERROR_INVALID_ARGUMENT, "attend options struct_size 4");
  sinkkv_cache_destroy(cache);
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Every bad configuration value is rejected, naming it; nothing is written
 * to the output handle. */
#define EXPECT_CONFIG_ERROR(setup, code, fragment)                      \
  do {                                                                  \
    sinkkv_cache_config c;                                              \
    sinkkv_cache* untouched = (sinkkv_cache*)&sentinel;                 \
    small_config(&c);                                                   \
    { setup; }                                                          \
    EXPECT_STATUS(sinkkv_cache_create(&c, &untouched), code, fragment); \
    EXPECT(untouched == (sinkkv_cache*)&sentinel);                      \
  } while (0)

static void test_bad_configurations_are_rejected_naming_the_value(void) {
  static int sentinel;
  static const double nan_frequencies[4] = {1.0, NAN, 0.1, 0.01};
  static const double three_slopes[3] = {0.5, 0.25, 0.125};
  static const double infinite_slopes[4] = {0.5, INFINITY, 0.125, 0.0625};
  static const sinkkv_retention_policy layers[2] = {{1, 3}, {0, 0}};
  static const sinkkv_retention_policy heads[4] = {{2, 5}, {-2, 5}, {2, 5}, {2, 5}};
  const sinkkv_cache_config* null_config = NULL;
  sinkkv_cache* handle = NULL;
  sinkkv_thread_pool* pool = NULL;
  sinkkv_cache_config c;
  EXPECT_OK(sinkkv_thread_pool_create(1, &pool));

  small_config(&c);
  EXPECT_STATUS(sinkkv_cache_create(null_config, &handle), SINKKV_ERROR_INVALID_ARGUMENT, "config is NULL");
  EXPECT(handle == NULL);
  EXPECT_STATUS(sinkkv_cache_create(&c, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");

  EXPECT_CONFIG_ERROR(c.num_layers = 0, SINKKV_ERROR_INVALID_ARGUMENT, "num_layers 0");
  EXPECT_CONFIG_ERROR(c.num_layers = 70000, SINKKV_ERROR_INVALID_ARGUMENT, "num_layers 70000");
  EXPECT_CONFIG_ERROR(c.num_kv_heads = 0, SINKKV_ERROR_INVALID_ARGUMENT, "num_kv_heads 0");
  EXPECT_CONFIG_ERROR(c.num_query_heads = -1, SINKKV_ERROR_INVALID_ARGUMENT, "num_query_heads -1");
  EXPECT_CONFIG_ERROR(c.num_query_heads = 3, SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_query_heads 3 is not a multiple of num_kv_heads 2");
  EXPECT_CONFIG_ERROR(c.head_dim = 0, SINKKV_ERROR_INVALID_ARGUMENT, "head_dim 0");
  EXPECT_CONFIG_ERROR((c.num_query_heads = 4096, c.head_dim = 8192), SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_query_heads 4096 x head_dim 8192");
  EXPECT_CONFIG_ERROR(c.num_sinks = -1, SINKKV_ERROR_INVALID_ARGUMENT, "num_sinks -1");
  EXPECT_CONFIG_ERROR(c.window = 0, SINKKV_ERROR_INVALID_ARGUMENT, "window 0");
  EXPECT_CONFIG_ERROR(c.window = 1 << 30, SINKKV_ERROR_INVALID_ARGUMENT, "window 1073741824");
  EXPECT_CONFIG_ERROR(c.max_chunk = 0, SINKKV_ERROR_INVALID_ARGUMENT, "max_chunk 0");
  EXPECT_CONFIG_ERROR(c.element_type = 9, SINKKV_ERROR_INVALID_ARGUMENT, "element_type 9");
  EXPECT_CONFIG_ERROR(c.encoding = 7, SINKKV_ERROR_INVALID_ARGUMENT, "encoding 7");
  EXPECT_CONFIG_ERROR(c.input_rotation = 3, SINKKV_ERROR_INVALID_ARGUMENT, "input_rotation 3");
  EXPECT_CONFIG_ERROR(c.kernel = 2, SINKKV_ERROR_INVALID_ARGUMENT, "kernel 2");
  EXPECT_CONFIG_ERROR((c.kernel = SINKKV_KERNEL_REFERENCE, c.thread_pool = pool), SINKKV_ERROR_INVALID_ARGUMENT,
                      "thread_pool is given with SINKKV_KERNEL_REFERENCE");

  EXPECT_CONFIG_ERROR(c.rope_layout = 5, SINKKV_ERROR_INVALID_ARGUMENT, "rope_layout 5");
  EXPECT_CONFIG_ERROR(c.rope_scaling = 42, SINKKV_ERROR_INVALID_ARGUMENT, "rope_scaling 42");
  EXPECT_CONFIG_ERROR(c.rope_theta = NAN, SINKKV_ERROR_INVALID_ARGUMENT, "rope theta nan");
  EXPECT_CONFIG_ERROR(c.rope_theta = 1.0, SINKKV_ERROR_INVALID_ARGUMENT, "rope theta 1");
  EXPECT_CONFIG_ERROR(c.rope_rotary_dim = 5, SINKKV_ERROR_INVALID_ARGUMENT, "rope rotary_dim 5 is odd");
  EXPECT_CONFIG_ERROR(c.rope_rotary_dim = 200, SINKKV_ERROR_INVALID_ARGUMENT, "rope rotary_dim 200");
  EXPECT_CONFIG_ERROR((c.rope_scaling = SINKKV_ROPE_SCALING_LINEAR, c.rope_factor = 0), SINKKV_ERROR_INVALID_ARGUMENT,
                      "rope scaling factor 0");
  EXPECT_CONFIG_ERROR(c.rope_scaling = SINKKV_ROPE_SCALING_LLAMA3, SINKKV_ERROR_INVALID_ARGUMENT,
                      "rope original_max_positions 0");
  EXPECT_CONFIG_ERROR(
      (c.rope_scaling = SINKKV_ROPE_SCALING_YARN, c.rope_original_max_positions = 4096, c.rope_beta_fast = 0.5),
      SINKKV_ERROR_INVALID_ARGUMENT, "yarn rope beta_fast 0.5");
  EXPECT_CONFIG_ERROR(c.rope_attention_factor = -1, SINKKV_ERROR_INVALID_ARGUMENT, "rope attention_factor -1");
  EXPECT_CONFIG_ERROR(c.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT, SINKKV_ERROR_INVALID_ARGUMENT,
                      "explicit rope inverse frequencies have 0 entries, expected rotary_dim / 2 = 4");
  EXPECT_CONFIG_ERROR((c.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT, c.rope_inv_frequencies = nan_frequencies,
                       c.num_rope_inv_frequencies = 3),
                      SINKKV_ERROR_INVALID_ARGUMENT, "have 3 entries");
  EXPECT_CONFIG_ERROR((c.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT, c.rope_inv_frequencies = nan_frequencies,
                       c.num_rope_inv_frequencies = 4),
                      SINKKV_ERROR_INVALID_ARGUMENT, "explicit rope inverse frequency [1] = nan");
  EXPECT_CONFIG_ERROR((c.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT, c.num_rope_inv_frequencies = 2),
                      SINKKV_ERROR_INVALID_ARGUMENT, "num_rope_inv_frequencies 2 given without rope_inv_frequencies");
  EXPECT_CONFIG_ERROR((c.rope_scaling = SINKKV_ROPE_SCALING_EXPLICIT, c.rope_inv_frequencies = nan_frequencies,
                       c.num_rope_inv_frequencies = -1),
                      SINKKV_ERROR_INVALID_ARGUMENT, "num_rope_inv_frequencies -1 outside");

  EXPECT_CONFIG_ERROR((c.encoding = SINKKV_ENCODING_ALIBI, c.alibi_slopes = three_slopes, c.num_alibi_slopes = 3),
                      SINKKV_ERROR_INVALID_ARGUMENT, "alibi slopes has 3 entries, expected one per query head (4)");
  EXPECT_CONFIG_ERROR((c.encoding = SINKKV_ENCODING_ALIBI, c.alibi_slopes = infinite_slopes, c.num_alibi_slopes = 4),
                      SINKKV_ERROR_INVALID_ARGUMENT, "alibi slope of query head 1 is inf");
  EXPECT_CONFIG_ERROR((c.encoding = SINKKV_ENCODING_ALIBI, c.num_alibi_slopes = 4), SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_alibi_slopes 4 given without alibi_slopes");
  EXPECT_CONFIG_ERROR((c.encoding = SINKKV_ENCODING_ALIBI, c.input_rotation = SINKKV_INPUT_STREAM_ROTATED),
                      SINKKV_ERROR_INVALID_ARGUMENT, "needs a RoPE encoding");

  EXPECT_CONFIG_ERROR((c.layer_policies = layers, c.num_layer_policies = 1), SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_layer_policies 1, expected num_layers = 2");
  EXPECT_CONFIG_ERROR((c.layer_policies = layers, c.num_layer_policies = 2), SINKKV_ERROR_INVALID_ARGUMENT,
                      "layer 1 KV head 0: window 0");
  EXPECT_CONFIG_ERROR(c.num_layer_policies = 2, SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_layer_policies 2 given without layer_policies");
  EXPECT_CONFIG_ERROR((c.head_policies = heads, c.num_head_policies = 3), SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_head_policies 3, expected num_layers x num_kv_heads = 4");
  EXPECT_CONFIG_ERROR((c.head_policies = heads, c.num_head_policies = 4), SINKKV_ERROR_INVALID_ARGUMENT,
                      "layer 0 KV head 1: num_sinks -2");
  EXPECT_CONFIG_ERROR(c.num_head_policies = 4, SINKKV_ERROR_INVALID_ARGUMENT,
                      "num_head_policies 4 given without head_policies");
  EXPECT_CONFIG_ERROR(
      (c.head_policies = heads, c.num_head_policies = 4, c.layer_policies = layers, c.num_layer_policies = 2),
      SINKKV_ERROR_INVALID_ARGUMENT, "layer_policies and head_policies are both given");

  /* storage that cannot be counted: past 2^62 elements, or bytes past size_t */
  EXPECT_CONFIG_ERROR((c.num_layers = 1 << 16, c.num_kv_heads = 16, c.num_query_heads = 16, c.head_dim = 1 << 20,
                       c.num_sinks = 4, c.window = (1 << 30) - 4),
                      SINKKV_ERROR_INVALID_ARGUMENT, "exceeds 2^62");
  /* 2^61 elements of 8 bytes */
  EXPECT_CONFIG_ERROR((c.element_type = SINKKV_ELEMENT_FLOAT64, c.num_layers = 64, c.num_kv_heads = 16,
                       c.num_query_heads = 16, c.head_dim = 1 << 20, c.num_sinks = 4, c.window = (1 << 30) - 4),
                      SINKKV_ERROR_INVALID_ARGUMENT, "cache storage of 2305843009213693952 elements overflows size_t");
  sinkkv_thread_pool_destroy(pool);
}

/* A valid configuration whose storage (2^50 bytes) no machine has. */
static void test_unallocatable_cache_reports_out_of_memory(void) {
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  if (!allocation_hooks_active()) { /* sanitizers abort on such requests instead of failing them */
    skipped = 1;
    return;
  }
  small_config(&c);
  c.num_layers = 1;
  c.num_kv_heads = 1 << 14;
  c.num_query_heads = 1 << 14;
  c.head_dim = 1 << 10;
  c.num_sinks = 0;
  c.window = 1 << 23;
  EXPECT_STATUS(sinkkv_cache_create(&c, &cache), SINKKV_ERROR_OUT_OF_MEMORY,
                "cannot allocate 1125899906842624 bytes of cache storage");
  EXPECT(cache == NULL);
}

static void test_null_handles_and_pointers_are_rejected(void) {
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  sinkkv_cache* const none = NULL;
  float rows[64];
  double rows64[64];
  uint64_t value = 0;
  int count = 0;
  double lse = 0;
  memset(rows, 0, sizeof rows);
  memset(rows64, 0, sizeof rows64);
  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;

  EXPECT_STATUS(sinkkv_cache_append(none, 0, 1, rows, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_attend(none, 0, 1, rows, NULL, rows, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_append_f64(none, 0, 1, rows64, NULL, rows64, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_attend_f64(none, 0, 1, rows64, NULL, rows64, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_begin_step(none, 0, 1), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_reset(none), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_clone(none, &cache), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_tokens_seen(none, &value), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_storage_bytes(none, &value), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_size(none, 0, 0, &count), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_capacity(none, 0, 0, &count), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_stream_index(none, 0, 0, 0, &value), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(none, 0, 0, &lse), SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  sinkkv_cache_destroy(none); /* no-ops */
  sinkkv_thread_pool_destroy(NULL);

  EXPECT_STATUS(sinkkv_cache_clone(cache, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "copy is NULL");
  EXPECT_STATUS(sinkkv_cache_tokens_seen(cache, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "tokens_seen is NULL");
  EXPECT_STATUS(sinkkv_cache_storage_bytes(cache, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "bytes is NULL");
  EXPECT_STATUS(sinkkv_cache_size(cache, 0, 0, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "size is NULL");
  EXPECT_STATUS(sinkkv_cache_capacity(cache, 0, 0, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "capacity is NULL");
  EXPECT_STATUS(sinkkv_cache_stream_index(cache, 0, 0, 0, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "stream_index is NULL");
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 0, 0, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "log_sum_exp is NULL");
  EXPECT_STATUS(sinkkv_thread_pool_create(2, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "pool is NULL");

  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, NULL, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "keys pointer is null");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, rows, NULL, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "values pointer is null");
  EXPECT_OK(sinkkv_cache_append(cache, 0, 1, rows, NULL, rows, NULL));
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, NULL, NULL, rows, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "queries pointer is null");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, rows, NULL, NULL, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "output pointer is null");
  sinkkv_cache_destroy(cache);
}

static void test_bad_append_and_attend_arguments_are_rejected_naming_the_value(void) {
  static const float three_logits[3] = {0, 0, 0};
  static const float nan_logits[4] = {0, 0, NAN, 0};
  static const float inf_logits[4] = {INFINITY, 0, 0, 0};
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  float rows[4 * 4 * 8], out[4 * 4 * 8];
  double rows64[64];
  sinkkv_attend_options options;
  uint64_t seen = 1;
  memset(rows, 0, sizeof rows);
  memset(rows64, 0, sizeof rows64);
  small_config(&c);
  c.max_chunk = 4;
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;

  EXPECT_STATUS(sinkkv_cache_append(cache, -1, 1, rows, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "layer -1 outside [0, num_layers 2)");
  EXPECT_STATUS(sinkkv_cache_append(cache, 2, 1, rows, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "layer 2");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 0, rows, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "num_tokens 0 outside [1, max_chunk 4]");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 5, rows, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "num_tokens 5");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, rows, &(sinkkv_strides){16, -1}, rows, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "keys head stride -1");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 2, rows, NULL, rows, &(sinkkv_strides){-16, 8}),
                SINKKV_ERROR_INVALID_ARGUMENT, "values token stride -16");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 3, rows, &(sinkkv_strides){INT64_MAX / 4, 8}, rows, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "keys strides (token 2305843009213693951, head 8)");
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, rows, &(sinkkv_strides){0, INT64_MAX}, rows, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "reach past the address range");
  EXPECT_STATUS(sinkkv_cache_append_f64(cache, 0, 1, rows64, NULL, rows64, NULL), SINKKV_ERROR_UNSUPPORTED,
                "this one is SINKKV_ELEMENT_FLOAT32");
  EXPECT_STATUS(sinkkv_cache_begin_step(cache, 0, 0), SINKKV_ERROR_INVALID_ARGUMENT, "num_tokens 0");
  /* none of that changed anything */
  EXPECT_OK(sinkkv_cache_tokens_seen(cache, &seen));
  EXPECT(seen == 0);

  EXPECT_OK(sinkkv_cache_append(cache, 0, 2, rows, NULL, rows, NULL));
  EXPECT_STATUS(sinkkv_cache_attend(cache, 5, 2, rows, NULL, out, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "layer 5 outside");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 9, rows, NULL, out, NULL, NULL), SINKKV_ERROR_INVALID_ARGUMENT,
                "num_tokens 9");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, &(sinkkv_strides){32, 4}, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "output rows overlap (head stride 4");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, &(sinkkv_strides){-32, 8}, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "out token stride -32");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, &(sinkkv_strides){INT64_MAX, 0}, out, NULL, NULL),
                SINKKV_ERROR_INVALID_ARGUMENT, "queries strides (token 9223372036854775807");
  EXPECT_STATUS(sinkkv_cache_attend_f64(cache, 0, 2, rows64, NULL, rows64, NULL, NULL), SINKKV_ERROR_UNSUPPORTED,
                "_f64 calls need a SINKKV_ELEMENT_FLOAT64 cache");

  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.scale = NAN;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "scale nan must be finite");
  options.scale = 1e300;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "scale 1e+300 overflows float");
  options.scale = 0;
  options.sink_logits = three_logits;
  options.num_sink_logits = 3;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "3 sink logits, expected one per query head (4)");
  options.sink_logits = NULL;
  options.num_sink_logits = 4;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "num_sink_logits 4 given without sink_logits");
  options.sink_logits = nan_logits;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "sink logit of query head 2 is nan");
  options.sink_logits = inf_logits;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, &options), SINKKV_ERROR_INVALID_ARGUMENT,
                "sink logit of query head 0 is inf");
  /* after all that the step still completes normally */
  EXPECT_OK(sinkkv_cache_attend(cache, 0, 2, rows, NULL, out, NULL, NULL));
  sinkkv_cache_destroy(cache);
}

static void test_bad_observer_and_pool_arguments_are_rejected(void) {
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  sinkkv_thread_pool* pool = NULL;
  float rows[32];
  uint64_t index = 0;
  int count = 0;
  double lse = 0;
  memset(rows, 0, sizeof rows);
  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;
  EXPECT_STATUS(sinkkv_cache_size(cache, 2, 0, &count), SINKKV_ERROR_INVALID_ARGUMENT, "layer 2 outside");
  EXPECT_STATUS(sinkkv_cache_capacity(cache, 0, 2, &count), SINKKV_ERROR_INVALID_ARGUMENT,
                "KV head 2 outside [0, num_kv_heads 2)");
  EXPECT_STATUS(sinkkv_cache_stream_index(cache, 0, 0, 0, &index), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache_position 0 outside [0, size 0) of layer 0 KV head 0");
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 0, 0, &lse), SINKKV_ERROR_PROTOCOL, "nothing was attended yet");
  EXPECT_OK(sinkkv_cache_append(cache, 0, 1, rows, NULL, rows, NULL));
  EXPECT_OK(sinkkv_cache_attend(cache, 0, 1, rows, NULL, rows, NULL, NULL));
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 1, 0, &lse), SINKKV_ERROR_INVALID_ARGUMENT, "query 1 outside [0, 1)");
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 0, 4, &lse), SINKKV_ERROR_INVALID_ARGUMENT,
                "head 4 outside [0, num_query_heads 4)");
  EXPECT_STATUS(sinkkv_cache_stream_index(cache, 0, 0, -1, &index), SINKKV_ERROR_INVALID_ARGUMENT,
                "cache_position -1 outside [0, size 1)");
  /* the log-sum-exp of an earlier step is gone once the next one begins, and after reset */
  EXPECT_OK(sinkkv_cache_append(cache, 1, 1, rows, NULL, rows, NULL));
  EXPECT_OK(sinkkv_cache_append(cache, 0, 1, rows, NULL, rows, NULL));
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 0, 0, &lse), SINKKV_ERROR_PROTOCOL,
                "nothing was attended since the step at stream index 1 began");
  EXPECT_OK(sinkkv_cache_attend(cache, 0, 1, rows, NULL, rows, NULL, NULL));
  EXPECT_OK(sinkkv_cache_log_sum_exp(cache, 0, 0, &lse));
  EXPECT_OK(sinkkv_cache_reset(cache));
  EXPECT_STATUS(sinkkv_cache_log_sum_exp(cache, 0, 0, &lse), SINKKV_ERROR_PROTOCOL, "nothing was attended");
  EXPECT_STATUS(sinkkv_thread_pool_create(0, &pool), SINKKV_ERROR_INVALID_ARGUMENT, "num_threads 0 outside [1, 1024]");
  EXPECT_STATUS(sinkkv_thread_pool_create(5000, &pool), SINKKV_ERROR_INVALID_ARGUMENT, "num_threads 5000");
  EXPECT(pool == NULL);
  sinkkv_cache_destroy(cache);
}

/* Protocol misuse is reported as such, changes nothing, and the stream
 * then continues exactly as an undisturbed one. */
static void test_protocol_misuse_is_reported_and_changes_nothing(void) {
  sinkkv_cache_config c;
  sinkkv_cache *cache = NULL, *witness = NULL;
  Stream s = make_stream(12, 2, 4, 2, 8, 17);
  float out_a[32], out_b[32];
  const float* k;
  const float* v;
  small_config(&c);
  c.max_chunk = 2;
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  EXPECT_OK(sinkkv_cache_create(&c, &witness));
  if (cache == NULL || witness == NULL) return;
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, query_rows(&s, 0, 0), NULL, out_a, NULL, NULL), SINKKV_ERROR_PROTOCOL,
                "attend on layer 0 of an empty cache");
  stream_tokens(cache, &s, 0, 5, out_a);
  stream_tokens(witness, &s, 0, 5, out_b);

  k = key_rows(&s, 5, 0);
  v = value_rows(&s, 5, 0);
  EXPECT_OK(sinkkv_cache_append(cache, 0, 1, k, NULL, v, NULL));
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, k, NULL, v, NULL), SINKKV_ERROR_PROTOCOL, "layer 0 appended twice");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 1, 1, query_rows(&s, 5, 1), NULL, out_a, NULL, NULL), SINKKV_ERROR_PROTOCOL,
                "attend on layer 1 before it appended");
  EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 2, query_rows(&s, 5, 0), NULL, out_a, NULL, NULL), SINKKV_ERROR_PROTOCOL,
                "with 2 queries, but it appended 1");
  EXPECT_STATUS(sinkkv_cache_append(cache, 1, 2, key_rows(&s, 5, 1), NULL, value_rows(&s, 5, 1), NULL),
                SINKKV_ERROR_PROTOCOL, "append on layer 1 of 2 tokens");
  EXPECT_STATUS(sinkkv_cache_begin_step(cache, 6, 1), SINKKV_ERROR_PROTOCOL, "layer 1 has not appended");
  EXPECT_STATUS(sinkkv_cache_begin_step(cache, 5, 1), SINKKV_ERROR_PROTOCOL,
                "begin_step at stream index 5, but the next token of this sequence has stream index 6");
  /* finish token 5 properly: exactly the witness's outputs */
  EXPECT_OK(sinkkv_cache_attend(cache, 0, 1, query_rows(&s, 5, 0), NULL, out_a, NULL, NULL));
  EXPECT_OK(sinkkv_cache_append(cache, 1, 1, key_rows(&s, 5, 1), NULL, value_rows(&s, 5, 1), NULL));
  EXPECT_OK(sinkkv_cache_attend(cache, 1, 1, query_rows(&s, 5, 1), NULL, out_a, NULL, NULL));
  stream_tokens(witness, &s, 5, 6, out_b);
  same_floats(out_a, out_b, 32, "after protocol errors vs witness", 5);

  /* explicit steps: an append without begin_step is refused */
  EXPECT_OK(sinkkv_cache_begin_step(cache, 6, 1));
  stream_tokens(cache, &s, 6, 7, out_a);
  stream_tokens(witness, &s, 6, 7, out_b);
  EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, key_rows(&s, 7, 0), NULL, value_rows(&s, 7, 0), NULL),
                SINKKV_ERROR_PROTOCOL, "was not begun");
  EXPECT_OK(sinkkv_cache_begin_step(cache, 7, 1));
  stream_tokens(cache, &s, 7, 8, out_a);
  stream_tokens(witness, &s, 7, 8, out_b);
  same_floats(out_a, out_b, 32, "explicit step after a refused append vs witness", 7);
  sinkkv_cache_destroy(cache);
  sinkkv_cache_destroy(witness);
  free_stream(&s);
}

/* ---- messages and threads ---------------------------------------------------------------- */

typedef struct MessageJob {
  char seen[256];
} MessageJob;

static void* fail_on_another_thread(void* argument) {
  MessageJob* job = (MessageJob*)argument;
  sinkkv_thread_pool* pool = NULL;
  snprintf(job->seen, sizeof job->seen, "[%s]", sinkkv_last_error_message()); /* fresh thread: empty */
  sinkkv_thread_pool_create(-3, &pool);
  strncat(job->seen, sinkkv_last_error_message(), sizeof job->seen - strlen(job->seen) - 1);
  return NULL;
}

static void test_error_messages_are_per_thread_and_cleared_by_success(void) {
  sinkkv_thread_pool* pool = NULL;
  MessageJob job;
  pthread_t thread;
  EXPECT_STATUS(sinkkv_thread_pool_create(0, &pool), SINKKV_ERROR_INVALID_ARGUMENT, "num_threads 0");
  EXPECT(pthread_create(&thread, NULL, fail_on_another_thread, &job) == 0);
  pthread_join(thread, NULL);
  EXPECT(strcmp(job.seen, "[]sinkkv_thread_pool_create: num_threads -3 outside [1, 1024]") == 0);
  EXPECT(strcmp(sinkkv_last_error_message(), "sinkkv_thread_pool_create: num_threads 0 outside [1, 1024]") == 0);
  EXPECT_OK(sinkkv_thread_pool_create(1, &pool)); /* EXPECT_OK checks the message is empty again */
  sinkkv_thread_pool_destroy(pool);
}

/* ---- allocation ------------------------------------------------------------------------------ */

/* After create, nothing allocates: every element type, both kernels, a
 * pool, chunks, explicit steps, sink logits, the _f64 calls, observers and
 * reset. */
static void test_no_allocation_after_create(void) {
  static const float logits[2] = {0.5f, -0.5f};
  enum { kCaches = 6 };
  sinkkv_cache_config c;
  sinkkv_thread_pool* pool = NULL;
  sinkkv_cache* caches[kCaches];
  Stream s;
  float out[4 * 2 * kPoolDim];
  double k64[kPoolDim], v64[kPoolDim], q64[2 * kPoolDim], out64[2 * kPoolDim];
  sinkkv_attend_options options;
  const sinkkv_strides kv = {kPoolDim, kPoolDim}, qs = {2 * kPoolDim, kPoolDim};
  size_t before;
  uint64_t value;
  int i, count;
  long t;
  double lse;
  if (!allocation_hooks_active()) {
    skipped = 1;
    return;
  }
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.sink_logits = logits;
  options.num_sink_logits = 2;
  memset(k64, 0, sizeof k64);
  memset(v64, 0, sizeof v64);
  memset(q64, 0, sizeof q64);
  s = make_stream(kPoolTokens, 1, 2, 1, kPoolDim, 41);
  EXPECT_OK(sinkkv_thread_pool_create(2, &pool));
  for (i = 0; i < kCaches; ++i) {
    long_config(&c, i == 0 ? pool : NULL);
    c.max_chunk = 4;
    c.element_type = i == 2   ? SINKKV_ELEMENT_FLOAT16
                     : i == 3 ? SINKKV_ELEMENT_BFLOAT16
                     : i >= 4 ? SINKKV_ELEMENT_FLOAT64
                              : SINKKV_ELEMENT_FLOAT32;
    if (i == 1) c.kernel = SINKKV_KERNEL_REFERENCE;
    if (i == 5) c.encoding = SINKKV_ENCODING_ALIBI;
    caches[i] = NULL;
    EXPECT_OK(sinkkv_cache_create(&c, &caches[i]));
    if (caches[i] == NULL) return;
  }
  /* warm up once (first calls may touch lazily initialised runtime state) */
  for (i = 0; i < kCaches; ++i) {
    EXPECT_OK(sinkkv_cache_append(caches[i], 0, 1, key_rows(&s, 0, 0), NULL, value_rows(&s, 0, 0), NULL));
    EXPECT_OK(sinkkv_cache_attend(caches[i], 0, 1, query_rows(&s, 0, 0), NULL, out, NULL, &options));
  }
  before = allocation_count();
  for (t = 1; t + 4 <= s.tokens; t += 4) {
    for (i = 0; i < kCaches; ++i) {
      if (i == 4) { /* the _f64 calls, one token at a time, explicit steps */
        int j;
        for (j = 0; j < 4; ++j) {
          EXPECT_OK(sinkkv_cache_begin_step(caches[i], (uint64_t)(t + j), 1));
          EXPECT_OK(sinkkv_cache_append_f64(caches[i], 0, 1, k64, NULL, v64, NULL));
          EXPECT_OK(sinkkv_cache_attend_f64(caches[i], 0, 1, q64, NULL, out64, NULL, &options));
        }
      } else if (t % 8 == 1) { /* a chunk of 4 */
        EXPECT_OK(sinkkv_cache_append(caches[i], 0, 4, key_rows(&s, t, 0), &kv, value_rows(&s, t, 0), &kv));
        EXPECT_OK(sinkkv_cache_attend(caches[i], 0, 4, query_rows(&s, t, 0), &qs, out, NULL, &options));
      } else { /* 4 single tokens */
        int j;
        for (j = 0; j < 4; ++j) {
          EXPECT_OK(sinkkv_cache_append(caches[i], 0, 1, key_rows(&s, t + j, 0), NULL, value_rows(&s, t + j, 0), NULL));
          EXPECT_OK(sinkkv_cache_attend(caches[i], 0, 1, query_rows(&s, t + j, 0), NULL, out, NULL, &options));
        }
      }
      EXPECT_OK(sinkkv_cache_tokens_seen(caches[i], &value));
      EXPECT_OK(sinkkv_cache_storage_bytes(caches[i], &value));
      EXPECT_OK(sinkkv_cache_size(caches[i], 0, 0, &count));
      EXPECT_OK(sinkkv_cache_capacity(caches[i], 0, 0, &count));
      EXPECT_OK(sinkkv_cache_stream_index(caches[i], 0, 0, 0, &value));
      EXPECT_OK(sinkkv_cache_log_sum_exp(caches[i], 0, 1, &lse));
    }
  }
  for (i = 0; i < kCaches; ++i) EXPECT_OK(sinkkv_cache_reset(caches[i]));
  if (allocation_count() != before) {
    fprintf(stderr, "[%s] %zu allocations while streaming %d tokens through %d caches\n", current_test,
            allocation_count() - before, s.tokens, kCaches);
    ++failures;
  }
  for (i = 0; i < kCaches; ++i) sinkkv_cache_destroy(caches[i]);
  sinkkv_thread_pool_destroy(pool);
  free_stream(&s);
}

/* Makes each allocation of `attempt` fail in turn: every failure reports
 * SINKKV_ERROR_OUT_OF_MEMORY (or SINKKV_ERROR_SYSTEM where `system_allowed`:
 * starting a thread), writes no handle and leaks nothing; the attempt then
 * succeeds once past its last allocation. */
typedef sinkkv_status (*Attempt)(void* context, void** made);
typedef void (*Destroy)(void* made);

static sinkkv_status attempt_create(void* context, void** made) {
  return sinkkv_cache_create((const sinkkv_cache_config*)context, (sinkkv_cache**)made);
}
static sinkkv_status attempt_clone(void* context, void** made) {
  return sinkkv_cache_clone((const sinkkv_cache*)context, (sinkkv_cache**)made);
}
static sinkkv_status attempt_pool(void* context, void** made) {
  return sinkkv_thread_pool_create(*(const int*)context, (sinkkv_thread_pool**)made);
}
static void destroy_cache(void* made) { sinkkv_cache_destroy((sinkkv_cache*)made); }
static void destroy_pool(void* made) { sinkkv_thread_pool_destroy((sinkkv_thread_pool*)made); }

static void inject_failures(const char* name, Attempt attempt, void* context, Destroy destroy, int system_allowed,
                            int check_leaks) {
  long index;
  for (index = 0; index < 1000; ++index) {
    void* made = NULL;
    const long live = live_allocations();
    sinkkv_status status;
    int expected_code;
    fail_allocation_after(index);
    status = attempt(context, &made);
    fail_allocation_after(-1);
    if (!allocation_failure_happened()) { /* past the last allocation: success */
      if (status != SINKKV_OK || made == NULL) {
        fprintf(stderr, "[%s] %s with no allocation failing: %s \"%s\"\n", current_test, name,
                sinkkv_status_string(status), sinkkv_last_error_message());
        ++failures;
      }
      destroy(made);
      EXPECT(!check_leaks || live_allocations() == live);
      printf("         %s: each of %ld allocations failed in turn\n", name, index);
      return;
    }
    if (status == SINKKV_OK) { /* a failure handled inside (none expected today) */
      destroy(made);
      continue;
    }
    expected_code = status == SINKKV_ERROR_OUT_OF_MEMORY ? strstr(sinkkv_last_error_message(), "alloc") != NULL
                                                         : system_allowed && status == SINKKV_ERROR_SYSTEM;
    if (!expected_code || made != NULL || (check_leaks && live_allocations() != live)) {
      fprintf(stderr, "[%s] %s with allocation %ld failing: %s \"%s\", handle %p, %ld blocks leaked\n", current_test,
              name, index, sinkkv_status_string(status), sinkkv_last_error_message(), made, live_allocations() - live);
      ++failures;
      return;
    }
  }
  fprintf(stderr, "[%s] %s still failing after 1000 allocations\n", current_test, name);
  ++failures;
}

static void test_failed_allocations_report_out_of_memory_and_leak_nothing(void) {
  static const sinkkv_retention_policy heads[4] = {{2, 5}, {0, 3}, {1, 1}, {3, 4}};
  static const double slopes[4] = {0.5, 0.25, 0.125, 0.0625};
  sinkkv_cache_config c;
  sinkkv_thread_pool* pool = NULL;
  sinkkv_cache* cache = NULL;
  Stream s = make_stream(9, 2, 4, 2, 8, 5);
  float out[32];
  int three_threads = 3;
  if (!allocation_hooks_active()) {
    skipped = 1;
    free_stream(&s);
    return;
  }
  /* one error first: the C++ runtime sets up exception handling once */
  EXPECT_STATUS(sinkkv_thread_pool_create(0, &pool), SINKKV_ERROR_INVALID_ARGUMENT, "num_threads 0");
  EXPECT_OK(sinkkv_thread_pool_create(2, &pool));

  /* A pool of two workers: when the second cannot start, the first is
   * stopped and joined before the error returns (it once ended the process).
   * Not checked for leaks: glibc keeps a finished thread's TLS blocks with
   * its cached stack. */
  inject_failures("thread pool", attempt_pool, &three_threads, destroy_pool, 1, 0);

  small_config(&c);
  inject_failures("create float32 RoPE", attempt_create, &c, destroy_cache, 0, 1);
  c.element_type = SINKKV_ELEMENT_FLOAT64;
  c.encoding = SINKKV_ENCODING_ALIBI;
  c.alibi_slopes = slopes;
  c.num_alibi_slopes = 4;
  c.head_policies = heads;
  c.num_head_policies = 4;
  c.max_chunk = 3;
  c.thread_pool = pool;
  inject_failures("create float64 ALiBi per-head policies with a pool", attempt_create, &c, destroy_cache, 0, 1);

  small_config(&c);
  c.element_type = SINKKV_ELEMENT_BFLOAT16;
  c.thread_pool = pool;
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache != NULL) {
    stream_tokens(cache, &s, 0, 9, out);
    inject_failures("clone", attempt_clone, cache, destroy_cache, 0, 1);
    sinkkv_cache_destroy(cache);
  }
  sinkkv_thread_pool_destroy(pool);
  free_stream(&s);
}

/* Error paths free whatever they allocated (the message, the C++ error). */
static void test_error_paths_leak_nothing(void) {
  sinkkv_cache_config c;
  sinkkv_cache* cache = NULL;
  sinkkv_cache* none = NULL;
  float rows[64];
  long live;
  int round;
  if (!allocation_hooks_active()) { /* under ASan, LeakSanitizer checks the whole run instead */
    skipped = 1;
    return;
  }
  memset(rows, 0, sizeof rows);
  small_config(&c);
  EXPECT_OK(sinkkv_cache_create(&c, &cache));
  if (cache == NULL) return;
  for (round = 0; round < 2; ++round) { /* round 0 warms up the runtime */
    EXPECT_OK(sinkkv_cache_reset(cache));
    live = live_allocations();
    small_config(&c);
    c.num_layers = 0;
    EXPECT_STATUS(sinkkv_cache_create(&c, &none), SINKKV_ERROR_INVALID_ARGUMENT, "num_layers 0");
    small_config(&c);
    c.rope_theta = -1;
    EXPECT_STATUS(sinkkv_cache_create(&c, &none), SINKKV_ERROR_INVALID_ARGUMENT, "rope theta -1");
    EXPECT_STATUS(sinkkv_cache_attend(cache, 0, 1, rows, NULL, rows, NULL, NULL), SINKKV_ERROR_PROTOCOL, "empty cache");
    EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, NULL, NULL, rows, NULL), SINKKV_ERROR_INVALID_ARGUMENT, "keys");
    EXPECT_OK(sinkkv_cache_append(cache, 0, 1, rows, NULL, rows, NULL));
    EXPECT_STATUS(sinkkv_cache_append(cache, 0, 1, rows, NULL, rows, NULL), SINKKV_ERROR_PROTOCOL, "twice");
    EXPECT_OK(sinkkv_cache_append(cache, 1, 1, rows, NULL, rows, NULL));
    if (round == 1 && live_allocations() != live) {
      fprintf(stderr, "[%s] error paths left %ld blocks allocated\n", current_test, live_allocations() - live);
      ++failures;
    }
  }
  sinkkv_cache_destroy(cache);
}

/* ---- registry ------------------------------------------------------------------------------- */

typedef struct TestEntry {
  const char* name;
  void (*run)(void);
} TestEntry;

/* CMake registers one CTest test per line of this table. */
#define SINKKV_TEST_ENTRY(name) \
  { #name, test_##name }
static const TestEntry kTests[] = {
    SINKKV_TEST_ENTRY(version_matches_header),
    SINKKV_TEST_ENTRY(status_strings_name_every_code),
    SINKKV_TEST_ENTRY(config_init_sets_the_documented_defaults),
    SINKKV_TEST_ENTRY(float32_rope_matches_reference),
    SINKKV_TEST_ENTRY(float32_rope_reference_kernel_matches_reference),
    SINKKV_TEST_ENTRY(float64_f64_calls_match_reference_to_double_rounding),
    SINKKV_TEST_ENTRY(float64_float_calls_round_outputs_to_float),
    SINKKV_TEST_ENTRY(float16_matches_reference_to_half_rounding),
    SINKKV_TEST_ENTRY(bfloat16_matches_reference_to_bfloat16_rounding),
    SINKKV_TEST_ENTRY(no_encoding_matches_reference),
    SINKKV_TEST_ENTRY(alibi_with_slopes_matches_reference),
    SINKKV_TEST_ENTRY(split_halves_partial_rotary_matches_reference),
    SINKKV_TEST_ENTRY(explicit_frequencies_match_reference),
    SINKKV_TEST_ENTRY(per_layer_policies_match_reference),
    SINKKV_TEST_ENTRY(per_head_policies_match_reference),
    SINKKV_TEST_ENTRY(sink_logits_and_scale_match_reference),
    SINKKV_TEST_ENTRY(float64_sink_logits_match_reference),
    SINKKV_TEST_ENTRY(chunked_prefill_matches_token_at_a_time_and_reference),
    SINKKV_TEST_ENTRY(head_major_and_padded_strides_equal_packed),
    SINKKV_TEST_ENTRY(stream_rotated_inputs_match_unrotated),
    SINKKV_TEST_ENTRY(begin_step_gives_implicit_results),
    SINKKV_TEST_ENTRY(reset_starts_a_new_sequence_in_the_same_memory),
    SINKKV_TEST_ENTRY(clone_is_an_independent_deep_copy),
    SINKKV_TEST_ENTRY(observers_report_positions_and_storage),
    SINKKV_TEST_ENTRY(log_sum_exp_matches_reference),
    SINKKV_TEST_ENTRY(thread_pool_matches_single_thread),
    SINKKV_TEST_ENTRY(struct_size_accepts_zero_tails_only),
    SINKKV_TEST_ENTRY(bad_configurations_are_rejected_naming_the_value),
    SINKKV_TEST_ENTRY(unallocatable_cache_reports_out_of_memory),
    SINKKV_TEST_ENTRY(null_handles_and_pointers_are_rejected),
    SINKKV_TEST_ENTRY(bad_append_and_attend_arguments_are_rejected_naming_the_value),
    SINKKV_TEST_ENTRY(bad_observer_and_pool_arguments_are_rejected),
    SINKKV_TEST_ENTRY(protocol_misuse_is_reported_and_changes_nothing),
    SINKKV_TEST_ENTRY(error_messages_are_per_thread_and_cleared_by_success),
    SINKKV_TEST_ENTRY(no_allocation_after_create),
    SINKKV_TEST_ENTRY(failed_allocations_report_out_of_memory_and_leak_nothing),
    SINKKV_TEST_ENTRY(error_paths_leak_nothing),
};

int main(int argc, char** argv) {
  const size_t count = sizeof kTests / sizeof kTests[0];
  size_t i;
  int ran = 0, skips = 0;
  for (i = 0; i < count; ++i) {
    int before = failures;
    if (argc > 1 && strcmp(argv[1], kTests[i].name) != 0) continue;
    current_test = kTests[i].name;
    skipped = 0;
    kTests[i].run();
    ++ran;
    skips += skipped;
    printf("%-8s %s\n", failures > before ? "FAILED" : skipped ? "SKIPPED" : "ok", kTests[i].name);
  }
  if (ran == 0) {
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  if (failures > 0) return 1;
  return argc > 1 && skips == ran ? 77 : 0;
}

/* Streams a random-weight transformer through sinkkv's C interface.
 *
 * A Llama-shaped decoder (RMSNorm, grouped-query attention with RoPE,
 * SwiGLU MLP, tied embeddings) with random weights: a prompt is prefilled
 * in chunks, then tokens are sampled one at a time, far past the cache's
 * capacity. Every layer keeps its keys and values in one sinkkv cache
 * (attention sinks + a rolling window), so memory stays flat however long
 * the stream runs. Prints tokens/s and resident memory as it goes.
 *
 *   sinkkv-c-stream [--tokens N] [--window W] [--sinks S] [--element f32|f64|f16|bf16]
 *                   [--threads T] [--layers L] [--dim D] [--heads H] [--kv-heads K]
 *                   [--hidden F] [--prompt P] [--chunk C] [--seed X] [--check]
 *
 * --check: exit 1 unless resident memory grew less than 1 MiB between the
 * first full cache and the end (Linux; elsewhere memory is not measured). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <sinkkv/sinkkv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Any sinkkv error ends the program with its message. */
#define SINKKV_TRY(call)                                                                       \
  do {                                                                                         \
    const sinkkv_status status_ = (call);                                                      \
    if (status_ != SINKKV_OK) {                                                                \
      fprintf(stderr, "%s: %s\n", sinkkv_status_string(status_), sinkkv_last_error_message()); \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

typedef struct Options {
  long tokens;
  int window, sinks, threads, layers, dim, heads, kv_heads, hidden, vocab, prompt, chunk, check;
  unsigned long long seed;
  sinkkv_element_type element;
} Options;

typedef struct Layer {
  float *attention_norm, *wq, *wk, *wv,
      *wo; /* wq [heads * head_dim][dim], wk/wv [kv_heads * head_dim][dim], wo [dim][heads * head_dim] */
  float *mlp_norm, *w1, *w2, *w3; /* w1/w3 [hidden][dim], w2 [dim][hidden] */
} Layer;

typedef struct Model {
  int dim, heads, kv_heads, head_dim, hidden, vocab, layers;
  float* embedding; /* [vocab][dim], also the output projection */
  float* final_norm;
  Layer* layer;
} Model;

static unsigned long long rng;
static float uniform(void) { /* [0, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 40) * (1.0 / 16777216.0));
}

static float* allocate(size_t count) {
  float* block = (float*)calloc(count, sizeof(float));
  if (block == NULL) {
    fprintf(stderr, "out of memory (%zu floats)\n", count);
    exit(1);
  }
  return block;
}

/* Uniform weights with unit variance per output: +-sqrt(3 / fan_in). */
static float* random_matrix(int rows, int cols) {
  float* m = allocate((size_t)rows * cols);
  const float bound = sqrtf(3.0f / (float)cols);
  size_t i;
  for (i = 0; i < (size_t)rows * cols; ++i) m[i] = (2.0f * uniform() - 1.0f) * bound;
  return m;
}

static float* ones(int n) {
  float* v = allocate((size_t)n);
  int i;
  for (i = 0; i < n; ++i) v[i] = 1.0f;
  return v;
}

static Model random_model(const Options* o) {
  Model m;
  int l;
  m.dim = o->dim;
  m.heads = o->heads;
  m.kv_heads = o->kv_heads;
  m.head_dim = o->dim / o->heads;
  m.hidden = o->hidden;
  m.vocab = o->vocab;
  m.layers = o->layers;
  m.embedding = random_matrix(m.vocab, m.dim);
  m.final_norm = ones(m.dim);
  m.layer = (Layer*)calloc((size_t)m.layers, sizeof(Layer));
  if (m.layer == NULL) exit(1);
  for (l = 0; l < m.layers; ++l) {
    Layer* w = &m.layer[l];
    w->attention_norm = ones(m.dim);
    w->wq = random_matrix(m.heads * m.head_dim, m.dim);
    w->wk = random_matrix(m.kv_heads * m.head_dim, m.dim);
    w->wv = random_matrix(m.kv_heads * m.head_dim, m.dim);
    w->wo = random_matrix(m.dim, m.heads * m.head_dim);
    w->mlp_norm = ones(m.dim);
    w->w1 = random_matrix(m.hidden, m.dim);
    w->w2 = random_matrix(m.dim, m.hidden);
    w->w3 = random_matrix(m.hidden, m.dim);
  }
  return m;
}

static void free_model(Model* m) {
  int l;
  for (l = 0; l < m->layers; ++l) {
    Layer* w = &m->layer[l];
    free(w->attention_norm);
    free(w->wq);
    free(w->wk);
    free(w->wv);
    free(w->wo);
    free(w->mlp_norm);
    free(w->w1);
    free(w->w2);
    free(w->w3);
  }
  free(m->layer);
  free(m->embedding);
  free(m->final_norm);
}

/* out[rows] = w[rows][cols] x[cols] */
static void matmul(float* out, const float* w, const float* x, int rows, int cols) {
  int r, c;
  for (r = 0; r < rows; ++r) {
    const float* row = w + (size_t)r * cols;
    float sum = 0.0f;
    for (c = 0; c < cols; ++c) sum += row[c] * x[c];
    out[r] = sum;
  }
}

static void rms_norm(float* out, const float* x, const float* weight, int n) {
  float sum = 0.0f;
  int i;
  for (i = 0; i < n; ++i) sum += x[i] * x[i];
  sum = 1.0f / sqrtf(sum / (float)n + 1e-5f);
  for (i = 0; i < n; ++i) out[i] = weight[i] * x[i] * sum;
}

/* Per-token activations of a chunk of up to `chunk` tokens. */
typedef struct Activations {
  float *x, *xb, *q, *k, *v, *attention, *h1, *h3, *logits;
} Activations;

static Activations make_activations(const Model* m, int chunk) {
  Activations a;
  a.x = allocate((size_t)chunk * m->dim);
  a.xb = allocate((size_t)chunk * m->dim);
  a.q = allocate((size_t)chunk * m->heads * m->head_dim);
  a.k = allocate((size_t)chunk * m->kv_heads * m->head_dim);
  a.v = allocate((size_t)chunk * m->kv_heads * m->head_dim);
  a.attention = allocate((size_t)chunk * m->heads * m->head_dim);
  a.h1 = allocate((size_t)m->hidden);
  a.h3 = allocate((size_t)m->hidden);
  a.logits = allocate((size_t)m->vocab);
  return a;
}

static void free_activations(Activations* a) {
  free(a->x);
  free(a->xb);
  free(a->q);
  free(a->k);
  free(a->v);
  free(a->attention);
  free(a->h1);
  free(a->h3);
  free(a->logits);
}

/* Runs `n` consecutive tokens through every layer (one cache step); leaves
 * the last token's logits in a->logits. The cache applies RoPE (un-rotated
 * inputs, the default). */
static void forward(const Model* m, sinkkv_cache* cache, const int* tokens, int n, Activations* a) {
  const int qd = m->heads * m->head_dim, kvd = m->kv_heads * m->head_dim;
  int i, l, j;
  for (i = 0; i < n; ++i)
    memcpy(a->x + (size_t)i * m->dim, m->embedding + (size_t)tokens[i] * m->dim, m->dim * sizeof(float));
  for (l = 0; l < m->layers; ++l) {
    const Layer* w = &m->layer[l];
    for (i = 0; i < n; ++i) {
      rms_norm(a->xb, a->x + (size_t)i * m->dim, w->attention_norm, m->dim);
      matmul(a->q + (size_t)i * qd, w->wq, a->xb, qd, m->dim);
      matmul(a->k + (size_t)i * kvd, w->wk, a->xb, kvd, m->dim);
      matmul(a->v + (size_t)i * kvd, w->wv, a->xb, kvd, m->dim);
    }
    /* [n, heads, head_dim] rows, packed: NULL strides */
    SINKKV_TRY(sinkkv_cache_append(cache, l, n, a->k, NULL, a->v, NULL));
    SINKKV_TRY(sinkkv_cache_attend(cache, l, n, a->q, NULL, a->attention, NULL, NULL));
    for (i = 0; i < n; ++i) {
      float* x = a->x + (size_t)i * m->dim;
      matmul(a->xb, w->wo, a->attention + (size_t)i * qd, m->dim, qd);
      for (j = 0; j < m->dim; ++j) x[j] += a->xb[j];
      rms_norm(a->xb, x, w->mlp_norm, m->dim);
      matmul(a->h1, w->w1, a->xb, m->hidden, m->dim);
      matmul(a->h3, w->w3, a->xb, m->hidden, m->dim);
      for (j = 0; j < m->hidden; ++j) a->h1[j] = a->h1[j] / (1.0f + expf(-a->h1[j])) * a->h3[j];
      matmul(a->xb, w->w2, a->h1, m->dim, m->hidden);
      for (j = 0; j < m->dim; ++j) x[j] += a->xb[j];
    }
  }
  rms_norm(a->xb, a->x + (size_t)(n - 1) * m->dim, m->final_norm, m->dim);
  matmul(a->logits, m->embedding, a->xb, m->vocab, m->dim);
}

static int sample(const float* logits, int vocab) {
  float largest = logits[0], total = 0.0f, pick;
  int i;
  for (i = 1; i < vocab; ++i) largest = logits[i] > largest ? logits[i] : largest;
  for (i = 0; i < vocab; ++i) total += expf(logits[i] - largest);
  pick = uniform() * total;
  for (i = 0; i < vocab; ++i) {
    pick -= expf(logits[i] - largest);
    if (pick <= 0.0f) return i;
  }
  return vocab - 1;
}

static double seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* Resident set size in KiB, or -1 where /proc/self/statm does not exist. */
static long resident_kib(void) {
  long pages_total = 0, pages_resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = -1;
  fclose(f);
  return pages_resident < 0 ? -1 : pages_resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int parse(int argc, char** argv, Options* o) {
  int i;
  o->tokens = 20000;
  o->window = 1020;
  o->sinks = 4;
  o->threads = 1;
  o->layers = 4;
  o->dim = 128;
  o->heads = 8;
  o->kv_heads = 2;
  o->hidden = 384;
  o->vocab = 512;
  o->prompt = 64;
  o->chunk = 16;
  o->check = 0;
  o->seed = 42;
  o->element = SINKKV_ELEMENT_FLOAT32;
  for (i = 1; i < argc; ++i) {
    const char* flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(flag, "--check") == 0) {
      o->check = 1;
      continue;
    }
    if (value == NULL) {
      fprintf(stderr, "%s needs a value\n", flag);
      return 0;
    }
    ++i;
    if (strcmp(flag, "--tokens") == 0)
      o->tokens = atol(value);
    else if (strcmp(flag, "--window") == 0)
      o->window = atoi(value);
    else if (strcmp(flag, "--sinks") == 0)
      o->sinks = atoi(value);
    else if (strcmp(flag, "--threads") == 0)
      o->threads = atoi(value);
    else if (strcmp(flag, "--layers") == 0)
      o->layers = atoi(value);
    else if (strcmp(flag, "--dim") == 0)
      o->dim = atoi(value);
    else if (strcmp(flag, "--heads") == 0)
      o->heads = atoi(value);
    else if (strcmp(flag, "--kv-heads") == 0)
      o->kv_heads = atoi(value);
    else if (strcmp(flag, "--hidden") == 0)
      o->hidden = atoi(value);
    else if (strcmp(flag, "--prompt") == 0)
      o->prompt = atoi(value);
    else if (strcmp(flag, "--chunk") == 0)
      o->chunk = atoi(value);
    else if (strcmp(flag, "--seed") == 0)
      o->seed = strtoull(value, NULL, 10);
    else if (strcmp(flag, "--element") == 0) {
      if (strcmp(value, "f32") == 0)
        o->element = SINKKV_ELEMENT_FLOAT32;
      else if (strcmp(value, "f64") == 0)
        o->element = SINKKV_ELEMENT_FLOAT64;
      else if (strcmp(value, "f16") == 0)
        o->element = SINKKV_ELEMENT_FLOAT16;
      else if (strcmp(value, "bf16") == 0)
        o->element = SINKKV_ELEMENT_BFLOAT16;
      else {
        fprintf(stderr, "--element %s: expected f32, f64, f16 or bf16\n", value);
        return 0;
      }
    } else {
      fprintf(stderr, "unknown flag %s\n", flag);
      return 0;
    }
  }
  /* sinkkv checks its own configuration; these are the model's */
  if (o->tokens < 1 || o->layers < 1 || o->dim < 1 || o->heads < 1 || o->dim % o->heads != 0 || o->hidden < 1 ||
      o->prompt < 1 || o->chunk < 1 || o->prompt > o->tokens || o->threads < 1) {
    fprintf(stderr, "need tokens >= prompt >= 1, chunk >= 1, threads >= 1, and dim a multiple of heads\n");
    return 0;
  }
  return 1;
}

int main(int argc, char** argv) {
  Options o;
  Model model;
  Activations act;
  sinkkv_cache_config config;
  sinkkv_thread_pool* pool = NULL;
  sinkkv_cache* cache = NULL;
  int* prompt;
  int token, capacity = 0, size = 0, i;
  long t, report_every, baseline_kib = -1, end_kib;
  uint64_t storage = 0, seen = 0;
  double start, last_time, last_t = 0;

  if (!parse(argc, argv, &o)) return 2;
  rng = o.seed * 2654435761ull + 1;
  model = random_model(&o);
  act = make_activations(&model, o.chunk);

  SINKKV_TRY(sinkkv_cache_config_init(&config, sizeof config));
  config.element_type = o.element;
  config.num_layers = model.layers;
  config.num_query_heads = model.heads;
  config.num_kv_heads = model.kv_heads;
  config.head_dim = model.head_dim;
  config.num_sinks = o.sinks;
  config.window = o.window;
  config.max_chunk = o.chunk;
  config.rope_theta = 10000.0;
  if (o.threads > 1) {
    SINKKV_TRY(sinkkv_thread_pool_create(o.threads, &pool));
    config.thread_pool = pool;
  }
  SINKKV_TRY(sinkkv_cache_create(&config, &cache));
  sinkkv_thread_pool_destroy(pool); /* the cache holds its own reference */
  SINKKV_TRY(sinkkv_cache_storage_bytes(cache, &storage));
  SINKKV_TRY(sinkkv_cache_capacity(cache, 0, 0, &capacity));
  printf("sinkkv %s C API: %d layers, dim %d, %d query / %d KV heads of %d, %d sinks + %d window, %s, %d thread%s\n",
         sinkkv_version_string(), model.layers, model.dim, model.heads, model.kv_heads, model.head_dim, o.sinks,
         o.window,
         o.element == SINKKV_ELEMENT_FLOAT32   ? "float32"
         : o.element == SINKKV_ELEMENT_FLOAT64 ? "float64"
         : o.element == SINKKV_ELEMENT_FLOAT16 ? "float16"
                                               : "bfloat16",
         o.threads, o.threads == 1 ? "" : "s");
  printf("cache storage %.2f MiB (fixed); streaming %ld tokens (a %d-token prompt in chunks of %d, then sampling)\n",
         (double)storage / 1048576.0, o.tokens, o.prompt, o.chunk);

  /* the prompt: random tokens, prefilled in chunks */
  prompt = (int*)calloc((size_t)o.prompt, sizeof(int));
  if (prompt == NULL) return 1;
  for (i = 0; i < o.prompt; ++i) prompt[i] = (int)(uniform() * (float)model.vocab) % model.vocab;
  start = seconds();
  for (i = 0; i < o.prompt; i += o.chunk) {
    const int n = o.prompt - i < o.chunk ? o.prompt - i : o.chunk;
    forward(&model, cache, prompt + i, n, &act);
  }
  token = sample(act.logits, model.vocab);
  last_time = seconds();
  last_t = o.prompt;

  report_every = o.tokens / 10 > 1000 ? o.tokens / 10 : 1000;
  for (t = o.prompt; t < o.tokens; ++t) {
    forward(&model, cache, &token, 1, &act);
    token = sample(act.logits, model.vocab);
    if ((t + 1) % report_every == 0 || t + 1 == o.tokens) {
      const double now = seconds();
      const long kib = resident_kib();
      SINKKV_TRY(sinkkv_cache_size(cache, 0, 0, &size));
      if (baseline_kib < 0 && size == capacity) baseline_kib = kib; /* memory after the cache first filled */
      printf("%9ld tokens  %8.0f tokens/s  cache %d/%d  resident %.1f MiB\n", t + 1,
             (now - last_time > 0 ? (double)(t + 1 - last_t) / (now - last_time) : 0.0), size, capacity,
             kib < 0 ? -1.0 : (double)kib / 1024.0);
      fflush(stdout);
      last_time = now;
      last_t = (double)(t + 1);
    }
  }
  end_kib = resident_kib();
  SINKKV_TRY(sinkkv_cache_tokens_seen(cache, &seen));
  printf("%llu tokens in %.2f s: %.0f tokens/s overall\n", (unsigned long long)seen, seconds() - start,
         (double)seen / (seconds() - start));
  if (baseline_kib >= 0 && end_kib >= 0) {
    printf("resident memory: %.1f MiB once the cache was full, %.1f MiB at the end (%+ld KiB)\n",
           (double)baseline_kib / 1024.0, (double)end_kib / 1024.0, end_kib - baseline_kib);
  }

  sinkkv_cache_destroy(cache);
  free(prompt);
  free_activations(&act);
  free_model(&model);
  if (seen != (uint64_t)o.tokens) {
    fprintf(stderr, "the cache saw %llu tokens, expected %ld\n", (unsigned long long)seen, o.tokens);
    return 1;
  }
  if (o.check && baseline_kib >= 0 && end_kib - baseline_kib >= 1024) {
    fprintf(stderr, "resident memory grew by %ld KiB after the cache was full\n", end_kib - baseline_kib);
    return 1;
  }
  if (o.check && baseline_kib < 0 && resident_kib() >= 0) {
    fprintf(stderr, "--check: the stream never filled the cache (%ld tokens, capacity %d)\n", o.tokens, capacity);
    return 1;
  }
  return 0;
}

/* sinkkv: the C interface (target sinkkv::sinkkv_c, library sinkkv_c).
 *
 * For C engines and other languages' FFIs: an opaque cache handle whose
 * element type, shape, per-layer/per-head policies, position encoding and
 * kernel are chosen at run time; plain float (or double) buffers with token
 * and head strides; a status code from every call and a message naming the
 * bad value. No C++ type or exception crosses this boundary. The C++ library
 * (sinkkv.hpp) stays header-only; this interface is a small compiled wrapper
 * around sinkkv::SinkKVCache. docs/c_api.md has the details and an example.
 *
 * Errors. Every function that can fail returns a sinkkv_status; SINKKV_OK is
 * 0. On failure nothing has changed (a cache stays usable, no output pointer
 * is written) and sinkkv_last_error_message() names the function and the
 * value, e.g. "sinkkv_cache_create: num_layers 0 outside [1, 65536]".
 *
 * Threads. A cache may be used from any thread, by one thread at a time (no
 * internal locking; observers included). Different caches are independent.
 * The last error message is per thread. A thread pool may be shared by
 * caches used on different threads: its attends are serialised.
 *
 * Memory. sinkkv_cache_create allocates everything a cache will use; append,
 * attend, begin_step, reset and the observers never allocate (in a library
 * loaded with dlopen, the first call on a new thread may make the C runtime
 * allocate that thread's copy of the message buffer).
 *
 * ABI. Structs that may grow start with `struct_size` (sizeof as the caller
 * compiled it): fields are only ever appended, a field added later takes 0
 * for "as before", and a struct from a newer header is accepted by an older
 * library when the fields it does not know are 0. Enum values and status
 * codes never change; new ones may be added. The pool of many sequences
 * (sinkkv::SequencePool) is reserved the prefix sinkkv_pool_.
 *
 * C99 (stdint.h); no C++ in this header. */
#ifndef SINKKV_SINKKV_H
#define SINKKV_SINKKV_H

#include <stddef.h>
#include <stdint.h>

/* Checked against CMake's project(VERSION) at configure time. */
#define SINKKV_VERSION_MAJOR 0
#define SINKKV_VERSION_MINOR 1
#define SINKKV_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, as sinkkv_version() returns. */
#define SINKKV_VERSION (SINKKV_VERSION_MAJOR * 10000 + SINKKV_VERSION_MINOR * 100 + SINKKV_VERSION_PATCH)

#if defined(_WIN32) && defined(SINKKV_C_SHARED)
#if defined(SINKKV_C_BUILDING)
#define SINKKV_API __declspec(dllexport)
#else
#define SINKKV_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) && defined(SINKKV_C_BUILDING)
#define SINKKV_API __attribute__((visibility("default")))
#else
#define SINKKV_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes and messages ------------------------------------------ */

typedef enum sinkkv_status {
  SINKKV_OK = 0,
  /* A NULL handle or pointer, a value out of range, a bad configuration, a
   * shape, stride or size that overflows. */
  SINKKV_ERROR_INVALID_ARGUMENT = 1,
  /* Calls in an order the step protocol forbids: a layer appending twice for
   * one step or skipped, attending before appending, a step not begun, ...
   * (see sinkkv_cache_append). */
  SINKKV_ERROR_PROTOCOL = 2,
  /* Memory could not be allocated (only create, clone, thread pools). */
  SINKKV_ERROR_OUT_OF_MEMORY = 3,
  /* Valid on its own but not with this cache or this library: a _f64 call on
   * a cache that does not compute in double, a struct from a newer header
   * with fields this library does not know. */
  SINKKV_ERROR_UNSUPPORTED = 4,
  /* The operating system refused a resource (threads). */
  SINKKV_ERROR_SYSTEM = 5,
  /* A bug in sinkkv; the message says what happened. */
  SINKKV_ERROR_INTERNAL = 6
} sinkkv_status;

/* The message of the most recent sinkkv call on this thread that returns a
 * status: "" after a success. Never NULL. Valid until the next such call on
 * this thread. At most 1023 bytes (longer messages end in "..."). */
SINKKV_API const char* sinkkv_last_error_message(void);

/* The code's name, e.g. "SINKKV_ERROR_PROTOCOL"; "SINKKV_UNKNOWN_STATUS" for
 * other values. Static storage. */
SINKKV_API const char* sinkkv_status_string(int status);

/* The library's version, MAJOR * 10000 + MINOR * 100 + PATCH (compare with
 * SINKKV_VERSION), and as text ("0.1.0"). */
SINKKV_API int sinkkv_version(void);
SINKKV_API const char* sinkkv_version_string(void);

/* ---- configuration ------------------------------------------------------- */

/* How the cache stores keys and values. Half types are stored compactly and
 * computed in float; FLOAT64 is stored and computed in double. */
typedef enum sinkkv_element_type {
  SINKKV_ELEMENT_FLOAT32 = 0,
  SINKKV_ELEMENT_FLOAT64 = 1,
  SINKKV_ELEMENT_FLOAT16 = 2, /* IEEE binary16 */
  SINKKV_ELEMENT_BFLOAT16 = 3
} sinkkv_element_type;

typedef enum sinkkv_encoding {
  SINKKV_ENCODING_NONE = 0,
  SINKKV_ENCODING_ROPE = 1, /* rotary; the rope_ fields */
  SINKKV_ENCODING_ALIBI = 2 /* linear score bias; alibi_slopes */
} sinkkv_encoding;

/* Which coordinates RoPE rotates together. */
typedef enum sinkkv_rope_layout {
  SINKKV_ROPE_ADJACENT_PAIRS = 0, /* (2i, 2i+1): Meta's Llama code, llama2.c, ggml "normal" */
  SINKKV_ROPE_SPLIT_HALVES = 1    /* (i, i + rotary_dim/2): GPT-NeoX, Hugging Face */
} sinkkv_rope_layout;

/* RoPE variants: the rope_ fields they read mirror the keys of a Hugging
 * Face `rope_scaling` dictionary (docs/c_api.md has the mapping). */
typedef enum sinkkv_rope_scaling {
  SINKKV_ROPE_SCALING_NONE = 0,      /* theta^(-2i/d) */
  SINKKV_ROPE_SCALING_LINEAR = 1,    /* rope_factor */
  SINKKV_ROPE_SCALING_NTK_AWARE = 2, /* rope_factor */
  SINKKV_ROPE_SCALING_LLAMA3 = 3,    /* rope_factor, _low/_high_freq_factor, _original_max_positions */
  SINKKV_ROPE_SCALING_YARN = 4,      /* rope_factor, _original_max_positions, _beta_fast/_slow, _truncate, _mscale */
  SINKKV_ROPE_SCALING_EXPLICIT = 5 /* rope_inv_frequencies */
} sinkkv_rope_scaling;

/* How the engine hands over keys and queries. */
typedef enum sinkkv_input_rotation {
  SINKKV_INPUT_UNROTATED = 0,     /* the cache applies RoPE */
  SINKKV_INPUT_STREAM_ROTATED = 1 /* already rotated by the engine's RoPE at each token's stream index */
} sinkkv_input_rotation;

/* How attention is computed. */
typedef enum sinkkv_kernel {
  SINKKV_KERNEL_CPU = 0,      /* the fast CPU kernel; split across `thread_pool` when one is given */
  SINKKV_KERNEL_REFERENCE = 1 /* the double-precision oracle: slow, for tests */
} sinkkv_kernel;

/* Threads that cache attends can share (see sinkkv_thread_pool_create). */
typedef struct sinkkv_thread_pool sinkkv_thread_pool;

/* Which tokens one KV head keeps: the first num_sinks of the stream plus
 * the `window` most recent. Frozen (does not grow). */
typedef struct sinkkv_retention_policy {
  int32_t num_sinks;
  int32_t window;
} sinkkv_retention_policy;

/* Shape, policies, encoding and kernel of a cache. Fill it with
 * sinkkv_cache_config_init, then set what differs. Arrays it points to are
 * read by sinkkv_cache_create only (the caller keeps ownership). Enum
 * fields are int32_t holding the enum's values: a fixed size in every ABI,
 * and any value a caller stores is checked, never undefined. */
typedef struct sinkkv_cache_config {
  size_t struct_size; /* sizeof(sinkkv_cache_config) as the caller compiled it */

  int32_t element_type;    /* a sinkkv_element_type: FLOAT32 */
  int32_t num_layers;      /* 1 */
  int32_t num_query_heads; /* 0: num_kv_heads (no grouping) */
  int32_t num_kv_heads;    /* 1 */
  int32_t head_dim;        /* 64 */

  /* Uniform policy: every KV head keeps num_sinks + window tokens. */
  int32_t num_sinks; /* 4 */
  int32_t window;    /* 1020 */
  /* Optional, NULL for none (at most one of the two): one policy per layer
   * [num_layers], or one per (layer, KV head), layer-major
   * [num_layers * num_kv_heads]; a KV head's query heads follow it. */
  const sinkkv_retention_policy* layer_policies;
  int32_t num_layer_policies;
  const sinkkv_retention_policy* head_policies;
  int32_t num_head_policies;

  int32_t max_chunk; /* 1: most tokens one append may carry (chunked prefill) */

  int32_t encoding;       /* a sinkkv_encoding: ROPE */
  int32_t input_rotation; /* a sinkkv_input_rotation: UNROTATED */

  /* RoPE (encoding ROPE). */
  double rope_theta;                  /* 10000 */
  int32_t rope_rotary_dim;            /* 0: all of head_dim; the rest of each head is not rotated */
  int32_t rope_layout;                /* a sinkkv_rope_layout: ADJACENT_PAIRS */
  int32_t rope_scaling;               /* a sinkkv_rope_scaling: NONE */
  double rope_factor;                 /* 1 */
  double rope_original_max_positions; /* 0 (llama3 and yarn need it) */
  double rope_low_freq_factor;        /* 1 */
  double rope_high_freq_factor;       /* 4 */
  double rope_beta_fast;              /* 32 */
  double rope_beta_slow;              /* 1 */
  int32_t rope_truncate;              /* 1 (yarn; gpt-oss uses 0) */
  double rope_mscale;                 /* 0 */
  double rope_mscale_all_dim;         /* 0 */
  double rope_attention_factor;       /* 0: the variant's own (yarn: 0.1 ln(factor) + 1, else 1) */
  const double* rope_inv_frequencies; /* EXPLICIT: [rope_rotary_dim / 2] */
  int32_t num_rope_inv_frequencies;

  /* ALiBi (encoding ALIBI): NULL for the standard geometric slopes, else one
   * per query head [num_query_heads]. */
  const double* alibi_slopes;
  int32_t num_alibi_slopes;

  int32_t kernel;                  /* a sinkkv_kernel: CPU */
  sinkkv_thread_pool* thread_pool; /* NULL: attend on the calling thread only */
} sinkkv_cache_config;

/* Sets every field to its default (the comments above) and struct_size to
 * `struct_size`; pass sizeof(*config). Writes only struct_size bytes. */
SINKKV_API sinkkv_status sinkkv_cache_config_init(sinkkv_cache_config* config, size_t struct_size);

/* ---- thread pools --------------------------------------------------------- */

/* Starts num_threads - 1 worker threads (num_threads counts the calling
 * thread; 1 to 1024; attention uses up to 16). A cache configured with it
 * splits long attends (thousands of cached tokens) across them. Caches hold
 * a reference: the threads stop when the pool is destroyed and no cache
 * uses it any more. Attends of caches sharing a pool run one at a time. */
SINKKV_API sinkkv_status sinkkv_thread_pool_create(int num_threads, sinkkv_thread_pool** pool);
/* Releases the caller's reference; NULL is a no-op. */
SINKKV_API void sinkkv_thread_pool_destroy(sinkkv_thread_pool* pool);

/* ---- caches --------------------------------------------------------------- */

/* The KV cache of one sequence, all layers. */
typedef struct sinkkv_cache sinkkv_cache;

/* Where row (token i, head h) of a tensor starts: data + i * token_stride +
 * h * head_stride, in elements; head_dim elements follow contiguously.
 * Passing NULL instead means packed [num_tokens, num_heads, head_dim]
 * (head_stride = head_dim, token_stride = num_heads * head_dim). A
 * [num_heads, num_tokens, head_dim] tensor: token_stride = head_dim,
 * head_stride = num_tokens * head_dim. Strides are >= 0 (token_stride is
 * not read for one token) and every offset they form must fit in a
 * ptrdiff_t; output rows must not overlap. Frozen (does not grow). */
typedef struct sinkkv_strides {
  int64_t token_stride;
  int64_t head_stride;
} sinkkv_strides;

/* Options of one attend; NULL means all defaults. */
typedef struct sinkkv_attend_options {
  size_t struct_size; /* sizeof(sinkkv_attend_options) as the caller compiled it */
  double scale;       /* softmax scale; 0 means 1 / sqrt(head_dim). Finite. */
  /* gpt-oss-style learned sink logits: one extra softmax column with a zero
   * value per query head [num_query_heads] (finite or -INFINITY), or NULL.
   * Float for both the float and the _f64 calls. */
  const float* sink_logits;
  int32_t num_sink_logits;
} sinkkv_attend_options;

/* Allocates every layer's storage (sum over KV heads of 2 x (sinks + window
 * + max_chunk - 1) x head_dim elements) and the scratch attends use, then
 * writes the handle to *cache. */
SINKKV_API sinkkv_status sinkkv_cache_create(const sinkkv_cache_config* config, sinkkv_cache** cache);
/* A deep copy (as much memory as create), e.g. to fork a conversation;
 * shares the original's thread pool. */
SINKKV_API sinkkv_status sinkkv_cache_clone(const sinkkv_cache* source, sinkkv_cache** copy);
/* Frees the cache; NULL is a no-op. */
SINKKV_API void sinkkv_cache_destroy(sinkkv_cache* cache);
/* Forgets every token (a new sequence); keeps the memory. */
SINKKV_API sinkkv_status sinkkv_cache_reset(sinkkv_cache* cache);

/* Optional: begins the next step (num_tokens tokens, 1 to max_chunk, from
 * stream index `stream_index`, which must equal tokens seen) explicitly.
 * Once used, every step of the sequence must be begun so (until reset);
 * a layer that skipped an append is then reported at once. */
SINKKV_API sinkkv_status sinkkv_cache_begin_step(sinkkv_cache* cache, uint64_t stream_index, int num_tokens);

/* Stores the keys and values of num_tokens tokens (1 to max_chunk) for
 * `layer`: both [num_tokens, num_kv_heads, head_dim] in the given strides
 * (NULL: packed). Un-rotated unless input_rotation is STREAM_ROTATED.
 *
 * Protocol, per step (one token, or a chunk): every layer appends the
 * step's tokens exactly once, in any order, all with the same num_tokens; a
 * layer may attend once it has appended, with one query per appended token.
 * The first append after every layer holds the previous step starts the
 * next one (evicting the oldest window tokens when full). */
SINKKV_API sinkkv_status sinkkv_cache_append(sinkkv_cache* cache, int layer, int num_tokens, const float* keys,
                                             const sinkkv_strides* key_strides, const float* values,
                                             const sinkkv_strides* value_strides);

/* Attention of the step's queries ([num_tokens, num_query_heads, head_dim],
 * one per token `layer` appended this step) over what each one sees (the
 * sinks and its own window), written to `out` (same shape; rows must not
 * overlap; may alias `queries`). */
SINKKV_API sinkkv_status sinkkv_cache_attend(sinkkv_cache* cache, int layer, int num_tokens, const float* queries,
                                             const sinkkv_strides* query_strides, float* out,
                                             const sinkkv_strides* out_strides, const sinkkv_attend_options* options);

/* The same in double, for FLOAT64 caches only (SINKKV_ERROR_UNSUPPORTED
 * otherwise). FLOAT64 caches also take the float calls above: inputs are
 * widened exactly, outputs rounded to float. */
SINKKV_API sinkkv_status sinkkv_cache_append_f64(sinkkv_cache* cache, int layer, int num_tokens, const double* keys,
                                                 const sinkkv_strides* key_strides, const double* values,
                                                 const sinkkv_strides* value_strides);
SINKKV_API sinkkv_status sinkkv_cache_attend_f64(sinkkv_cache* cache, int layer, int num_tokens, const double* queries,
                                                 const sinkkv_strides* query_strides, double* out,
                                                 const sinkkv_strides* out_strides,
                                                 const sinkkv_attend_options* options);

/* ---- observers (no allocation) --------------------------------------------- */

/* Tokens appended since creation or reset (the next token's stream index). */
SINKKV_API sinkkv_status sinkkv_cache_tokens_seen(const sinkkv_cache* cache, uint64_t* tokens_seen);
/* Bytes of key/value storage, all layers. */
SINKKV_API sinkkv_status sinkkv_cache_storage_bytes(const sinkkv_cache* cache, uint64_t* bytes);
/* Tokens one KV head of one layer holds now, and at most (sinks + window). */
SINKKV_API sinkkv_status sinkkv_cache_size(const sinkkv_cache* cache, int layer, int kv_head, int* size);
SINKKV_API sinkkv_status sinkkv_cache_capacity(const sinkkv_cache* cache, int layer, int kv_head, int* capacity);
/* Stream index of the token at `cache_position` (0 <= it < size) of one KV
 * head: sinks first, then the window oldest to newest. */
SINKKV_API sinkkv_status sinkkv_cache_stream_index(const sinkkv_cache* cache, int layer, int kv_head,
                                                   int cache_position, uint64_t* stream_index);
/* Natural-log log-sum-exp of the scores (sink logits included) of query
 * `query` (0 <= query < the step's tokens), query head `head`, of the last
 * attend, for merging partial attentions. SINKKV_ERROR_PROTOCOL when no
 * attend happened since the current step began (or since reset). */
SINKKV_API sinkkv_status sinkkv_cache_log_sum_exp(const sinkkv_cache* cache, int query, int head, double* log_sum_exp);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SINKKV_SINKKV_H */

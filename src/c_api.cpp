// sinkkv C interface (include/sinkkv/sinkkv.h): a compiled wrapper around
// sinkkv::SinkKVCache<T>, one instantiation per element type, chosen at run
// time behind an opaque handle.
//
// Every entry point runs its body in guarded(), which catches every
// exception (std::bad_alloc included) and turns it into a status code and
// the thread's message. Arguments are checked here, before the cache is
// called, so that a sinkkv::Error the cache throws afterwards can only be a
// protocol error (append, attend, begin_step) or an allocation failure
// (create, clone); the checks reuse the library's own validators
// (CacheConfig::validate, detail::check_input/check_output/check_options),
// so both layers agree on what is valid and name values the same way.
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <sinkkv/sinkkv.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "sinkkv/sinkkv.h"

#define SINKKV_C_STRINGIFY_(x) #x
#define SINKKV_C_STRINGIFY(x) SINKKV_C_STRINGIFY_(x)
#define SINKKV_C_VERSION_STRING            \
  SINKKV_C_STRINGIFY(SINKKV_VERSION_MAJOR) \
  "." SINKKV_C_STRINGIFY(SINKKV_VERSION_MINOR) "." SINKKV_C_STRINGIFY(SINKKV_VERSION_PATCH)

#if defined(__GNUC__)
#define SINKKV_C_PRINTF(format_index, first_arg) __attribute__((format(printf, format_index, first_arg)))
#else
#define SINKKV_C_PRINTF(format_index, first_arg)
#endif

// The C enums are part of the ABI: their values must never change.
static_assert(SINKKV_OK == 0 && SINKKV_ERROR_INVALID_ARGUMENT == 1 && SINKKV_ERROR_PROTOCOL == 2 &&
                  SINKKV_ERROR_OUT_OF_MEMORY == 3 && SINKKV_ERROR_UNSUPPORTED == 4 && SINKKV_ERROR_SYSTEM == 5 &&
                  SINKKV_ERROR_INTERNAL == 6,
              "sinkkv_status values are frozen");
static_assert(sizeof(sinkkv_retention_policy) == 8 && sizeof(sinkkv_strides) == 16,
              "sinkkv_retention_policy and sinkkv_strides are frozen");

namespace {

// ---- messages ----------------------------------------------------------------

constexpr std::size_t kMessageCapacity = 1024;
// Trivially constructible and destructible: no allocation, no destructor to
// register, valid in any thread from its first use.
thread_local char t_message[kMessageCapacity];
thread_local const char* t_operation = "sinkkv";

SINKKV_C_PRINTF(2, 3)
sinkkv_status fail(sinkkv_status code, const char* format, ...) {
  int used = std::snprintf(t_message, kMessageCapacity, "%s: ", t_operation);
  if (used < 0) used = 0;
  if (static_cast<std::size_t>(used) < kMessageCapacity) {
    va_list args;
    va_start(args, format);
    const int written =
        std::vsnprintf(t_message + used, kMessageCapacity - static_cast<std::size_t>(used), format, args);
    va_end(args);
    if (written >= 0 && static_cast<std::size_t>(used) + static_cast<std::size_t>(written) >= kMessageCapacity) {
      std::memcpy(t_message + kMessageCapacity - 4, "...", 4);  // truncated
    }
  }
  return code;
}

// A message from the C++ library ("sinkkv: <what>"), under this operation's name.
sinkkv_status fail_with(sinkkv_status code, const char* what) {
  constexpr const char kPrefix[] = "sinkkv: ";
  if (std::strncmp(what, kPrefix, sizeof(kPrefix) - 1) == 0) what += sizeof(kPrefix) - 1;
  return fail(code, "%s", what);
}

/// A sinkkv::Error that the wrapper knows the category of.
struct Classified {
  sinkkv_status code;
  sinkkv::Error error;
};

/// Runs `operation` so that a sinkkv::Error it throws reports `code`.
template <class Operation>
void classify(sinkkv_status code, Operation&& operation) {
  try {
    operation();
  } catch (const sinkkv::Error& error) {
    throw Classified{code, error};
  }
}

/// The body of every entry point that returns a status: clears the
/// message, runs `body` (which returns a status) and turns every exception
/// into a status and a message. Unclassified sinkkv::Error is a bad argument.
template <class Body>
sinkkv_status guarded(const char* operation, Body&& body) {
  t_operation = operation;
  t_message[0] = '\0';
  try {
    return body();
  } catch (const Classified& classified) {
    return fail_with(classified.code, classified.error.what());
  } catch (const sinkkv::Error& error) {
    return fail_with(SINKKV_ERROR_INVALID_ARGUMENT, error.what());
  } catch (const std::bad_alloc&) {
    return fail(SINKKV_ERROR_OUT_OF_MEMORY, "out of memory (an allocation failed)");
  } catch (const std::system_error& error) {
    return fail(SINKKV_ERROR_SYSTEM, "%s (system error %d)", error.what(), error.code().value());
  } catch (const std::exception& error) {
    return fail(SINKKV_ERROR_INTERNAL, "unexpected exception: %s", error.what());
  } catch (...) {
    return fail(SINKKV_ERROR_INTERNAL, "unexpected exception of unknown type");
  }
}

// ---- growable structs ----------------------------------------------------------

/// sizeof of the first version of each growable struct: the smallest
/// struct_size any header ever produced. Never change these; new fields
/// make sizeof larger.
constexpr std::size_t kConfigSizeV1 = sizeof(sinkkv_cache_config);
constexpr std::size_t kAttendOptionsSizeV1 = sizeof(sinkkv_attend_options);
/// No version will come near this; a larger struct_size is garbage.
constexpr std::size_t kMaxStructSize = 4096;

/// Checks the struct_size of a struct the caller passes in: at least the
/// first version, and any bytes past what this library knows all zero.
/// Returns SINKKV_OK or fails naming `name`.
sinkkv_status check_struct_size(const void* object, std::size_t struct_size, std::size_t oldest, std::size_t known,
                                const char* name) {
  if (struct_size < oldest || struct_size > kMaxStructSize) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT,
                "%s struct_size %zu is not a size this struct ever had (expected %zu to %zu; initialise it with "
                "sizeof)",
                name, struct_size, oldest, kMaxStructSize);
  }
  const unsigned char* bytes = static_cast<const unsigned char*>(object);
  for (std::size_t i = known; i < struct_size; ++i) {
    if (bytes[i] != 0) {
      return fail(SINKKV_ERROR_UNSUPPORTED,
                  "%s of %zu bytes sets byte %zu, a field of a newer sinkkv than this library (%s, %zu bytes)", name,
                  struct_size, i, SINKKV_C_VERSION_STRING, known);
    }
  }
  return SINKKV_OK;
}

// ---- thread pools ---------------------------------------------------------------

}  // namespace

/// sinkkv::ThreadPool behind a lock (so that caches on different threads
/// may share it; ThreadPool itself runs one task set at a time) and a
/// reference count (caches keep it alive after sinkkv_thread_pool_destroy).
struct sinkkv_thread_pool {
  explicit sinkkv_thread_pool(int num_workers) : pool(num_workers) {}

  int num_threads() const { return pool.num_threads(); }
  /// ParallelCpuKernel's pool interface (sinkkv::is_task_pool_v).
  template <class Task>
  void run(int count, Task& task) {
    std::lock_guard<std::mutex> lock(mutex);
    pool.run(count, task);
  }

  sinkkv::ThreadPool pool;
  std::mutex mutex;
  std::atomic<int> references{1};
};

namespace {

void release(sinkkv_thread_pool* pool) {
  if (pool != nullptr && pool->references.fetch_sub(1, std::memory_order_acq_rel) == 1) delete pool;
}

/// One counted reference to a pool (or none).
class PoolReference {
 public:
  PoolReference() = default;
  explicit PoolReference(sinkkv_thread_pool* pool) : pool_(pool) {
    if (pool_ != nullptr) pool_->references.fetch_add(1, std::memory_order_relaxed);
  }
  PoolReference(const PoolReference& other) : PoolReference(other.pool_) {}
  PoolReference& operator=(const PoolReference&) = delete;
  ~PoolReference() { release(pool_); }
  sinkkv_thread_pool* get() const { return pool_; }

 private:
  sinkkv_thread_pool* pool_ = nullptr;
};

// ---- options of one attend, resolved ------------------------------------------

struct AttendRequest {
  double scale = 0;
  const float* sink_logits = nullptr;
  int num_sink_logits = 0;
};

}  // namespace

// ---- the handle -------------------------------------------------------------------

/// What the C functions see of a cache: the configuration they validate
/// against and the typed operations, each called only with checked
/// arguments.
struct sinkkv_cache {
  sinkkv_cache(std::int32_t element_type, std::int32_t kernel, PoolReference pool)
      : element_type(element_type), kernel(kernel), pool(std::move(pool)) {}
  sinkkv_cache(const sinkkv_cache&) = default;
  sinkkv_cache& operator=(const sinkkv_cache&) = delete;
  virtual ~sinkkv_cache() = default;

  virtual std::unique_ptr<sinkkv_cache> clone() const = 0;
  virtual const sinkkv::CacheConfig& config() const = 0;
  virtual bool computes_in_double() const = 0;
  virtual std::uint64_t tokens_seen() const = 0;
  virtual std::size_t storage_bytes() const = 0;
  virtual int step_length() const = 0;
  virtual const sinkkv::CachePositions& positions(int layer, int kv_head) const = 0;
  virtual double log_sum_exp(int query, int head) const = 0;
  virtual void reset() = 0;
  virtual void begin_step(std::uint64_t stream_index, int num_tokens) = 0;
  virtual void append(int layer, const sinkkv::TokensView<float>& keys, const sinkkv::TokensView<float>& values) = 0;
  virtual void append(int layer, const sinkkv::TokensView<double>& keys, const sinkkv::TokensView<double>& values) = 0;
  virtual void attend(int layer, const sinkkv::TokensView<float>& queries, const sinkkv::MutableTokensView<float>& out,
                      const AttendRequest& request) = 0;
  virtual void attend(int layer, const sinkkv::TokensView<double>& queries,
                      const sinkkv::MutableTokensView<double>& out, const AttendRequest& request) = 0;

  const std::int32_t element_type;  // a sinkkv_element_type
  const std::int32_t kernel;        // a sinkkv_kernel
  const PoolReference pool;
  /// tokens_seen() after the last successful attend, or none since create
  /// or reset: the log-sum-exps the cache holds belong to that step only.
  std::optional<std::uint64_t> attended_through;
};

namespace {

/// The cache of one element type T, its kernels and the scratch the C
/// layer needs (double caches answering float calls).
template <class T>
class TypedCache final : public sinkkv_cache {
 public:
  using C = sinkkv::compute_t<T>;

  TypedCache(sinkkv::CacheConfig config, std::int32_t element_type, std::int32_t kernel, PoolReference pool)
      : sinkkv_cache(element_type, kernel, std::move(pool)), cache_(std::move(config)) {
    allocate_extras();
  }
  TypedCache(const TypedCache& other) : sinkkv_cache(other), cache_(other.cache_.clone()) { allocate_extras(); }

  std::unique_ptr<sinkkv_cache> clone() const override { return std::make_unique<TypedCache>(*this); }
  const sinkkv::CacheConfig& config() const override { return cache_.config(); }
  bool computes_in_double() const override { return std::is_same_v<C, double>; }
  std::uint64_t tokens_seen() const override { return cache_.tokens_seen(); }
  std::size_t storage_bytes() const override { return cache_.storage_bytes(); }
  int step_length() const override { return cache_.step_length(); }
  const sinkkv::CachePositions& positions(int layer, int kv_head) const override {
    return cache_.positions(layer, kv_head);
  }
  double log_sum_exp(int query, int head) const override {
    return static_cast<double>(cache_.log_sum_exp(query, head));
  }
  void reset() override { cache_.reset(); }
  void begin_step(std::uint64_t stream_index, int num_tokens) override { cache_.begin_step(stream_index, num_tokens); }
  void append(int layer, const sinkkv::TokensView<float>& keys, const sinkkv::TokensView<float>& values) override {
    cache_.append(layer, keys, values);
  }
  void append(int layer, const sinkkv::TokensView<double>& keys, const sinkkv::TokensView<double>& values) override {
    cache_.append(layer, keys, values);
  }

  void attend(int layer, const sinkkv::TokensView<float>& queries, const sinkkv::MutableTokensView<float>& out,
              const AttendRequest& request) override {
    if constexpr (std::is_same_v<C, float>) {
      run_kernel(layer, queries, out,
                 Options{static_cast<C>(request.scale), request.sink_logits, request.num_sink_logits});
    } else {
      // Computed into double scratch, then rounded into the caller's rows.
      const int n = queries.num_tokens, heads = out.num_heads, head_dim = out.head_dim;
      const sinkkv::MutableTokensView<C> scratch = sinkkv::tokens_output_view(out_scratch_.get(), n, heads, head_dim);
      run_kernel(layer, queries, scratch, widened(request));
      for (int i = 0; i < n; ++i) {
        for (int h = 0; h < heads; ++h) {
          const C* from = scratch.data + i * scratch.token_stride + h * scratch.head_stride;
          float* to = out.data + i * out.token_stride + h * out.head_stride;
          for (int d = 0; d < head_dim; ++d) to[d] = static_cast<float>(from[d]);
        }
      }
    }
  }

  void attend(int layer, const sinkkv::TokensView<double>& queries, const sinkkv::MutableTokensView<double>& out,
              const AttendRequest& request) override {
    if constexpr (std::is_same_v<C, double>) {
      run_kernel(layer, queries, out, widened(request));
    } else {
      throw std::logic_error("attend_f64 reached a float cache");  // the C layer checks first
    }
  }

 private:
  using Options = sinkkv::AttendOptions<C>;

  void allocate_extras() {
    const sinkkv::CacheConfig& c = cache_.config();
    if (kernel == SINKKV_KERNEL_CPU && pool.get() != nullptr) {
      parallel_.emplace(pool.get(), c.query_heads(), c.head_dim);
    }
    if constexpr (std::is_same_v<C, double>) {
      const std::size_t rows = static_cast<std::size_t>(c.max_chunk) * static_cast<std::size_t>(c.query_heads());
      out_scratch_.reset(new double[rows * static_cast<std::size_t>(c.head_dim)]);
      sink_scratch_.reset(new double[static_cast<std::size_t>(c.query_heads())]);
    }
  }

  /// The request in double; sink logits widened into scratch (the C layer
  /// checked their count).
  Options widened(const AttendRequest& request) const {
    Options options{static_cast<C>(request.scale), nullptr, 0};
    if (request.sink_logits != nullptr) {
      for (int h = 0; h < request.num_sink_logits; ++h) sink_scratch_[h] = static_cast<C>(request.sink_logits[h]);
      options.sink_logits = sink_scratch_.get();
      options.num_sink_logits = request.num_sink_logits;
    }
    return options;
  }

  template <class Src>
  void run_kernel(int layer, const sinkkv::TokensView<Src>& queries, const sinkkv::MutableTokensView<C>& out,
                  const Options& options) {
    if (kernel == SINKKV_KERNEL_REFERENCE) {
      cache_.attend(layer, queries, out, reference_, options);
    } else if (parallel_) {
      cache_.attend(layer, queries, out, *parallel_, options);
    } else {
      cache_.attend(layer, queries, out, cpu_, options);
    }
  }

  sinkkv::SinkKVCache<T> cache_;
  sinkkv::CpuKernel cpu_;
  sinkkv::ReferenceKernel reference_;
  std::optional<sinkkv::ParallelCpuKernel> parallel_;
  std::unique_ptr<double[]> out_scratch_;   // double caches: [max_chunk, num_query_heads, head_dim]
  std::unique_ptr<double[]> sink_scratch_;  // double caches: [num_query_heads]
};

// ---- argument checks -------------------------------------------------------------

const char* element_name(std::int32_t type) {
  switch (type) {
    case SINKKV_ELEMENT_FLOAT32:
      return "SINKKV_ELEMENT_FLOAT32";
    case SINKKV_ELEMENT_FLOAT64:
      return "SINKKV_ELEMENT_FLOAT64";
    case SINKKV_ELEMENT_FLOAT16:
      return "SINKKV_ELEMENT_FLOAT16";
    case SINKKV_ELEMENT_BFLOAT16:
      return "SINKKV_ELEMENT_BFLOAT16";
  }
  return "an unknown element type";
}

/// Resolves `strides` (NULL: packed) for a [tokens, heads, head_dim] tensor
/// of E and checks that they are non-negative and that every offset they
/// form fits in a pointer difference. Fails naming `what`.
template <class E>
sinkkv_status resolve_strides(const sinkkv_strides* strides, int tokens, int heads, int head_dim, const char* what,
                              std::ptrdiff_t* token_stride, std::ptrdiff_t* head_stride) {
  if (strides == nullptr) {
    *head_stride = head_dim;
    *token_stride = static_cast<std::ptrdiff_t>(heads) * head_dim;  // < 2^24: CacheConfig bounds heads x head_dim
    return SINKKV_OK;
  }
  const std::int64_t ts = strides->token_stride, hs = strides->head_stride;
  if (ts < 0 && tokens > 1) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "%s token stride %lld must be >= 0", what, static_cast<long long>(ts));
  }
  if (hs < 0) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "%s head stride %lld must be >= 0", what, static_cast<long long>(hs));
  }
  // The last element's offset, (tokens-1) ts + (heads-1) hs + head_dim - 1,
  // in elements, must stay below PTRDIFF_MAX / sizeof(E) (no step overflows).
  const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::ptrdiff_t>::max()) / sizeof(E);
  const std::uint64_t token_part = tokens > 1 ? static_cast<std::uint64_t>(ts) : 0;
  const std::uint64_t token_count = static_cast<std::uint64_t>(tokens > 1 ? tokens - 1 : 0);
  const std::uint64_t head_count = static_cast<std::uint64_t>(heads - 1);
  bool overflows = (token_part != 0 && token_count > limit / token_part) ||
                   (hs != 0 && head_count > limit / static_cast<std::uint64_t>(hs));
  if (!overflows) {
    const std::uint64_t extent = token_count * token_part + head_count * static_cast<std::uint64_t>(hs);
    overflows = extent > limit - static_cast<std::uint64_t>(head_dim);
  }
  if (overflows) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT,
                "%s strides (token %lld, head %lld) over %d tokens x %d heads x %d reach past the address range", what,
                static_cast<long long>(ts), static_cast<long long>(hs), tokens, heads, head_dim);
  }
  *token_stride = tokens > 1 ? static_cast<std::ptrdiff_t>(ts) : 0;
  *head_stride = static_cast<std::ptrdiff_t>(hs);
  return SINKKV_OK;
}

sinkkv_status check_cache(const sinkkv_cache* cache) {
  if (cache == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
  return SINKKV_OK;
}

sinkkv_status check_layer(const sinkkv_cache* cache, int layer) {
  const int layers = cache->config().num_layers;
  if (layer < 0 || layer >= layers) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "layer %d outside [0, num_layers %d)", layer, layers);
  }
  return SINKKV_OK;
}

sinkkv_status check_head(const sinkkv_cache* cache, int layer, int kv_head) {
  if (const sinkkv_status status = check_layer(cache, layer)) return status;
  const int heads = cache->config().num_kv_heads;
  if (kv_head < 0 || kv_head >= heads) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "KV head %d outside [0, num_kv_heads %d)", kv_head, heads);
  }
  return SINKKV_OK;
}

sinkkv_status check_token_count(const sinkkv_cache* cache, int num_tokens) {
  const int max_chunk = cache->config().max_chunk;
  if (num_tokens < 1 || num_tokens > max_chunk) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_tokens %d outside [1, max_chunk %d]", num_tokens, max_chunk);
  }
  return SINKKV_OK;
}

sinkkv_status check_double_cache(const sinkkv_cache* cache) {
  if (!cache->computes_in_double()) {
    return fail(SINKKV_ERROR_UNSUPPORTED,
                "the _f64 calls need a SINKKV_ELEMENT_FLOAT64 cache; this one is %s (use the float calls)",
                element_name(cache->element_type));
  }
  return SINKKV_OK;
}

template <class E>
sinkkv_status append_rows(sinkkv_cache* cache, int layer, int num_tokens, const E* keys,
                          const sinkkv_strides* key_strides, const E* values, const sinkkv_strides* value_strides) {
  if (const sinkkv_status status = check_layer(cache, layer)) return status;
  if (const sinkkv_status status = check_token_count(cache, num_tokens)) return status;
  const sinkkv::CacheConfig& config = cache->config();
  sinkkv::TokensView<E> key_view{keys, num_tokens, config.num_kv_heads, config.head_dim, 0, 0, 1};
  sinkkv::TokensView<E> value_view{values, num_tokens, config.num_kv_heads, config.head_dim, 0, 0, 1};
  if (const sinkkv_status status = resolve_strides<E>(key_strides, num_tokens, config.num_kv_heads, config.head_dim,
                                                      "keys", &key_view.token_stride, &key_view.head_stride)) {
    return status;
  }
  if (const sinkkv_status status = resolve_strides<E>(value_strides, num_tokens, config.num_kv_heads, config.head_dim,
                                                      "values", &value_view.token_stride, &value_view.head_stride)) {
    return status;
  }
  sinkkv::detail::check_input(key_view, num_tokens, config.num_kv_heads, config.head_dim, "keys");
  sinkkv::detail::check_input(value_view, num_tokens, config.num_kv_heads, config.head_dim, "values");
  classify(SINKKV_ERROR_PROTOCOL, [&] { cache->append(layer, key_view, value_view); });
  return SINKKV_OK;
}

template <class E>
sinkkv_status attend_rows(sinkkv_cache* cache, int layer, int num_tokens, const E* queries,
                          const sinkkv_strides* query_strides, E* out, const sinkkv_strides* out_strides,
                          const sinkkv_attend_options* options) {
  if (const sinkkv_status status = check_layer(cache, layer)) return status;
  if (const sinkkv_status status = check_token_count(cache, num_tokens)) return status;
  const sinkkv::CacheConfig& config = cache->config();
  const int heads = config.query_heads(), head_dim = config.head_dim;
  sinkkv::TokensView<E> query_view{queries, num_tokens, heads, head_dim, 0, 0, 1};
  sinkkv::MutableTokensView<E> out_view{out, num_tokens, heads, head_dim, 0, 0};
  if (const sinkkv_status status = resolve_strides<E>(query_strides, num_tokens, heads, head_dim, "queries",
                                                      &query_view.token_stride, &query_view.head_stride)) {
    return status;
  }
  if (const sinkkv_status status = resolve_strides<E>(out_strides, num_tokens, heads, head_dim, "out",
                                                      &out_view.token_stride, &out_view.head_stride)) {
    return status;
  }
  sinkkv::detail::check_input(query_view, num_tokens, heads, head_dim, "queries");
  sinkkv::detail::check_output(out_view, num_tokens, heads, head_dim, layer);

  AttendRequest request;
  if (options != nullptr) {
    if (const sinkkv_status status = check_struct_size(options, options->struct_size, kAttendOptionsSizeV1,
                                                       sizeof(sinkkv_attend_options), "attend options")) {
      return status;
    }
    request.scale = options->scale;
    request.sink_logits = options->sink_logits;
    request.num_sink_logits = options->num_sink_logits;
  }
  // The checks the cache makes, in its compute type (a double scale beyond
  // float's range is named before it rounds to infinity).
  if (!cache->computes_in_double() && std::isfinite(request.scale) &&
      !std::isfinite(static_cast<float>(request.scale))) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT,
                "attend on layer %d: scale %g overflows float (this cache computes in float)", layer, request.scale);
  }
  sinkkv::detail::check_options(sinkkv::AttendOptions<double>{request.scale, nullptr, 0}, heads, layer);
  sinkkv::detail::check_options(sinkkv::AttendOptions<float>{0, request.sink_logits, request.num_sink_logits}, heads,
                                layer);
  classify(SINKKV_ERROR_PROTOCOL, [&] { cache->attend(layer, query_view, out_view, request); });
  cache->attended_through = cache->tokens_seen();
  return SINKKV_OK;
}

// ---- configuration ------------------------------------------------------------

/// Copies `count` entries of a caller's array (NULL for none) after
/// checking the pair is consistent and the count plausible.
template <class E>
sinkkv_status copy_array(const E* data, std::int32_t count, std::int64_t max_count, const char* name,
                         std::vector<E>* out) {
  if (data == nullptr) {
    if (count != 0) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_%s %d given without %s", name, count, name);
    return SINKKV_OK;
  }
  if (count < 0 || count > max_count) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_%s %d outside [0, %lld]", name, count,
                static_cast<long long>(max_count));
  }
  out->assign(data, data + count);
  return SINKKV_OK;
}

/// The C++ configuration of a C one, fully validated (CacheConfig::validate
/// and its storage size); fails naming the first bad value.
sinkkv_status translate(const sinkkv_cache_config& in, sinkkv::CacheConfig* out) {
  sinkkv::CacheConfig& config = *out;
  config.num_layers = in.num_layers;
  config.num_query_heads = in.num_query_heads;
  config.num_kv_heads = in.num_kv_heads;
  config.head_dim = in.head_dim;
  config.num_sinks = in.num_sinks;
  config.window = in.window;
  config.max_chunk = in.max_chunk;
  config.encoding = sinkkv::PositionEncoding::none();
  // Shape and the uniform policy first: the arrays' expected sizes follow from them.
  config.validate();

  if (in.layer_policies != nullptr && in.head_policies != nullptr) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "layer_policies and head_policies are both given; give one");
  }
  // One policy per layer or per (layer, KV head), layer-major.
  const std::int64_t num_heads = static_cast<std::int64_t>(config.num_layers) * config.num_kv_heads;
  const bool per_layer = in.layer_policies != nullptr;
  const sinkkv_retention_policy* policies = per_layer ? in.layer_policies : in.head_policies;
  const std::int32_t count = per_layer ? in.num_layer_policies : in.num_head_policies;
  const std::int64_t expected = per_layer ? config.num_layers : num_heads;
  const char* name = per_layer ? "layer_policies" : "head_policies";
  if (in.layer_policies == nullptr && in.num_layer_policies != 0) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_layer_policies %d given without layer_policies",
                in.num_layer_policies);
  }
  if (in.head_policies == nullptr && in.num_head_policies != 0) {
    return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_head_policies %d given without head_policies",
                in.num_head_policies);
  }
  if (policies != nullptr) {
    if (count != expected) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_%s %d, expected %s = %lld", name, count,
                  per_layer ? "num_layers" : "num_layers x num_kv_heads", static_cast<long long>(expected));
    }
    for (std::int64_t i = 0; i < expected; ++i) {
      const sinkkv::RetentionPolicy policy{policies[i].num_sinks, policies[i].window};
      if (per_layer) {
        config.set_layer_policy(static_cast<int>(i), policy);
      } else {
        config.set_head_policy(static_cast<int>(i / config.num_kv_heads), static_cast<int>(i % config.num_kv_heads),
                               policy);
      }
    }
  }

  switch (in.encoding) {
    case SINKKV_ENCODING_NONE:
      break;
    case SINKKV_ENCODING_ROPE: {
      sinkkv::RopeConfig rope;
      rope.theta = in.rope_theta;
      rope.rotary_dim = in.rope_rotary_dim;
      switch (in.rope_layout) {
        case SINKKV_ROPE_ADJACENT_PAIRS:
          rope.layout = sinkkv::RopeLayout::kAdjacentPairs;
          break;
        case SINKKV_ROPE_SPLIT_HALVES:
          rope.layout = sinkkv::RopeLayout::kSplitHalves;
          break;
        default:
          return fail(SINKKV_ERROR_INVALID_ARGUMENT, "rope_layout %d is not a sinkkv_rope_layout", in.rope_layout);
      }
      sinkkv::RopeScaling& scaling = rope.scaling;
      using Kind = sinkkv::RopeScaling::Kind;
      switch (in.rope_scaling) {
        case SINKKV_ROPE_SCALING_NONE:
          scaling.kind = Kind::kNone;
          break;
        case SINKKV_ROPE_SCALING_LINEAR:
          scaling.kind = Kind::kLinear;
          break;
        case SINKKV_ROPE_SCALING_NTK_AWARE:
          scaling.kind = Kind::kNtkAware;
          break;
        case SINKKV_ROPE_SCALING_LLAMA3:
          scaling.kind = Kind::kLlama3;
          break;
        case SINKKV_ROPE_SCALING_YARN:
          scaling.kind = Kind::kYarn;
          break;
        case SINKKV_ROPE_SCALING_EXPLICIT:
          scaling.kind = Kind::kExplicit;
          if (const sinkkv_status status =
                  copy_array(in.rope_inv_frequencies, in.num_rope_inv_frequencies, config.head_dim,
                             "rope_inv_frequencies", &scaling.explicit_inv_frequencies)) {
            return status;
          }
          break;
        default:
          return fail(SINKKV_ERROR_INVALID_ARGUMENT, "rope_scaling %d is not a sinkkv_rope_scaling", in.rope_scaling);
      }
      scaling.factor = in.rope_factor;
      scaling.original_max_positions = in.rope_original_max_positions;
      scaling.low_freq_factor = in.rope_low_freq_factor;
      scaling.high_freq_factor = in.rope_high_freq_factor;
      scaling.beta_fast = in.rope_beta_fast;
      scaling.beta_slow = in.rope_beta_slow;
      scaling.truncate = in.rope_truncate != 0;
      scaling.mscale = in.rope_mscale;
      scaling.mscale_all_dim = in.rope_mscale_all_dim;
      if (in.rope_attention_factor != 0) scaling.attention_factor = in.rope_attention_factor;
      config.encoding = sinkkv::PositionEncoding::rotary(std::move(rope));
      break;
    }
    case SINKKV_ENCODING_ALIBI: {
      sinkkv::AlibiConfig alibi;
      if (const sinkkv_status status =
              copy_array(in.alibi_slopes, in.num_alibi_slopes, config.query_heads(), "alibi_slopes", &alibi.slopes)) {
        return status;
      }
      config.encoding = sinkkv::PositionEncoding::alibi_bias(std::move(alibi));
      break;
    }
    default:
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "encoding %d is not a sinkkv_encoding", in.encoding);
  }
  switch (in.input_rotation) {
    case SINKKV_INPUT_UNROTATED:
      config.input_rotation = sinkkv::InputRotation::kUnrotated;
      break;
    case SINKKV_INPUT_STREAM_ROTATED:
      config.input_rotation = sinkkv::InputRotation::kStreamRotated;
      break;
    default:
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "input_rotation %d is not a sinkkv_input_rotation", in.input_rotation);
  }
  config.validate();
  (void)config.storage_elements();  // throws when the storage cannot be counted
  return SINKKV_OK;
}

/// sizeof of the storage element.
std::size_t element_bytes(std::int32_t type) {
  switch (type) {
    case SINKKV_ELEMENT_FLOAT32:
      return sizeof(float);
    case SINKKV_ELEMENT_FLOAT64:
      return sizeof(double);
    case SINKKV_ELEMENT_FLOAT16:
    case SINKKV_ELEMENT_BFLOAT16:
      return 2;
  }
  return 0;
}

template <class T>
std::unique_ptr<sinkkv_cache> make_cache(sinkkv::CacheConfig config, const sinkkv_cache_config& in) {
  return std::make_unique<TypedCache<T>>(std::move(config), in.element_type, in.kernel, PoolReference(in.thread_pool));
}

}  // namespace

// ---- the C entry points -----------------------------------------------------------

extern "C" {

const char* sinkkv_last_error_message(void) { return t_message; }

const char* sinkkv_status_string(int status) {
  switch (status) {
    case SINKKV_OK:
      return "SINKKV_OK";
    case SINKKV_ERROR_INVALID_ARGUMENT:
      return "SINKKV_ERROR_INVALID_ARGUMENT";
    case SINKKV_ERROR_PROTOCOL:
      return "SINKKV_ERROR_PROTOCOL";
    case SINKKV_ERROR_OUT_OF_MEMORY:
      return "SINKKV_ERROR_OUT_OF_MEMORY";
    case SINKKV_ERROR_UNSUPPORTED:
      return "SINKKV_ERROR_UNSUPPORTED";
    case SINKKV_ERROR_SYSTEM:
      return "SINKKV_ERROR_SYSTEM";
    case SINKKV_ERROR_INTERNAL:
      return "SINKKV_ERROR_INTERNAL";
  }
  return "SINKKV_UNKNOWN_STATUS";
}

int sinkkv_version(void) { return SINKKV_VERSION; }

const char* sinkkv_version_string(void) { return SINKKV_C_VERSION_STRING; }

sinkkv_status sinkkv_cache_config_init(sinkkv_cache_config* config, size_t struct_size) {
  return guarded("sinkkv_cache_config_init", [&] {
    if (config == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "config is NULL");
    if (struct_size < kConfigSizeV1 || struct_size > kMaxStructSize) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT,
                  "struct_size %zu is not a size sinkkv_cache_config ever had (expected %zu to %zu; pass "
                  "sizeof(sinkkv_cache_config))",
                  struct_size, kConfigSizeV1, kMaxStructSize);
    }
    // Fields of a newer header that this library does not know are 0: "as before".
    std::memset(static_cast<void*>(config), 0, struct_size);
    const sinkkv::CacheConfig defaults;
    const sinkkv::RopeScaling scaling;
    config->struct_size = struct_size;
    config->element_type = SINKKV_ELEMENT_FLOAT32;
    config->num_layers = defaults.num_layers;
    config->num_query_heads = defaults.num_query_heads;
    config->num_kv_heads = defaults.num_kv_heads;
    config->head_dim = defaults.head_dim;
    config->num_sinks = defaults.num_sinks;
    config->window = defaults.window;
    config->max_chunk = defaults.max_chunk;
    config->encoding = SINKKV_ENCODING_ROPE;
    config->input_rotation = SINKKV_INPUT_UNROTATED;
    config->rope_theta = defaults.encoding.rope.theta;
    config->rope_rotary_dim = 0;
    config->rope_layout = SINKKV_ROPE_ADJACENT_PAIRS;
    config->rope_scaling = SINKKV_ROPE_SCALING_NONE;
    config->rope_factor = scaling.factor;
    config->rope_original_max_positions = scaling.original_max_positions;
    config->rope_low_freq_factor = scaling.low_freq_factor;
    config->rope_high_freq_factor = scaling.high_freq_factor;
    config->rope_beta_fast = scaling.beta_fast;
    config->rope_beta_slow = scaling.beta_slow;
    config->rope_truncate = scaling.truncate ? 1 : 0;
    config->rope_mscale = scaling.mscale;
    config->rope_mscale_all_dim = scaling.mscale_all_dim;
    config->rope_attention_factor = 0;
    config->kernel = SINKKV_KERNEL_CPU;
    config->thread_pool = nullptr;
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_thread_pool_create(int num_threads, sinkkv_thread_pool** pool) {
  return guarded("sinkkv_thread_pool_create", [&] {
    if (pool == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "pool is NULL");
    if (num_threads < 1 || num_threads > 1024) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "num_threads %d outside [1, 1024]", num_threads);
    }
    *pool = new sinkkv_thread_pool(num_threads - 1);
    return SINKKV_OK;
  });
}

void sinkkv_thread_pool_destroy(sinkkv_thread_pool* pool) { release(pool); }

sinkkv_status sinkkv_cache_create(const sinkkv_cache_config* config, sinkkv_cache** cache) {
  return guarded("sinkkv_cache_create", [&] {
    if (config == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "config is NULL");
    if (cache == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "cache is NULL");
    if (const sinkkv_status status =
            check_struct_size(config, config->struct_size, kConfigSizeV1, sizeof(sinkkv_cache_config), "config")) {
      return status;
    }
    const sinkkv_cache_config& in = *config;
    const std::size_t element_size = element_bytes(in.element_type);
    if (element_size == 0) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "element_type %d is not a sinkkv_element_type", in.element_type);
    }
    if (in.kernel != SINKKV_KERNEL_CPU && in.kernel != SINKKV_KERNEL_REFERENCE) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "kernel %d is not a sinkkv_kernel", in.kernel);
    }
    if (in.kernel == SINKKV_KERNEL_REFERENCE && in.thread_pool != nullptr) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT,
                  "thread_pool is given with SINKKV_KERNEL_REFERENCE; only SINKKV_KERNEL_CPU uses threads");
    }
    sinkkv::CacheConfig translated;
    if (const sinkkv_status status = translate(in, &translated)) return status;
    const std::uint64_t elements = translated.storage_elements();
    if (elements > std::numeric_limits<std::size_t>::max() / element_size) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "cache storage of %llu elements overflows size_t",
                  static_cast<unsigned long long>(elements));
    }
    // Everything is valid now: what fails from here on is allocation.
    std::unique_ptr<sinkkv_cache> made;
    try {
      switch (in.element_type) {
        case SINKKV_ELEMENT_FLOAT32:
          made = make_cache<float>(std::move(translated), in);
          break;
        case SINKKV_ELEMENT_FLOAT64:
          made = make_cache<double>(std::move(translated), in);
          break;
        case SINKKV_ELEMENT_FLOAT16:
          made = make_cache<Eigen::half>(std::move(translated), in);
          break;
        case SINKKV_ELEMENT_BFLOAT16:
          made = make_cache<Eigen::bfloat16>(std::move(translated), in);
          break;
      }
    } catch (const sinkkv::Error&) {
      // The configuration passed the same checks above; the cache reports allocation failure this way.
      return fail(SINKKV_ERROR_OUT_OF_MEMORY, "cannot allocate %llu bytes of cache storage",
                  static_cast<unsigned long long>(elements * element_size));
    } catch (const std::bad_alloc&) {
      return fail(SINKKV_ERROR_OUT_OF_MEMORY, "cannot allocate a cache with %llu bytes of storage",
                  static_cast<unsigned long long>(elements * element_size));
    }
    *cache = made.release();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_clone(const sinkkv_cache* source, sinkkv_cache** copy) {
  return guarded("sinkkv_cache_clone", [&] {
    if (const sinkkv_status status = check_cache(source)) return status;
    if (copy == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "copy is NULL");
    std::unique_ptr<sinkkv_cache> made;
    try {
      made = source->clone();
    } catch (const std::bad_alloc&) {
      return fail(SINKKV_ERROR_OUT_OF_MEMORY, "cannot allocate a copy of a cache with %llu bytes of storage",
                  static_cast<unsigned long long>(source->storage_bytes()));
    }
    *copy = made.release();
    return SINKKV_OK;
  });
}

void sinkkv_cache_destroy(sinkkv_cache* cache) { delete cache; }

sinkkv_status sinkkv_cache_reset(sinkkv_cache* cache) {
  return guarded("sinkkv_cache_reset", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    cache->reset();
    cache->attended_through.reset();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_begin_step(sinkkv_cache* cache, uint64_t stream_index, int num_tokens) {
  return guarded("sinkkv_cache_begin_step", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (const sinkkv_status status = check_token_count(cache, num_tokens)) return status;
    classify(SINKKV_ERROR_PROTOCOL, [&] { cache->begin_step(stream_index, num_tokens); });
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_append(sinkkv_cache* cache, int layer, int num_tokens, const float* keys,
                                  const sinkkv_strides* key_strides, const float* values,
                                  const sinkkv_strides* value_strides) {
  return guarded("sinkkv_cache_append", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    return append_rows(cache, layer, num_tokens, keys, key_strides, values, value_strides);
  });
}

sinkkv_status sinkkv_cache_append_f64(sinkkv_cache* cache, int layer, int num_tokens, const double* keys,
                                      const sinkkv_strides* key_strides, const double* values,
                                      const sinkkv_strides* value_strides) {
  return guarded("sinkkv_cache_append_f64", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (const sinkkv_status status = check_double_cache(cache)) return status;
    return append_rows(cache, layer, num_tokens, keys, key_strides, values, value_strides);
  });
}

sinkkv_status sinkkv_cache_attend(sinkkv_cache* cache, int layer, int num_tokens, const float* queries,
                                  const sinkkv_strides* query_strides, float* out, const sinkkv_strides* out_strides,
                                  const sinkkv_attend_options* options) {
  return guarded("sinkkv_cache_attend", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    return attend_rows(cache, layer, num_tokens, queries, query_strides, out, out_strides, options);
  });
}

sinkkv_status sinkkv_cache_attend_f64(sinkkv_cache* cache, int layer, int num_tokens, const double* queries,
                                      const sinkkv_strides* query_strides, double* out,
                                      const sinkkv_strides* out_strides, const sinkkv_attend_options* options) {
  return guarded("sinkkv_cache_attend_f64", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (const sinkkv_status status = check_double_cache(cache)) return status;
    return attend_rows(cache, layer, num_tokens, queries, query_strides, out, out_strides, options);
  });
}

sinkkv_status sinkkv_cache_tokens_seen(const sinkkv_cache* cache, uint64_t* tokens_seen) {
  return guarded("sinkkv_cache_tokens_seen", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (tokens_seen == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "tokens_seen is NULL");
    *tokens_seen = cache->tokens_seen();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_storage_bytes(const sinkkv_cache* cache, uint64_t* bytes) {
  return guarded("sinkkv_cache_storage_bytes", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (bytes == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "bytes is NULL");
    *bytes = cache->storage_bytes();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_size(const sinkkv_cache* cache, int layer, int kv_head, int* size) {
  return guarded("sinkkv_cache_size", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (size == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "size is NULL");
    if (const sinkkv_status status = check_head(cache, layer, kv_head)) return status;
    *size = cache->positions(layer, kv_head).size();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_capacity(const sinkkv_cache* cache, int layer, int kv_head, int* capacity) {
  return guarded("sinkkv_cache_capacity", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (capacity == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "capacity is NULL");
    if (const sinkkv_status status = check_head(cache, layer, kv_head)) return status;
    *capacity = cache->positions(layer, kv_head).capacity();
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_stream_index(const sinkkv_cache* cache, int layer, int kv_head, int cache_position,
                                        uint64_t* stream_index) {
  return guarded("sinkkv_cache_stream_index", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (stream_index == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "stream_index is NULL");
    if (const sinkkv_status status = check_head(cache, layer, kv_head)) return status;
    const sinkkv::CachePositions& positions = cache->positions(layer, kv_head);
    if (cache_position < 0 || cache_position >= positions.size()) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "cache_position %d outside [0, size %d) of layer %d KV head %d",
                  cache_position, positions.size(), layer, kv_head);
    }
    *stream_index = positions.stream_index(cache_position);
    return SINKKV_OK;
  });
}

sinkkv_status sinkkv_cache_log_sum_exp(const sinkkv_cache* cache, int query, int head, double* log_sum_exp) {
  return guarded("sinkkv_cache_log_sum_exp", [&] {
    if (const sinkkv_status status = check_cache(cache)) return status;
    if (log_sum_exp == nullptr) return fail(SINKKV_ERROR_INVALID_ARGUMENT, "log_sum_exp is NULL");
    const int tokens = cache->step_length(), heads = cache->config().query_heads();
    if (!cache->attended_through) return fail(SINKKV_ERROR_PROTOCOL, "nothing was attended yet");
    // The cache keeps the last attend's values only until the next step
    // begins (sinkkv::SinkKVCache::log_sum_exp does not check this itself).
    if (*cache->attended_through != cache->tokens_seen()) {
      return fail(SINKKV_ERROR_PROTOCOL, "nothing was attended since the step at stream index %llu began",
                  static_cast<unsigned long long>(cache->tokens_seen() - static_cast<std::uint64_t>(tokens)));
    }
    if (query < 0 || query >= tokens) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "query %d outside [0, %d) (the step's tokens)", query, tokens);
    }
    if (head < 0 || head >= heads) {
      return fail(SINKKV_ERROR_INVALID_ARGUMENT, "head %d outside [0, num_query_heads %d)", head, heads);
    }
    classify(SINKKV_ERROR_PROTOCOL, [&] { *log_sum_exp = cache->log_sum_exp(query, head); });
    return SINKKV_OK;
  });
}

}  // extern "C"

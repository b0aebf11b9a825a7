// sinkkv: the attention-sink KV cache of one sequence.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "attention.hpp"
#include "config.hpp"
#include "detail/abi_namespace.hpp"
#include "detail/element.hpp"
#include "detail/sequence.hpp"
#include "detail/storage.hpp"
#include "error.hpp"
#include "positions.hpp"
#include "views.hpp"

namespace sinkkv {

namespace detail {
inline namespace SINKKV_ABI_NAMESPACE {
struct SnapshotAccess;  // snapshot.hpp: saves and rebuilds a cache's state
}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace detail

// Tagged by the unit's instruction-set flags: see detail/abi_namespace.hpp.
inline namespace SINKKV_ABI_NAMESPACE {

/// KV cache of one sequence, all layers: the first num_sinks tokens of the
/// stream (the attention sinks, never evicted) plus a rolling window of the
/// most recent `window` tokens, with positions re-assigned inside the cache
/// (sinks 0..S-1, window after them, the newest token last). Layers, or KV
/// heads, may each have their own sinks and window (CacheConfig).
///
/// Storage T is float, double, Eigen::half or Eigen::bfloat16; arithmetic is
/// in compute_t<T> (float for the half types). All memory is allocated by the
/// constructor; append(), attend() and begin_step() never allocate and never
/// move cached rows (the window is a ring buffer).
///
/// Protocol, per step (one token, or a chunk of up to max_chunk tokens):
/// every layer appends the step's K/V exactly once, in any order, all with
/// the same token count; a layer may attend once it has appended, with one
/// query per appended token. The first append after every layer holds the
/// previous step starts the next step. Breaking this (a layer twice, a layer
/// skipped, attending before appending, a count that differs) throws before
/// anything changes. An engine that tracks positions itself can also begin
/// each step explicitly with begin_step(stream_index, count): every step is
/// then verified, and a layer that skipped its append (even the first one to
/// run) is reported at once, which the implicit protocol cannot always see.
///
/// Positions stay exact and O(1) per token: keys are rotated once, at
/// append, by their stream index. Within the window, cache-relative
/// distances equal stream distances, so the query rotated by its stream
/// index scores the window exactly; only the sinks need the query rotated
/// by its cache position. The kernel merges both through one online softmax.
/// A chunk's query i sees exactly what it would see had the tokens come one
/// at a time (docs/design.md).
///
/// Move-only: copying multi-megabyte state must be explicit (clone()). A
/// moved-from cache is empty: observers report no tokens, and append,
/// attend and the configuration observers throw sinkkv::Error until a cache
/// is assigned to it. One thread at a time per cache (attend() writes
/// per-cache scratch); separate caches are independent.
template <class T>
class SinkKVCache {
  static_assert(detail::ElementTraits<T>::kSupported,
                "SinkKVCache<T>: T must be float, double, Eigen::half or Eigen::bfloat16");

 public:
  using element_type = T;
  using compute_type = compute_t<T>;
  using Options = AttendOptions<compute_type>;

  /// Allocates every layer's storage: sum over KV heads of 2 x (num_sinks +
  /// window + max_chunk - 1) x head_dim elements. Throws sinkkv::Error for a
  /// bad configuration, or storage that cannot be allocated, before
  /// allocating anything else.
  explicit SinkKVCache(CacheConfig config) {
    config.validate();
    const std::uint64_t elements = config.storage_elements();
    SINKKV_CHECK(elements <= std::numeric_limits<std::size_t>::max() / sizeof(T),
                 "cache storage of " << elements << " elements overflows size_t");
    auto model = std::make_shared<const detail::CacheModel<compute_type>>(std::move(config));
    try {
      state_ = std::make_unique<State>(std::move(model));
    } catch (const std::bad_alloc&) {
      SINKKV_CHECK(false, "cannot allocate " << elements * sizeof(T) << " bytes of cache storage");
    }
  }

  SinkKVCache(SinkKVCache&&) noexcept = default;
  SinkKVCache& operator=(SinkKVCache&&) noexcept = default;
  SinkKVCache& operator=(const SinkKVCache&) = delete;
  ~SinkKVCache() = default;

  /// A deep copy (allocates as much as the constructor), e.g. to fork a
  /// conversation. The copy of a moved-from cache is empty too.
  SinkKVCache clone() const { return SinkKVCache(*this); }

  /// Forgets every token; keeps the memory. O(num_layers + groups).
  void reset() noexcept {
    if (state_) state_->sequence.clear();
  }

  // ---- observers ---------------------------------------------------------

  const CacheConfig& config() const { return live("config").model->config; }
  /// Tokens of the stream so far, the step in progress included once it has
  /// begun (its first append, or begin_step): an engine that rotates its own
  /// rows should take a step's stream indices from its own count, or read
  /// this before the step's first append.
  std::uint64_t tokens_seen() const { return state_ ? state_->sequence.tokens_seen() : 0; }
  int num_layers() const { return state_ ? config().num_layers : 0; }
  /// True when every layer holds the current step (or no step was begun).
  bool token_complete() const { return !state_ || state_->sequence.protocol().step_complete(); }
  /// Tokens of the current step (0 before the first).
  int step_length() const { return state_ ? state_->sequence.protocol().step_length() : 0; }
  /// Bytes of K/V storage (0 for a moved-from cache).
  std::size_t storage_bytes() const { return state_ ? state_->store.bytes() : 0; }

  /// Position bookkeeping of one KV head of one layer.
  const CachePositions& positions(int layer, int kv_head) const {
    const State& state = live("positions");
    check_head(layer, kv_head, "positions");
    return state.sequence.positions(state.model->groups.group_of(layer, kv_head));
  }
  /// Position bookkeeping of a uniform cache (every head keeps the same
  /// tokens); throws for per-layer/per-head policies (use positions(layer,
  /// kv_head)).
  const CachePositions& positions() const {
    const State& state = live("positions");
    SINKKV_CHECK(state.model->groups.num_groups() == 1,
                 "positions(): layers or heads keep different tokens; ask positions(layer, kv_head)");
    return state.sequence.positions(0);
  }
  /// The uniform cache's size, capacity, sinks and window (see positions()).
  int size() const { return state_ ? positions().size() : 0; }
  int capacity() const { return positions().capacity(); }
  int num_sinks() const { return positions().num_sinks(); }
  int window() const { return positions().window(); }
  /// Stream index of the token at `cache_position` (0 <= it < size()).
  std::uint64_t stream_index(int cache_position) const { return positions().stream_index(cache_position); }
  /// Cache position of a stream token; nullopt if evicted or not yet seen.
  std::optional<int> cache_position(std::uint64_t stream_index) const {
    return positions().cache_position(stream_index);
  }

  /// Log-sum-exp per query head of the last single-token attend (after sink
  /// logits), [num_query_heads], for a layer whose KV heads share one
  /// policy. In general use log_sum_exp(query, head).
  const compute_type* log_sum_exp() const { return live("log_sum_exp").sequence.log_sum_exp(); }
  /// Log-sum-exp of query `query` (0 <= query < step_length()), query head
  /// `head`, of the last attend.
  compute_type log_sum_exp(int query, int head) const {
    const State& state = live("log_sum_exp");
    const int layer = state.sequence.last_attended_layer;
    SINKKV_CHECK(layer >= 0, "log_sum_exp: nothing was attended yet");
    const int n = state.sequence.protocol().step_length();
    SINKKV_CHECK(query >= 0 && query < n && head >= 0 && head < config().query_heads(),
                 "log_sum_exp(" << query << ", " << head << ") outside [0, " << n << ") x [0, "
                                << config().query_heads() << ")");
    const int group = config().group_size();
    const detail::PolicyGroups::HeadRun* run = state.model->groups.runs(layer);
    while (head >= (run->first_kv_head + run->num_kv_heads) * group) ++run;
    const int first_head = run->first_kv_head * group;
    const int heads = run->num_kv_heads * group;
    return state.sequence.log_sum_exp()[static_cast<std::ptrdiff_t>(n) * first_head + query * heads +
                                        (head - first_head)];
  }

  /// Stored key row (rotated by the token's stream index under RoPE) of the
  /// token at `cache_position` of one KV head; for inspection and tests.
  /// [head_dim]
  const T* key_row(int layer, int kv_head, int cache_position) const {
    return stored_row(layer, kv_head, cache_position, 0, "key_row");
  }
  const T* value_row(int layer, int kv_head, int cache_position) const {
    return stored_row(layer, kv_head, cache_position, 1, "value_row");
  }

  // ---- writing -----------------------------------------------------------

  /// Begins the next step explicitly: `num_tokens` tokens starting at stream
  /// index `stream_index`, which must be tokens_seen(), after every layer
  /// appended the previous step. From then on every step of this sequence
  /// must be begun so (until reset()). Evicts as the step needs. O(1) per
  /// token; no allocation. Throws on misuse, before changing anything.
  void begin_step(std::uint64_t stream_index, int num_tokens = 1) {
    State& state = live("begin_step");
    state.sequence.protocol().check_begin_step(stream_index, num_tokens, config().max_chunk);
    state.sequence.advance(num_tokens);
    state.sequence.protocol().record_begin_step(num_tokens);
  }

  /// Stores one token's keys and values for `layer`: both [num_kv_heads,
  /// head_dim] in any strides. Starts a new step if every layer holds the
  /// previous one (evicting the oldest window token when full).
  /// O(num_kv_heads * head_dim); no allocation. Throws on misuse, before
  /// changing anything.
  template <class Src>
  void append(int layer, const HeadsView<Src>& keys, const HeadsView<Src>& values) {
    append(layer, single(keys), single(values));
  }

  /// Stores a chunk of tokens' keys and values for `layer`: both
  /// [num_tokens, num_kv_heads, head_dim] in any strides (tokens_view), at
  /// most max_chunk tokens. Every layer appends the same tokens.
  template <class Src>
  void append(int layer, const TokensView<Src>& keys, const TokensView<Src>& values) {
    State& state = live("append");
    detail::append_rows(state.sequence, state.store, layer, keys, values, [](int) {});
  }

  /// Eigen input: [num_kv_heads, head_dim] matrices, maps or blocks (any
  /// storage order). Expressions must be evaluated first, so that this
  /// never allocates.
  template <class KeysDerived, class ValuesDerived>
  void append(int layer, const Eigen::DenseBase<KeysDerived>& keys, const Eigen::DenseBase<ValuesDerived>& values) {
    append(layer, view_of(keys.derived(), "keys"), view_of(values.derived(), "values"));
  }

  // ---- attention ---------------------------------------------------------

  /// The kernel arguments for a one-token step's `query` ([num_query_heads,
  /// head_dim]) on `layer`: the query rotated into the sink and window
  /// frames, and the layer's cached tokens as at most three segments (sinks,
  /// and the window ring as one or two runs). The result points into this
  /// cache and is valid until its next append/prepare/attend. For layers
  /// whose KV heads share one policy. No allocation.
  template <class Src>
  AttentionArgs<T> prepare(int layer, const HeadsView<Src>& query, compute_type scale = 0) {
    State& state = live("prepare");
    const CacheConfig& c = config();
    SINKKV_CHECK(layer >= 0 && layer < c.num_layers,
                 "attend: layer " << layer << " outside [0, num_layers " << c.num_layers << ")");
    state.sequence.protocol().check_attend(layer, 1);
    detail::check_input(single(query), 1, c.query_heads(), c.head_dim, "query");
    detail::check_options(Options{scale, nullptr, 0}, c.query_heads(), layer);
    SINKKV_CHECK(state.model->groups.num_runs(layer) == 1,
                 "prepare on layer " << layer << ": its KV heads keep different tokens; use attend()");
    const detail::PolicyGroups::HeadRun& run = state.model->groups.runs(layer)[0];
    compute_type* stream_rows = state.sequence.stream_rows();
    const compute_type* sink_rows =
        detail::load_queries(state.sequence, run, single(query), stream_rows, state.sequence.sink_rows());
    const compute_type resolved = scale != 0 ? scale : compute_type(1) / std::sqrt(static_cast<compute_type>(c.head_dim));
    return detail::single_query_args(state.sequence, state.store, run, stream_rows, sink_rows, resolved,
                                     state.sequence.segments());
  }

  /// Attention of a one-token step's `query` ([num_query_heads, head_dim])
  /// over every token `layer` keeps, written to `out` ([num_query_heads,
  /// head_dim], rows contiguous). `kernel` is any attention kernel (see
  /// attention.hpp). No allocation beyond what the kernel does (ours: none).
  template <class Kernel, class Src>
  void attend(int layer, const HeadsView<Src>& query, const MutableHeadsView<compute_type>& out, Kernel&& kernel,
              const Options& options = {}) {
    attend(layer, single(query), MutableTokensView<compute_type>{out.data, 1, out.num_heads, out.head_dim, 0, out.head_stride},
           std::forward<Kernel>(kernel), options);
  }

  /// Attention of a step's queries ([num_tokens, num_query_heads, head_dim],
  /// one per appended token) on `layer`, written to `out` ([num_tokens,
  /// num_query_heads, head_dim]): query i sees the sinks and the window of
  /// its own token, as had the tokens come one at a time. Queries and output
  /// may alias (queries are read first).
  template <class Kernel, class Src>
  void attend(int layer, const TokensView<Src>& queries, const MutableTokensView<compute_type>& out, Kernel&& kernel,
              const Options& options = {}) {
    State& state = live("attend");
    detail::attend_rows(state.sequence, state.store, layer, queries, out, kernel, options);
  }

  /// Eigen form: `query` a [num_query_heads, head_dim] matrix, map or block;
  /// `out` a row-major one of compute_type (rows contiguous). `out` is taken
  /// by const reference so that temporaries such as `m.topRows(8)` bind (the
  /// idiom Eigen documents for output parameters); it is written through.
  template <class Kernel, class QueryDerived, class OutDerived>
  void attend(int layer, const Eigen::DenseBase<QueryDerived>& query, const Eigen::DenseBase<OutDerived>& out_const,
              Kernel&& kernel, const Options& options = {}) {
    auto& out = const_cast<Eigen::DenseBase<OutDerived>&>(out_const);
    static_assert(bool(Eigen::internal::traits<OutDerived>::Flags & Eigen::LvalueBit),
                  "sinkkv: the attention output must be writable");
    static_assert(std::is_same_v<typename OutDerived::Scalar, compute_type>,
                  "sinkkv: the attention output must hold compute_t<T> (float for float/half/bfloat16)");
    static_assert(bool(Eigen::internal::traits<OutDerived>::Flags & Eigen::DirectAccessBit),
                  "sinkkv: the attention output must be a matrix, map or block (direct access)");
    SINKKV_CHECK(out.derived().colStride() == 1 || out.cols() == 1,
                 "attend on layer " << layer << ": output rows must be contiguous (row-major), column stride is "
                                    << out.derived().colStride());
    const MutableHeadsView<compute_type> out_view{out.derived().data(), static_cast<int>(out.rows()),
                                                  static_cast<int>(out.cols()),
                                                  static_cast<std::ptrdiff_t>(out.derived().rowStride())};
    attend(layer, view_of(query.derived(), "query"), out_view, std::forward<Kernel>(kernel), options);
  }

 private:
  friend struct detail::SnapshotAccess;

  /// Everything a live cache owns; a moved-from cache owns none of it.
  struct State {
    explicit State(std::shared_ptr<const detail::CacheModel<compute_type>> shared)
        : model(std::move(shared)),
          sequence(*model, 1 + 2),  // sinks and the window's two ring runs
          store(model->config, model->groups) {}
    State(const State& other)
        : model(other.model), sequence(other.sequence), store(other.store.copy()) {}

    std::shared_ptr<const detail::CacheModel<compute_type>> model;  // immutable; shared by clones
    detail::Sequence<T> sequence;
    detail::ContiguousStore<T> store;
  };

  SinkKVCache(const SinkKVCache& other)  // only through clone()
      : state_(other.state_ ? std::make_unique<State>(*other.state_) : nullptr) {}

  const State& live(const char* operation) const {
    SINKKV_CHECK(state_ != nullptr, operation << " on a moved-from SinkKVCache (it holds no storage; assign a cache "
                                                 "to it first)");
    return *state_;
  }
  State& live(const char* operation) { return const_cast<State&>(std::as_const(*this).live(operation)); }

  void check_head(int layer, int kv_head, const char* operation) const {
    const CacheConfig& c = config();
    SINKKV_CHECK(layer >= 0 && layer < c.num_layers,
                 operation << ": layer " << layer << " outside [0, num_layers " << c.num_layers << ")");
    SINKKV_CHECK(kv_head >= 0 && kv_head < c.num_kv_heads,
                 operation << ": KV head " << kv_head << " outside [0, num_kv_heads " << c.num_kv_heads << ")");
  }

  const T* stored_row(int layer, int kv_head, int cache_position, int kind, const char* operation) const {
    const State& state = live(operation);
    check_head(layer, kv_head, operation);
    const int group = state.model->groups.group_of(layer, kv_head);
    const int slot = state.sequence.positions(group).slot(cache_position);
    return state.store.row(group, state.model->groups.member_of(layer, kv_head), kind, slot);
  }

  template <class Src>
  static TokensView<Src> single(const HeadsView<Src>& view) {
    return TokensView<Src>{view.data, 1, view.num_heads, view.head_dim, 0, view.head_stride, view.element_stride};
  }

  template <class Derived>
  static auto view_of(const Derived& matrix, const char* what) {
    static_assert(bool(Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit),
                  "sinkkv: pass a matrix, map or block (direct access); evaluate expressions first so "
                  "that the cache never allocates");
    using Scalar = typename Derived::Scalar;
    SINKKV_CHECK(matrix.rows() <= std::numeric_limits<int>::max() && matrix.cols() <= std::numeric_limits<int>::max(),
                 what << " has " << matrix.rows() << " x " << matrix.cols() << " coefficients");
    return HeadsView<Scalar>{matrix.data(), static_cast<int>(matrix.rows()), static_cast<int>(matrix.cols()),
                             static_cast<std::ptrdiff_t>(matrix.rowStride()),
                             static_cast<std::ptrdiff_t>(matrix.colStride())};
  }

  std::unique_ptr<State> state_;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv

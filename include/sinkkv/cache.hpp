// sinkkv: the attention-sink KV cache.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "alibi.hpp"
#include "attention.hpp"
#include "config.hpp"
#include "detail/element.hpp"
#include "error.hpp"
#include "positions.hpp"
#include "rope.hpp"
#include "views.hpp"

namespace sinkkv {

/// Per-call attention options.
template <class C>
struct AttendOptions {
  /// Softmax scale; 0 means 1 / sqrt(head_dim).
  C scale = 0;
  /// [num_query_heads] learned sink logits (gpt-oss style: one extra softmax
  /// column per head with a zero value), or nullptr for none.
  const C* sink_logits = nullptr;
};

/// KV cache of one sequence, all layers: the first num_sinks tokens of the
/// stream (the attention sinks, never evicted) plus a rolling window of the
/// most recent `window` tokens, with positions re-assigned inside the cache
/// (sinks 0..S-1, window after them, the newest token last).
///
/// Storage T is float, double, Eigen::half or Eigen::bfloat16; arithmetic is
/// in compute_t<T> (float for the half types). All memory is allocated by the
/// constructor; append() and attend() never allocate and never move cached
/// rows (the window is a ring buffer).
///
/// Protocol, per token: every layer appends the token's K/V exactly once,
/// in any order; a layer may attend once it has appended. The first append
/// after every layer has the previous token starts the next token. Breaking
/// this (a layer twice, a layer skipped, attending before appending) throws.
///
/// Positions stay exact and O(1) per token: keys are rotated once, at
/// append, by their stream index. Within the window, cache-relative
/// distances equal stream distances, so the query rotated by its stream
/// index scores the window exactly; only the sinks need the query rotated
/// by its cache position. The kernel merges both through one online softmax.
///
/// Move-only: copying multi-megabyte state must be explicit (clone()).
/// One thread at a time per cache (attend() writes per-cache scratch);
/// separate caches are independent.
template <class T>
class SinkKVCache {
  static_assert(detail::ElementTraits<T>::kSupported,
                "SinkKVCache<T>: T must be float, double, Eigen::half or Eigen::bfloat16");

 public:
  using element_type = T;
  using compute_type = compute_t<T>;
  using Options = AttendOptions<compute_type>;

  /// Allocates num_layers * 2 * num_kv_heads * capacity * head_dim elements.
  /// Throws sinkkv::Error for a bad configuration.
  explicit SinkKVCache(CacheConfig config)
      : config_(validated(std::move(config))),
        positions_(config_.num_sinks, config_.window),
        head_elements_(static_cast<std::size_t>(config_.capacity()) * static_cast<std::size_t>(config_.head_dim)),
        layer_token_(static_cast<std::size_t>(config_.num_layers), 0) {
    const std::size_t blocks = static_cast<std::size_t>(config_.num_layers) * 2 *
                               static_cast<std::size_t>(config_.num_kv_heads);
    SINKKV_CHECK(head_elements_ <= std::numeric_limits<std::size_t>::max() / sizeof(T) / blocks,
                 "cache of " << blocks << " x " << head_elements_ << " elements overflows size_t");
    storage_.assign(blocks * head_elements_, T(0));

    const std::size_t query_elements =
        static_cast<std::size_t>(config_.query_heads()) * static_cast<std::size_t>(config_.head_dim);
    query_stream_frame_.assign(query_elements, compute_type(0));
    query_cache_frame_.assign(query_elements, compute_type(0));
    log_sum_exp_.assign(static_cast<std::size_t>(config_.query_heads()), compute_type(0));

    if (config_.encoding.kind == PositionEncoding::Kind::kRope) {
      rope_.emplace(config_.encoding.rope, config_.head_dim);
      stream_rotation_ = rope_->make_rotation();
      cache_rotation_ = rope_->make_rotation();
    } else if (config_.encoding.kind == PositionEncoding::Kind::kAlibi) {
      const std::vector<double> slopes = config_.encoding.alibi.slopes.empty()
                                             ? alibi_slopes(config_.query_heads())
                                             : config_.encoding.alibi.slopes;
      for (double slope : slopes) alibi_slopes_.push_back(static_cast<compute_type>(slope));
    }
  }

  SinkKVCache(SinkKVCache&&) noexcept = default;
  SinkKVCache& operator=(SinkKVCache&&) noexcept = default;
  SinkKVCache& operator=(const SinkKVCache&) = delete;
  ~SinkKVCache() = default;

  /// A deep copy (allocates as much as the constructor), e.g. to fork a
  /// conversation.
  SinkKVCache clone() const { return SinkKVCache(*this); }

  /// Forgets every token; keeps the memory. O(num_layers).
  void reset() noexcept {
    positions_.clear();
    std::fill(layer_token_.begin(), layer_token_.end(), 0);
    layers_done_ = 0;
  }

  // ---- observers ---------------------------------------------------------

  const CacheConfig& config() const { return config_; }
  const CachePositions& positions() const { return positions_; }
  std::uint64_t tokens_seen() const { return positions_.tokens_seen(); }
  int size() const { return positions_.size(); }
  int capacity() const { return positions_.capacity(); }
  int num_sinks() const { return positions_.num_sinks(); }
  int window() const { return positions_.window(); }
  int num_layers() const { return config_.num_layers; }
  /// Stream index of the token at `cache_position` (0 <= it < size()).
  std::uint64_t stream_index(int cache_position) const { return positions_.stream_index(cache_position); }
  /// Cache position of a stream token; nullopt if evicted or not yet seen.
  std::optional<int> cache_position(std::uint64_t stream_index) const {
    return positions_.cache_position(stream_index);
  }
  /// True when every layer holds the newest token (or no token was seen).
  bool token_complete() const { return layers_done_ == config_.num_layers || tokens_seen() == 0; }
  /// Bytes of K/V storage.
  std::size_t storage_bytes() const { return storage_.size() * sizeof(T); }
  /// Log-sum-exp per query head of the last attend() (after sink logits).
  const compute_type* log_sum_exp() const { return log_sum_exp_.data(); }

  /// Stored key row (rotated by the token's stream index under RoPE) of a
  /// cache position; for inspection and tests. [head_dim]
  const T* key_row(int layer, int kv_head, int cache_position) const {
    check_layer(layer, "key_row");
    return row(layer, 0, kv_head, positions_.slot(cache_position));
  }
  const T* value_row(int layer, int kv_head, int cache_position) const {
    check_layer(layer, "value_row");
    return row(layer, 1, kv_head, positions_.slot(cache_position));
  }

  // ---- writing -----------------------------------------------------------

  /// Stores one token's keys and values for `layer`: both [num_kv_heads,
  /// head_dim] in any strides. Starts a new token if every layer holds the
  /// previous one (evicting the oldest window token when full). O(num_kv_heads
  /// * head_dim); no allocation. Throws on misuse, before changing anything.
  template <class Src>
  void append(int layer, const HeadsView<Src>& keys, const HeadsView<Src>& values) {
    check_layer(layer, "append");
    check_input(keys, config_.num_kv_heads, "keys");
    check_input(values, config_.num_kv_heads, "values");
    if (token_complete()) {
      begin_token();
    } else {
      SINKKV_CHECK(layer_token_[static_cast<std::size_t>(layer)] != tokens_seen(),
                   "layer " << layer << " appended twice for token " << positions_.newest_stream_index()
                            << "; layer " << first_layer_missing_token()
                            << " has not received it (every layer takes each token exactly once)");
    }
    const int slot = positions_.newest_slot();
    for (int head = 0; head < config_.num_kv_heads; ++head) {
      T* key = row(layer, 0, head, slot);
      T* value = row(layer, 1, head, slot);
      const auto key_in = [&](int d) { return keys(head, d); };
      if (rope_) {
        rope_->rotate(stream_rotation_, key_in, key);
      } else {
        for (int d = 0; d < config_.head_dim; ++d) key[d] = detail::from_double<T>(detail::to_double(key_in(d)));
      }
      for (int d = 0; d < config_.head_dim; ++d) value[d] = detail::from_double<T>(detail::to_double(values(head, d)));
    }
    layer_token_[static_cast<std::size_t>(layer)] = tokens_seen();
    ++layers_done_;
  }

  /// Eigen input: [num_kv_heads, head_dim] matrices, maps or blocks (any
  /// storage order). Expressions must be evaluated first, so that this
  /// never allocates.
  template <class KeysDerived, class ValuesDerived>
  void append(int layer, const Eigen::DenseBase<KeysDerived>& keys, const Eigen::DenseBase<ValuesDerived>& values) {
    append(layer, view_of(keys.derived(), "keys"), view_of(values.derived(), "values"));
  }

  // ---- attention ---------------------------------------------------------

  /// The kernel arguments for `query` ([num_query_heads, head_dim]) on
  /// `layer`: the query rotated into the sink and window frames, and the
  /// layer's cached tokens as at most three segments (sinks, and the window
  /// ring as one or two runs). The result points into this cache and is
  /// valid until its next append/prepare/attend. No allocation.
  template <class Src>
  AttentionArgs<T> prepare(int layer, const HeadsView<Src>& query, compute_type scale = 0) {
    check_layer(layer, "attend");
    SINKKV_CHECK(tokens_seen() > 0, "attend on layer " << layer << " of an empty cache");
    SINKKV_CHECK(layer_token_[static_cast<std::size_t>(layer)] == tokens_seen(),
                 "attend on layer " << layer << " before it appended token " << positions_.newest_stream_index());
    check_input(query, config_.query_heads(), "query");

    const bool evicted = positions_.evicted() > 0;
    load_query(query, stream_rotation_, query_stream_frame_.data());
    const compute_type* sink_query = query_stream_frame_.data();
    if (rope_ && evicted) {  // before any eviction, cache position == stream index
      load_query(query, cache_rotation_, query_cache_frame_.data());
      sink_query = query_cache_frame_.data();
    }

    const int query_position = positions_.query_position();
    int count = 0;
    if (positions_.cached_sinks() > 0) {
      segments_[count++] = segment(layer, 0, positions_.cached_sinks(), sink_query, query_position);
    }
    std::array<CachePositions::WindowRun, 2> runs;
    const int num_runs = positions_.window_runs(runs);
    for (int r = 0; r < num_runs; ++r) {
      const int first_position =
          positions_.cached_sinks() + static_cast<int>(runs[r].first_stream_index - positions_.first_window_index());
      segments_[count++] = segment(layer, runs[r].first_slot, runs[r].length, query_stream_frame_.data(),
                                   query_position - first_position);
    }

    AttentionArgs<T> args;
    args.num_query_heads = config_.query_heads();
    args.num_kv_heads = config_.num_kv_heads;
    args.head_dim = config_.head_dim;
    args.scale = scale != 0 ? scale : compute_type(1) / std::sqrt(static_cast<compute_type>(config_.head_dim));
    args.alibi_slopes = alibi_slopes_.empty() ? nullptr : alibi_slopes_.data();
    args.segments = segments_.data();
    args.num_segments = count;
    return args;
  }

  /// Attention of `query` ([num_query_heads, head_dim]) over every cached
  /// token of `layer`, written to `out` ([num_query_heads, head_dim], rows
  /// contiguous). `kernel` is any attention kernel (see attention.hpp).
  /// No allocation beyond what the kernel does (ours: none).
  template <class Kernel, class Src>
  void attend(int layer, const HeadsView<Src>& query, const MutableHeadsView<compute_type>& out, Kernel&& kernel,
              const Options& options = {}) {
    static_assert(is_attention_kernel_v<std::remove_reference_t<Kernel>, T>,
                  "sinkkv: the kernel must be callable as kernel(const AttentionArgs<T>&, "
                  "const AttentionOutput<compute_t<T>>&); see attention.hpp");
    SINKKV_CHECK(out.data != nullptr, "attend on layer " << layer << ": output pointer is null");
    SINKKV_CHECK(out.num_heads == config_.query_heads() && out.head_dim == config_.head_dim,
                 "attend on layer " << layer << ": output is [" << out.num_heads << ", " << out.head_dim
                                    << "], expected [" << config_.query_heads() << ", " << config_.head_dim << "]");
    const AttentionArgs<T> args = prepare(layer, query, options.scale);
    const AttentionOutput<compute_type> result{out.data, out.head_stride, log_sum_exp_.data()};
    kernel(args, result);
    if (options.sink_logits != nullptr) {
      apply_sink_logits(args.num_query_heads, args.head_dim, options.sink_logits, result);
    }
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
  SinkKVCache(const SinkKVCache&) = default;  // only through clone()

  static CacheConfig validated(CacheConfig config) {
    config.validate();
    return config;
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

  void check_layer(int layer, const char* operation) const {
    SINKKV_CHECK(layer >= 0 && layer < config_.num_layers,
                 operation << ": layer " << layer << " outside [0, num_layers " << config_.num_layers << ")");
  }

  template <class Src>
  void check_input(const HeadsView<Src>& view, int expected_heads, const char* what) const {
    SINKKV_CHECK(view.data != nullptr, what << " pointer is null");
    SINKKV_CHECK(view.num_heads == expected_heads && view.head_dim == config_.head_dim,
                 what << " is [" << view.num_heads << ", " << view.head_dim << "], expected [" << expected_heads
                      << ", " << config_.head_dim << "]");
  }

  int first_layer_missing_token() const {
    for (int layer = 0; layer < config_.num_layers; ++layer) {
      if (layer_token_[static_cast<std::size_t>(layer)] != tokens_seen()) return layer;
    }
    return -1;
  }

  void begin_token() {
    positions_.push();
    layers_done_ = 0;
    if (rope_) {
      rope_->set_position(stream_rotation_, positions_.newest_stream_index());
      if (positions_.evicted() > 0) {
        rope_->set_position(cache_rotation_, static_cast<std::uint64_t>(positions_.query_position()));
      }
    }
  }

  template <class Src>
  void load_query(const HeadsView<Src>& query, const Rope::Rotation& rotation, compute_type* out) const {
    const int head_dim = config_.head_dim;
    for (int head = 0; head < config_.query_heads(); ++head) {
      compute_type* row_out = out + head * head_dim;
      const auto query_in = [&](int d) { return query(head, d); };
      if (rope_) {
        rope_->rotate(rotation, query_in, row_out);
      } else {
        for (int d = 0; d < head_dim; ++d) row_out[d] = detail::from_double<compute_type>(detail::to_double(query_in(d)));
      }
    }
  }

  KVSegment<T> segment(int layer, int first_slot, int length, const compute_type* query, int query_distance) const {
    KVSegment<T> result;
    result.query = query;
    result.keys = row(layer, 0, 0, first_slot);
    result.values = row(layer, 1, 0, first_slot);
    result.token_stride = config_.head_dim;
    result.head_stride = static_cast<std::ptrdiff_t>(head_elements_);
    result.length = length;
    result.query_distance = query_distance;
    return result;
  }

  // Storage: [num_layers][2 (keys, values)][num_kv_heads][capacity][head_dim].
  const T* row(int layer, int kind, int kv_head, int slot) const {
    const std::size_t block =
        (static_cast<std::size_t>(layer) * 2 + static_cast<std::size_t>(kind)) *
            static_cast<std::size_t>(config_.num_kv_heads) + static_cast<std::size_t>(kv_head);
    return storage_.data() + block * head_elements_ +
           static_cast<std::size_t>(slot) * static_cast<std::size_t>(config_.head_dim);
  }
  T* row(int layer, int kind, int kv_head, int slot) {
    return const_cast<T*>(std::as_const(*this).row(layer, kind, kv_head, slot));
  }

  CacheConfig config_;
  CachePositions positions_;
  std::size_t head_elements_;  // capacity * head_dim: one KV head of one layer
  std::vector<T, Eigen::aligned_allocator<T>> storage_;  // see row()
  std::vector<std::uint64_t> layer_token_;  // [num_layers] tokens_seen() when the layer last appended
  int layers_done_ = 0;                     // layers holding the newest token
  std::optional<Rope> rope_;
  Rope::Rotation stream_rotation_;  // RoPE at the newest token's stream index
  Rope::Rotation cache_rotation_;   // RoPE at the newest token's cache position
  std::vector<compute_type> alibi_slopes_;                   // [num_query_heads], empty unless ALiBi
  std::vector<compute_type> query_stream_frame_;             // [num_query_heads, head_dim]
  std::vector<compute_type> query_cache_frame_;              // [num_query_heads, head_dim]
  std::vector<compute_type> log_sum_exp_;                    // [num_query_heads]
  std::array<KVSegment<T>, 3> segments_{};
};

}  // namespace sinkkv

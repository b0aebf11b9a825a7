// sinkkv::detail: one stream's state, and the append/attend algorithms that
// SinkKVCache and SequencePool share (they differ only in where rows live).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "../alibi.hpp"
#include "../attention.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../positions.hpp"
#include "../rope.hpp"
#include "../views.hpp"
#include "abi_namespace.hpp"
#include "element.hpp"
#include "policy_groups.hpp"
#include "storage.hpp"
#include "tagged_vector.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// What every sequence of a cache or pool shares, immutable once built:
/// the configuration, its policy groups, RoPE frequencies, ALiBi slopes.
template <class C>
struct CacheModel {
  explicit CacheModel(CacheConfig validated_config)
      : config(std::move(validated_config)), groups(config), stream_offsets(static_cast<std::size_t>(config.max_chunk)) {
    if (config.encoding.kind == PositionEncoding::Kind::kRope) {
      rope.emplace(config.encoding.rope, config.head_dim);
    } else if (config.encoding.kind == PositionEncoding::Kind::kAlibi) {
      const std::vector<double> slopes =
          config.encoding.alibi.slopes.empty() ? alibi_slopes(config.query_heads()) : config.encoding.alibi.slopes;
      for (double slope : slopes) alibi.push_back(static_cast<C>(slope));
    }
    for (std::size_t i = 0; i < stream_offsets.size(); ++i) stream_offsets[i] = static_cast<int>(i);
  }

  bool rotates_inputs() const { return rope.has_value() && config.input_rotation == InputRotation::kUnrotated; }

  CacheConfig config;
  PolicyGroups groups;
  std::optional<Rope> rope;
  Vector<C> alibi;             // [num_query_heads], empty unless ALiBi
  Vector<int> stream_offsets;  // [max_chunk] 0, 1, 2, ...: query offsets in the stream frame
};

/// The per-step protocol of one sequence. A step is one token, or one chunk
/// of tokens; every layer appends each step exactly once (in any order,
/// all with the same token count) and may attend once it has. A step starts
/// implicitly with the first append after the previous step is complete, or
/// explicitly with begin_step(), after which every step of the sequence must
/// be begun explicitly (so that a skipped append is caught at once).
/// Checks are O(1) (O(layers) to name a missing layer in a message).
class StepProtocol {
 public:
  explicit StepProtocol(int num_layers) : layer_step_end_(static_cast<std::size_t>(num_layers), 0) {}

  std::uint64_t tokens_seen() const { return tokens_seen_; }
  /// Tokens of the current step (0 before the first).
  int step_length() const { return step_length_; }
  std::uint64_t step_first_index() const { return tokens_seen_ - static_cast<std::uint64_t>(step_length_); }
  bool explicit_steps() const { return explicit_; }
  /// True when every layer holds the current step (or none was begun).
  bool step_complete() const { return step_length_ == 0 || layers_done_ == num_layers(); }
  int num_layers() const { return static_cast<int>(layer_step_end_.size()); }

  /// Checks an append of `count` tokens by `layer`; returns true when it
  /// starts a new step. Throws sinkkv::Error on misuse; changes nothing.
  bool check_append(int layer, int count, int max_chunk) const {
    if (step_complete()) {
      SINKKV_CHECK(!explicit_, "append on layer " << layer << ": step at stream index " << tokens_seen_
                                                  << " was not begun; this sequence begins its steps explicitly "
                                                     "(call begin_step first)");
      check_count(count, max_chunk, "append");
      return true;
    }
    SINKKV_CHECK(layer_step_end_[static_cast<std::size_t>(layer)] != tokens_seen_,
                 "layer " << layer << " appended twice for " << step_name() << "; layer " << first_missing_layer()
                          << " has not received it (every layer takes each step exactly once)");
    SINKKV_CHECK(count == step_length_, "append on layer " << layer << " of " << count << " tokens, but "
                                                           << step_name() << " has " << step_length_
                                                           << " (every layer appends the same tokens)");
    return false;
  }

  void record_append(int layer, bool starts_step, int count) {
    if (starts_step) start(count);
    layer_step_end_[static_cast<std::size_t>(layer)] = tokens_seen_;
    ++layers_done_;
  }

  /// Checks begin_step(stream_index, count). Throws; changes nothing.
  void check_begin_step(std::uint64_t stream_index, int count, int max_chunk) const {
    SINKKV_CHECK(stream_index == tokens_seen_, "begin_step at stream index " << stream_index
                                                                            << ", but the next token of this "
                                                                               "sequence has stream index "
                                                                            << tokens_seen_);
    SINKKV_CHECK(step_complete(), "begin_step at stream index " << stream_index << ": layer " << first_missing_layer()
                                                                << " has not appended " << step_name());
    check_count(count, max_chunk, "begin_step");
  }
  void record_begin_step(int count) {
    explicit_ = true;
    start(count);
  }

  /// Checks an attend of `count` queries by `layer`. Throws; changes nothing.
  void check_attend(int layer, int count) const {
    SINKKV_CHECK(tokens_seen_ > 0, "attend on layer " << layer << " of an empty cache");
    SINKKV_CHECK(layer_step_end_[static_cast<std::size_t>(layer)] == tokens_seen_,
                 "attend on layer " << layer << " before it appended " << step_name());
    SINKKV_CHECK(count == step_length_, "attend on layer " << layer << " with " << count << " queries, but it appended "
                                                           << step_length_ << " tokens (one query per token)");
  }

  void clear() {
    std::fill(layer_step_end_.begin(), layer_step_end_.end(), 0);
    tokens_seen_ = 0;
    step_length_ = 0;
    layers_done_ = 0;
    explicit_ = false;
  }

  /// Restores a state at a step boundary (snapshots). @pre step_length <= tokens_seen
  void restore(std::uint64_t tokens_seen, int step_length, bool explicit_steps) {
    std::fill(layer_step_end_.begin(), layer_step_end_.end(), tokens_seen);
    tokens_seen_ = tokens_seen;
    step_length_ = step_length;
    layers_done_ = num_layers();
    explicit_ = explicit_steps;
  }

 private:
  void start(int count) {
    tokens_seen_ += static_cast<std::uint64_t>(count);
    step_length_ = count;
    layers_done_ = 0;
  }

  static void check_count(int count, int max_chunk, const char* what) {
    SINKKV_CHECK(count >= 1 && count <= max_chunk,
                 what << " of " << count << " tokens outside [1, max_chunk " << max_chunk << "]");
  }

  std::string step_name() const {
    std::ostringstream name;
    if (step_length_ <= 1) {
      name << "token " << tokens_seen_ - 1;
    } else {
      name << "tokens " << step_first_index() << ".." << tokens_seen_ - 1;
    }
    return name.str();
  }

  int first_missing_layer() const {
    for (int layer = 0; layer < num_layers(); ++layer) {
      if (layer_step_end_[static_cast<std::size_t>(layer)] != tokens_seen_) return layer;
    }
    return -1;
  }

  Vector<std::uint64_t> layer_step_end_;  // [num_layers] tokens_seen() after the layer's last append
  std::uint64_t tokens_seen_ = 0;
  int step_length_ = 0;
  int layers_done_ = 0;
  bool explicit_ = false;
};

/// "[heads, head_dim]" for one-token steps, else "[tokens, heads, head_dim]".
inline std::string shape(int tokens, int heads, int head_dim, int expected_tokens) {
  std::ostringstream text;
  text << "[";
  if (expected_tokens != 1 || tokens != 1) text << tokens << ", ";
  text << heads << ", " << head_dim << "]";
  return text.str();
}

/// Checks a read view of `tokens` x `heads` x `head_dim`. Throws naming `what`.
template <class Src>
void check_input(const TokensView<Src>& view, int tokens, int heads, int head_dim, const char* what) {
  SINKKV_CHECK(view.data != nullptr, what << " pointer is null");
  SINKKV_CHECK(view.num_tokens == tokens && view.num_heads == heads && view.head_dim == head_dim,
               what << " is " << shape(view.num_tokens, view.num_heads, view.head_dim, tokens) << ", expected "
                    << shape(tokens, heads, head_dim, tokens));
  SINKKV_CHECK(view.element_stride >= 1, what << " element stride " << view.element_stride << " must be >= 1");
  SINKKV_CHECK(view.head_stride >= 0, what << " head stride " << view.head_stride << " must be >= 0");
  SINKKV_CHECK(view.token_stride >= 0 || tokens == 1, what << " token stride " << view.token_stride
                                                           << " must be >= 0");
}

/// Checks an output view: shape, and rows that do not overlap (token-major
/// or head-major). Throws naming the value.
template <class C>
void check_output(const MutableTokensView<C>& view, int tokens, int heads, int head_dim, int layer) {
  SINKKV_CHECK(view.data != nullptr, "attend on layer " << layer << ": output pointer is null");
  SINKKV_CHECK(view.num_tokens == tokens && view.num_heads == heads && view.head_dim == head_dim,
               "attend on layer " << layer << ": output is " << shape(view.num_tokens, view.num_heads, view.head_dim, tokens)
                                  << ", expected " << shape(tokens, heads, head_dim, tokens));
  // Rows of a [tokens, heads] grid are disjoint when heads are packed
  // within tokens (token-major) or tokens within heads (head-major).
  const auto nested = [](std::int64_t inner_count, std::int64_t inner_stride, std::int64_t outer_stride,
                         std::int64_t d) {
    if (inner_count == 1) return outer_stride >= d;
    if (inner_stride < d) return false;
    const std::int64_t span = (inner_count - 1) > (std::numeric_limits<std::int64_t>::max() - d) / inner_stride
                                  ? std::numeric_limits<std::int64_t>::max()
                                  : (inner_count - 1) * inner_stride + d;
    return outer_stride >= span;
  };
  const bool token_major = heads == 1 || view.head_stride >= head_dim;
  const bool disjoint = tokens == 1 ? token_major
                                    : nested(heads, view.head_stride, view.token_stride, head_dim) ||
                                          nested(tokens, view.token_stride, view.head_stride, head_dim);
  SINKKV_CHECK(disjoint, "attend on layer " << layer << ": output rows overlap (head stride "
                                                             << view.head_stride << ", token stride "
                                                             << view.token_stride << ", head_dim " << head_dim << ")");
}

/// One stream's mutable state: the positions of each policy group, the step
/// protocol, the rotations of the current step, and the scratch its attends
/// rotate queries into. Allocates only in the constructor (sized by
/// max_chunk); every step and attend after that is allocation-free.
/// Not thread-safe: one thread at a time per sequence.
template <class T>
class Sequence {
 public:
  using C = compute_t<T>;

  /// `max_segments_per_head_run`: the most storage runs one head run's
  /// tokens can split into (1 + 2 for a contiguous store).
  Sequence(const CacheModel<C>& model, int max_segments_per_head_run)
      : model_(&model), protocol_(model.config.num_layers) {
    const CacheConfig& config = model.config;
    const int groups = model.groups.num_groups();
    for (int g = 0; g < groups; ++g) {
      const RetentionPolicy& policy = model.groups.policy(g);
      positions_.emplace_back(policy.num_sinks, policy.window, policy.window + config.max_chunk - 1);
    }
    const std::size_t chunk = static_cast<std::size_t>(config.max_chunk);
    const std::size_t rows = chunk * static_cast<std::size_t>(config.query_heads()) *
                             static_cast<std::size_t>(config.head_dim);
    stream_rows_.assign(rows, C(0));
    sink_rows_.assign(rows, C(0));
    log_sum_exp_.assign(chunk * static_cast<std::size_t>(config.query_heads()), C(0));
    sink_offsets_.assign(chunk, 0);
    if (model.rope) {
      for (std::size_t i = 0; i < chunk; ++i) stream_rotation_.push_back(model.rope->make_rotation());
      for (std::size_t i = 0; i < chunk * static_cast<std::size_t>(groups); ++i) {
        sink_rotation_.push_back(model.rope->make_rotation());
      }
    }
    segments_.resize(static_cast<std::size_t>(max_segments_per_head_run));
    chunk_segments_.resize(static_cast<std::size_t>(max_segments_per_head_run));
  }

  const CacheModel<C>& model() const { return *model_; }
  const CacheConfig& config() const { return model_->config; }
  const CachePositions& positions(int group) const { return positions_[static_cast<std::size_t>(group)]; }
  const StepProtocol& protocol() const { return protocol_; }
  StepProtocol& protocol() { return protocol_; }
  std::uint64_t tokens_seen() const { return protocol_.tokens_seen(); }

  /// Forgets every token; keeps the memory. O(groups + layers).
  void clear() {
    for (CachePositions& p : positions_) p.clear();
    protocol_.clear();
    last_attended_layer = -1;
  }

  /// Advances every group by `count` tokens and computes the step's
  /// rotations. Called once per step, by the protocol's first append (or
  /// begin_step). O(count * groups * rotary_dim) sin/cos.
  void advance(int count) {
    const std::uint64_t first = tokens_seen_in_positions();
    for (CachePositions& p : positions_) p.push(count);
    last_attended_layer = -1;  // the log-sum-exps are of the previous step
    if (!model_->rope) return;
    const Rope& rope = *model_->rope;
    const bool rotated_inputs = config().input_rotation == InputRotation::kStreamRotated;
    for (int i = 0; i < count; ++i) {
      const std::uint64_t t = first + static_cast<std::uint64_t>(i);
      if (!rotated_inputs) rope.set_position(stream_rotation_[static_cast<std::size_t>(i)], t);
      for (int g = 0; g < static_cast<int>(positions_.size()); ++g) {
        const std::uint64_t query_position = positions_[static_cast<std::size_t>(g)].query_position_of(t);
        if (query_position == t) continue;  // the sink frame is the stream frame
        Rope::Rotation& rotation = mutable_sink_rotation(g, i);
        if (rotated_inputs) {
          rope.set_difference(rotation, -static_cast<std::int64_t>(t - query_position));  // turn back by the evictions
        } else {
          rope.set_position(rotation, query_position);
        }
      }
    }
  }

  /// Restores the state at a step boundary (snapshots): positions after
  /// `tokens_seen` tokens, the protocol with every layer done, and the last
  /// step's RoPE rotations, so that the step can still be attended.
  /// @pre step_length <= tokens_seen, step_length <= max_chunk, and
  /// step_length == 0 only when tokens_seen == 0
  void restore(std::uint64_t tokens_seen, int step_length, bool explicit_steps) {
    for (CachePositions& p : positions_) p.seek(tokens_seen - static_cast<std::uint64_t>(step_length));
    if (step_length > 0) advance(step_length);  // the last step again: positions and rotations
    protocol_.restore(tokens_seen, step_length, explicit_steps);
  }

  // ---- scratch used by attend_rows (see below) -----------------------------
  C* stream_rows() { return stream_rows_.data(); }
  C* sink_rows() { return sink_rows_.data(); }
  C* log_sum_exp() { return log_sum_exp_.data(); }
  const C* log_sum_exp() const { return log_sum_exp_.data(); }
  int* sink_offsets() { return sink_offsets_.data(); }
  KVSegment<T>* segments() { return segments_.data(); }
  ChunkSegment<T>* chunk_segments() { return chunk_segments_.data(); }
  int max_segments() const { return static_cast<int>(segments_.size()); }
  const Rope::Rotation& stream_rotation(int i) const { return stream_rotation_[static_cast<std::size_t>(i)]; }
  const Rope::Rotation& sink_rotation(int group, int i) const {
    return sink_rotation_[static_cast<std::size_t>(group) * static_cast<std::size_t>(config().max_chunk) +
                          static_cast<std::size_t>(i)];
  }
  /// The layer of the last attend of the current step (for log_sum_exp
  /// lookups), -1 before any.
  int last_attended_layer = -1;

 private:
  Rope::Rotation& mutable_sink_rotation(int group, int i) {
    return const_cast<Rope::Rotation&>(std::as_const(*this).sink_rotation(group, i));
  }
  std::uint64_t tokens_seen_in_positions() const { return positions_.front().tokens_seen(); }

  const CacheModel<C>* model_;
  Vector<CachePositions> positions_;  // [groups]
  StepProtocol protocol_;
  Vector<Rope::Rotation> stream_rotation_;  // [max_chunk] at step token i's stream index
  Vector<Rope::Rotation> sink_rotation_;    // [groups * max_chunk] to its query (cache) position
  Vector<C> stream_rows_;                   // [max_chunk * query_heads * head_dim], blocked per head run
  Vector<C> sink_rows_;                     // same shape
  Vector<C> log_sum_exp_;                   // [max_chunk * query_heads], blocked per head run
  Vector<int> sink_offsets_;                // [max_chunk]
  Vector<KVSegment<T>> segments_;           // [max segments of one head run]
  Vector<ChunkSegment<T>> chunk_segments_;  // same
};

// ---- the algorithms -------------------------------------------------------

/// Calls visit(run) for every run of `layer` a kernel may take in one call:
/// the policy groups' head runs when the store keeps a run's heads at one
/// stride (Store::kHeadsShareRuns), else every KV head on its own.
template <class Store, class Visit>
void for_each_kernel_run(const PolicyGroups& groups, int layer, Visit&& visit) {
  for (int r = 0; r < groups.num_runs(layer); ++r) {
    const PolicyGroups::HeadRun& run = groups.runs(layer)[r];
    if constexpr (Store::kHeadsShareRuns) {
      visit(run);
    } else {
      for (int h = 0; h < run.num_kv_heads; ++h) {
        visit(PolicyGroups::HeadRun{run.first_kv_head + h, 1, run.group, run.first_member + h});
      }
    }
  }
}

/// Stores a step's keys and values for `layer` ([count, num_kv_heads,
/// head_dim] each), starting the step if this is its first append.
/// `before_new_step(count)` runs when a step is about to start, after every
/// check passed and before anything changes (the pool reserves pages
/// there; it may throw). No allocation.
template <class T, class Store, class Src, class BeforeNewStep>
void append_rows(Sequence<T>& sequence, Store& store, int layer, const TokensView<Src>& keys,
                 const TokensView<Src>& values, BeforeNewStep&& before_new_step) {
  const CacheConfig& config = sequence.config();
  SINKKV_CHECK(layer >= 0 && layer < config.num_layers,
               "append: layer " << layer << " outside [0, num_layers " << config.num_layers << ")");
  check_input(keys, keys.num_tokens, config.num_kv_heads, config.head_dim, "keys");
  check_input(values, keys.num_tokens, config.num_kv_heads, config.head_dim, "values");
  const int count = keys.num_tokens;
  const bool starts_step = sequence.protocol().check_append(layer, count, config.max_chunk);
  if (starts_step) {
    before_new_step(count);
    sequence.advance(count);
  }
  sequence.protocol().record_append(layer, starts_step, count);

  const CacheModel<compute_t<T>>& model = sequence.model();
  const std::uint64_t first = sequence.protocol().step_first_index();
  const int head_dim = config.head_dim;
  for_each_kernel_run<Store>(model.groups, layer, [&](const PolicyGroups::HeadRun& run) {
    const CachePositions& positions = sequence.positions(run.group);
    for (int i = 0; i < count; ++i) {
      const int slot = positions.slot_of(first + static_cast<std::uint64_t>(i));
      const HeadsView<Src> key_in = keys.token(i);
      const HeadsView<Src> value_in = values.token(i);
      for (int h = 0; h < run.num_kv_heads; ++h) {
        const int head = run.first_kv_head + h;
        T* key = store.row(run.group, run.first_member + h, 0, slot);
        T* value = store.row(run.group, run.first_member + h, 1, slot);
        const auto key_element = [&](int d) { return key_in(head, d); };
        if (model.rotates_inputs()) {
          model.rope->rotate(sequence.stream_rotation(i), key_element, key);
        } else {
          for (int d = 0; d < head_dim; ++d) key[d] = from_double<T>(to_double(key_element(d)));
        }
        for (int d = 0; d < head_dim; ++d) value[d] = from_double<T>(to_double(value_in(head, d)));
      }
    }
  });
}

/// Checks attend options against the configuration. Throws naming the value.
template <class C>
void check_options(const AttendOptions<C>& options, int num_query_heads, int layer) {
  SINKKV_CHECK(std::isfinite(static_cast<double>(options.scale)),
               "attend on layer " << layer << ": scale " << options.scale << " must be finite");
  if (options.sink_logits == nullptr) {
    SINKKV_CHECK(options.num_sink_logits == 0, "attend on layer " << layer << ": num_sink_logits "
                                                                  << options.num_sink_logits
                                                                  << " given without sink_logits");
    return;
  }
  SINKKV_CHECK(options.num_sink_logits == num_query_heads,
               "attend on layer " << layer << ": " << options.num_sink_logits << " sink logits, expected one per query head ("
                                  << num_query_heads << ")");
  for (int q = 0; q < num_query_heads; ++q) {
    const C logit = options.sink_logits[q];
    SINKKV_CHECK(!std::isnan(logit) && logit != std::numeric_limits<C>::infinity(),
                 "attend on layer " << layer << ": sink logit of query head " << q << " is " << logit
                                    << " (finite or -infinity expected)");
  }
}

/// The kernel arguments of one head run, for a single query (the decode
/// step): at most max_segments segments over the run's sinks and window.
/// `queries` are the run's stream-frame rows, `sink_queries` its sink-frame
/// rows ([num_query_heads of the run, head_dim] each).
template <class T, class Store>
AttentionArgs<T> single_query_args(Sequence<T>& sequence, const Store& store, const PolicyGroups::HeadRun& run,
                                   const compute_t<T>* queries, const compute_t<T>* sink_queries, compute_t<T> scale,
                                   KVSegment<T>* segments) {
  const CacheModel<compute_t<T>>& model = sequence.model();
  const CachePositions& positions = sequence.positions(run.group);
  const std::uint64_t t = sequence.protocol().step_first_index();
  int count = 0;
  const int query_position = static_cast<int>(positions.query_position_of(t));
  const auto add = [&](const RowRun<T>& piece, const compute_t<T>* query, std::int64_t distance_to_first) {
    KVSegment<T>& s = segments[count++];
    s.query = query;
    s.keys = piece.keys;
    s.values = piece.values;
    s.token_stride = piece.token_stride;
    s.head_stride = piece.head_stride;
    s.length = piece.length;
    s.query_distance = static_cast<int>(distance_to_first);
  };
  const int sinks = positions.cached_sinks();
  if (sinks > 0) {
    store.for_each_run(run.group, run.first_member, run.num_kv_heads, 0, sinks, [&](const RowRun<T>& piece) {
      add(piece, sink_queries, query_position - piece.first_slot);
    });
  }
  std::array<CachePositions::WindowRun, 2> window;
  const int num_window = positions.window_runs(window);
  for (int w = 0; w < num_window; ++w) {
    store.for_each_run(run.group, run.first_member, run.num_kv_heads, window[w].first_slot, window[w].length,
                       [&](const RowRun<T>& piece) {
                         const std::uint64_t first = window[w].first_stream_index +
                                                     static_cast<std::uint64_t>(piece.first_slot - window[w].first_slot);
                         add(piece, queries, static_cast<std::int64_t>(t - first));
                       });
  }
  AttentionArgs<T> args;
  args.first_query_head = run.first_kv_head * model.config.group_size();
  args.num_query_heads = run.num_kv_heads * model.config.group_size();
  args.num_kv_heads = run.num_kv_heads;
  args.head_dim = model.config.head_dim;
  args.scale = scale;
  args.alibi_slopes = model.alibi.empty() ? nullptr : model.alibi.data() + run.first_kv_head * model.config.group_size();
  args.segments = segments;
  args.num_segments = count;
  return args;
}

/// The chunk arguments of one head run for the current step's queries.
template <class T, class Store>
ChunkArgs<T> chunk_args(Sequence<T>& sequence, const Store& store, const PolicyGroups::HeadRun& run,
                        const compute_t<T>* queries, const compute_t<T>* sink_queries, compute_t<T> scale,
                        ChunkSegment<T>* segments) {
  const CacheModel<compute_t<T>>& model = sequence.model();
  const CachePositions& positions = sequence.positions(run.group);
  const int n = sequence.protocol().step_length();
  const std::uint64_t t0 = sequence.protocol().step_first_index();
  int count = 0;
  const auto add = [&](const RowRun<T>& piece, int frame, std::int64_t distance_to_first) {
    ChunkSegment<T>& s = segments[count++];
    s.keys = piece.keys;
    s.values = piece.values;
    s.token_stride = piece.token_stride;
    s.head_stride = piece.head_stride;
    s.length = piece.length;
    s.frame = frame;
    s.query_distance = static_cast<int>(distance_to_first);
  };
  const std::uint64_t query_position0 = positions.query_position_of(t0);
  int* sink_offsets = sequence.sink_offsets();
  for (int i = 0; i < n; ++i) {
    sink_offsets[i] =
        static_cast<int>(positions.query_position_of(t0 + static_cast<std::uint64_t>(i)) - query_position0);
  }
  const int sinks = positions.cached_sinks();
  if (sinks > 0) {
    store.for_each_run(run.group, run.first_member, run.num_kv_heads, 0, sinks, [&](const RowRun<T>& piece) {
      add(piece, kSinkFrame, static_cast<std::int64_t>(query_position0) - piece.first_slot);
    });
  }
  // The window of query 0 reaches back window - 1 tokens; later queries see
  // later tokens, up to the end of the step.
  const std::uint64_t window = static_cast<std::uint64_t>(positions.window());
  std::uint64_t lowest = t0 + 1 > window ? t0 + 1 - window : 0;
  lowest = std::max<std::uint64_t>(lowest, static_cast<std::uint64_t>(positions.num_sinks()));
  std::array<CachePositions::WindowRun, 2> runs;
  const int num_runs = positions.window_runs(lowest, positions.tokens_seen(), runs);
  for (int w = 0; w < num_runs; ++w) {
    store.for_each_run(run.group, run.first_member, run.num_kv_heads, runs[w].first_slot, runs[w].length,
                       [&](const RowRun<T>& piece) {
                         const std::uint64_t first =
                             runs[w].first_stream_index + static_cast<std::uint64_t>(piece.first_slot - runs[w].first_slot);
                         add(piece, kStreamFrame, static_cast<std::int64_t>(t0) - static_cast<std::int64_t>(first));
                       });
  }
  ChunkArgs<T> args;
  args.num_queries = n;
  args.first_query_head = run.first_kv_head * model.config.group_size();
  args.num_query_heads = run.num_kv_heads * model.config.group_size();
  args.num_kv_heads = run.num_kv_heads;
  args.head_dim = model.config.head_dim;
  args.scale = scale;
  args.alibi_slopes = model.alibi.empty() ? nullptr : model.alibi.data() + run.first_kv_head * model.config.group_size();
  args.frames[kStreamFrame] = QueryFrame<compute_t<T>>{queries, model.stream_offsets.data(), positions.window()};
  args.frames[kSinkFrame] = QueryFrame<compute_t<T>>{sink_queries, sink_offsets, std::numeric_limits<int>::max()};
  args.segments = segments;
  args.num_segments = count;
  return args;
}

/// Rotates the step's queries of one head run into the stream frame (and
/// the sink frame where it differs); returns the sink-frame rows (== the
/// stream-frame rows when no query of the step needs its own).
template <class T, class Src>
const compute_t<T>* load_queries(Sequence<T>& sequence, const PolicyGroups::HeadRun& run,
                                 const TokensView<Src>& queries, compute_t<T>* stream_rows, compute_t<T>* sink_rows) {
  using C = compute_t<T>;
  const CacheModel<C>& model = sequence.model();
  const CacheConfig& config = model.config;
  const int head_dim = config.head_dim;
  const int first_head = run.first_kv_head * config.group_size();
  const int heads = run.num_kv_heads * config.group_size();
  const int n = queries.num_tokens;
  const CachePositions& positions = sequence.positions(run.group);
  const std::uint64_t t0 = sequence.protocol().step_first_index();
  bool any_sink_frame = false;
  for (int i = 0; i < n; ++i) {
    const HeadsView<Src> query = queries.token(i);
    const std::uint64_t t = t0 + static_cast<std::uint64_t>(i);
    const bool own_sink_frame = model.rope.has_value() && positions.query_position_of(t) != t;
    any_sink_frame = any_sink_frame || own_sink_frame;
    for (int q = 0; q < heads; ++q) {
      C* stream_row = stream_rows + (static_cast<std::ptrdiff_t>(i) * heads + q) * head_dim;
      C* sink_row = sink_rows + (static_cast<std::ptrdiff_t>(i) * heads + q) * head_dim;
      const auto element = [&](int d) { return query(first_head + q, d); };
      if (model.rotates_inputs()) {
        model.rope->rotate(sequence.stream_rotation(i), element, stream_row);
      } else {
        for (int d = 0; d < head_dim; ++d) stream_row[d] = from_double<C>(to_double(element(d)));
      }
      if (own_sink_frame) {
        model.rope->rotate(sequence.sink_rotation(run.group, i), element, sink_row);
      }
    }
  }
  if (!any_sink_frame) return stream_rows;
  // Queries of the step before the first eviction score the sinks in the
  // stream frame too.
  for (int i = 0; i < n; ++i) {
    const std::uint64_t t = t0 + static_cast<std::uint64_t>(i);
    if (positions.query_position_of(t) != t) continue;
    std::copy(stream_rows + static_cast<std::ptrdiff_t>(i) * heads * head_dim,
              stream_rows + static_cast<std::ptrdiff_t>(i + 1) * heads * head_dim,
              sink_rows + static_cast<std::ptrdiff_t>(i) * heads * head_dim);
  }
  return sink_rows;
}

/// A chunk on a kernel that only takes single queries: one call per query,
/// over the parts of the segments it sees. `segments`: scratch for as many
/// segments as the chunk has.
template <class T, class Kernel>
void attend_per_query(const ChunkArgs<T>& chunk, const ChunkOutput<compute_t<T>>& out, Kernel& kernel,
                      KVSegment<T>* segments) {
  for (int i = 0; i < chunk.num_queries; ++i) {
    int count = 0;
    for (int s = 0; s < chunk.num_segments; ++s) {
      const ChunkSegment<T>& segment = chunk.segments[s];
      const auto [first, last] = chunk.visible(segment, i);
      if (first >= last) continue;
      KVSegment<T>& part = segments[count++];
      part.query = chunk.query_row(segment.frame, i, 0);
      part.keys = segment.keys + first * segment.token_stride;
      part.values = segment.values + first * segment.token_stride;
      part.token_stride = segment.token_stride;
      part.head_stride = segment.head_stride;
      part.length = last - first;
      part.query_distance = static_cast<int>(chunk.distance(segment, i, first));
    }
    AttentionArgs<T> args;
    args.first_query_head = chunk.first_query_head;
    args.num_query_heads = chunk.num_query_heads;
    args.num_kv_heads = chunk.num_kv_heads;
    args.head_dim = chunk.head_dim;
    args.scale = chunk.scale;
    args.alibi_slopes = chunk.alibi_slopes;
    args.segments = segments;
    args.num_segments = count;
    kernel(args, AttentionOutput<compute_t<T>>{out.data + i * out.query_stride, out.head_stride,
                                               out.log_sum_exp + static_cast<std::ptrdiff_t>(i) * chunk.num_query_heads});
  }
}

/// Attention of the current step's queries ([count, num_query_heads,
/// head_dim]) over what each one sees, written to `out`. Calls `kernel`
/// once per head run of the layer: natively with ChunkArgs when the kernel
/// handles chunks (or the step is one token and it does not), else once per
/// query. No allocation beyond the kernel's.
template <class T, class Store, class Kernel, class Src>
void attend_rows(Sequence<T>& sequence, const Store& store, int layer, const TokensView<Src>& queries,
                 const MutableTokensView<compute_t<T>>& out, Kernel& kernel,
                 const AttendOptions<compute_t<T>>& options) {
  using C = compute_t<T>;
  constexpr bool kSingle = is_attention_kernel_v<Kernel, T>;
  constexpr bool kChunk = is_chunk_kernel_v<Kernel, T>;
  static_assert(kSingle || kChunk,
                "sinkkv: the kernel must be callable as kernel(const AttentionArgs<T>&, "
                "const AttentionOutput<compute_t<T>>&) and/or kernel(const ChunkArgs<T>&, "
                "const ChunkOutput<compute_t<T>>&); see attention.hpp");
  const CacheConfig& config = sequence.config();
  SINKKV_CHECK(layer >= 0 && layer < config.num_layers,
               "attend: layer " << layer << " outside [0, num_layers " << config.num_layers << ")");
  sequence.protocol().check_attend(layer, queries.num_tokens);
  check_input(queries, queries.num_tokens, config.query_heads(), config.head_dim, "query");
  check_output(out, queries.num_tokens, config.query_heads(), config.head_dim, layer);
  check_options(options, config.query_heads(), layer);

  const int n = queries.num_tokens;
  const int head_dim = config.head_dim;
  const C scale = options.scale != 0 ? options.scale : C(1) / std::sqrt(static_cast<C>(head_dim));
  for_each_kernel_run<Store>(sequence.model().groups, layer, [&](const PolicyGroups::HeadRun& run) {
    const int first_head = run.first_kv_head * config.group_size();
    const int heads = run.num_kv_heads * config.group_size();
    const std::ptrdiff_t block = static_cast<std::ptrdiff_t>(n) * first_head;  // this run's rows start here
    C* stream_rows = sequence.stream_rows() + block * head_dim;
    C* lse = sequence.log_sum_exp() + block;
    const C* sink_rows = load_queries(sequence, run, queries, stream_rows, sequence.sink_rows() + block * head_dim);
    C* out_rows = out.data + first_head * out.head_stride;
    if (n == 1 && kSingle) {
      if constexpr (kSingle) {
        const AttentionArgs<T> args = single_query_args(sequence, store, run, stream_rows, sink_rows, scale, sequence.segments());
        kernel(args, AttentionOutput<C>{out_rows, out.head_stride, lse});
      }
    } else if constexpr (kChunk) {
      const ChunkArgs<T> args = chunk_args(sequence, store, run, stream_rows, sink_rows, scale, sequence.chunk_segments());
      kernel(args, ChunkOutput<C>{out_rows, out.token_stride, out.head_stride, lse});
    } else {
      const ChunkArgs<T> chunk = chunk_args(sequence, store, run, stream_rows, sink_rows, scale, sequence.chunk_segments());
      attend_per_query(chunk, ChunkOutput<C>{out_rows, out.token_stride, out.head_stride, lse}, kernel,
                       sequence.segments());
    }
    if (options.sink_logits != nullptr) {
      for (int i = 0; i < n; ++i) {
        apply_sink_logits(heads, head_dim, options.sink_logits + first_head,
                          AttentionOutput<C>{out_rows + i * out.token_stride, out.head_stride, lse + i * heads});
      }
    }
  });
  sequence.last_attended_layer = layer;
}

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

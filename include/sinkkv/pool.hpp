// sinkkv: many streams in one memory budget, decoded in batches.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention.hpp"
#include "config.hpp"
#include "detail/abi_namespace.hpp"
#include "detail/paged_storage.hpp"
#include "detail/sequence.hpp"
#include "detail/tagged_vector.hpp"
#include "error.hpp"
#include "kernels/parallel.hpp"
#include "positions.hpp"
#include "views.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// Names one sequence of a SequencePool. An id outlives nothing: once its
/// sequence is released, using it throws sinkkv::Error (ids are never
/// reused: a slot's generation is part of the id).
struct SequenceId {
  std::uint64_t value = 0;
  friend bool operator==(SequenceId a, SequenceId b) { return a.value == b.value; }
  friend bool operator!=(SequenceId a, SequenceId b) { return a.value != b.value; }
};

/// Shape, policies and budget of a SequencePool.
struct PoolConfig {
  /// Layers, heads, policies, chunk room and encoding of every sequence.
  /// A head's ring is sinks + window + max_chunk - 1 slots, and a sequence
  /// that streams long enough holds pages for all of them until it is
  /// released, decode-only sequences included: keep max_chunk to what the
  /// engine's prefill needs.
  CacheConfig cache;
  /// Tokens per page (a power of two). A page holds the keys and values of
  /// that many tokens of one KV head of one layer.
  int page_tokens = 64;
  /// The memory budget, in pages (see SequencePool::page_bytes()).
  std::int64_t max_pages = 0;
  /// Sequences that may be live at once (their bookkeeping is allocated up
  /// front: O(max_chunk * num_query_heads * head_dim) floats each).
  int max_sequences = 64;
  /// attend_batch splits one (sequence, KV head) into at most this many
  /// token ranges when the batch has fewer tasks than threads.
  int max_token_splits = 4;

  void validate() const {
    cache.validate();
    SINKKV_CHECK(page_tokens >= 1 && page_tokens <= (1 << 20) && (page_tokens & (page_tokens - 1)) == 0,
                 "pool page_tokens " << page_tokens << " must be a power of two in [1, 2^20]");
    SINKKV_CHECK(max_pages >= 1 && max_pages <= std::numeric_limits<std::int32_t>::max(),
                 "pool max_pages " << max_pages << " outside [1, 2^31 - 1]");
    SINKKV_CHECK(max_sequences >= 1 && max_sequences <= (1 << 20),
                 "pool max_sequences " << max_sequences << " outside [1, 2^20]");
    SINKKV_CHECK(max_token_splits >= 1 && max_token_splits <= 64,
                 "pool max_token_splits " << max_token_splits << " outside [1, 64]");
  }
};

/// One sequence's queries and output in a batched attend: queries
/// [n, num_query_heads, head_dim] for the n tokens its current step
/// appended, out likewise.
template <class Src, class C>
struct BatchItem {
  SequenceId sequence;
  TokensView<Src> queries;
  MutableTokensView<C> out;
};

/// Many independent streams (sequences) in one memory budget. Each sequence
/// behaves exactly as a SinkKVCache with the pool's configuration (same
/// protocol, positions, chunks, policies, and the same arithmetic: with
/// ReferenceKernel the same outputs bit for bit; a kernel that blocks its
/// work per segment, as CpuKernel does, sees page boundaries as more
/// segments and agrees to float summation order, and so do attend_batch's
/// token-range splits when it takes them), but its K/V rows live in
/// fixed-size pages taken from the pool as its tokens arrive, up to its
/// sinks + window (+ chunk room) per KV head, and given back at once when it
/// is released or reset.
///
/// Memory: max_pages pages reserved by the constructor (committed by the OS
/// as pages are first written), plus per-sequence bookkeeping for
/// max_sequences. add(), append(), attend() and attend_batch() never
/// allocate. A step that needs more pages than are free throws
/// sinkkv::Error before anything changes; pages_needed() and free_pages()
/// tell beforehand.
///
/// Threads: different sequences may be appended to and attended from
/// different threads at the same time, and add()/release()/reset() may run
/// concurrently with them (page and slot bookkeeping is under a mutex).
/// One sequence is used by one thread at a time: two calls on the same
/// sequence must not overlap, and attend_batch() uses every sequence of its
/// batch for its whole duration (concurrent attend_batch calls queue). Observers of a sequence follow the same
/// rule; free_pages()/pages_in_use()/num_sequences() may be read any time.
/// The pool is neither copyable nor movable.
template <class T>
class SequencePool {
  static_assert(detail::ElementTraits<T>::kSupported,
                "SequencePool<T>: T must be float, double, Eigen::half or Eigen::bfloat16");

 public:
  using element_type = T;
  using compute_type = compute_t<T>;
  using Options = AttendOptions<compute_type>;
  template <class Src>
  using Item = BatchItem<Src, compute_type>;

  /// attend_batch splits a (sequence, KV head) only when each part keeps at
  /// least this many tokens.
  static constexpr int kMinTokensPerSplit = 1024;

  /// Reserves max_pages pages and the bookkeeping of max_sequences
  /// sequences. Throws sinkkv::Error for a bad configuration or memory that
  /// cannot be allocated.
  explicit SequencePool(PoolConfig config) : config_((config.validate(), std::move(config))) {
    const CacheConfig& cache = config_.cache;
    page_shift_ = 0;
    while ((1 << page_shift_) < config_.page_tokens) ++page_shift_;
    const std::uint64_t page_elements =
        2 * static_cast<std::uint64_t>(config_.page_tokens) * static_cast<std::uint64_t>(cache.head_dim);
    SINKKV_CHECK(page_elements <= std::numeric_limits<std::size_t>::max() / sizeof(T) /
                                      static_cast<std::uint64_t>(config_.max_pages),
                 "pool of " << config_.max_pages << " pages x " << page_elements << " elements overflows size_t");
    try {
      model_ = std::make_unique<const detail::CacheModel<compute_type>>(cache);
      arena_ = std::make_unique<detail::PageArena<T>>(config_.max_pages, config_.page_tokens, cache.head_dim);
      int largest_slots = 0;
      for (int g = 0; g < model_->groups.num_groups(); ++g) {
        largest_slots = std::max(largest_slots, cache.slots_of(model_->groups.policy(g)));
        pages_per_full_sequence_ += static_cast<std::int64_t>(model_->groups.num_members(g)) *
                                    ((cache.slots_of(model_->groups.policy(g)) + config_.page_tokens - 1) /
                                     config_.page_tokens);
      }
      // A head's tokens split at page boundaries: the sinks, and each of the
      // window's two ring runs, add at most one partial page.
      segments_per_head_ = (largest_slots + config_.page_tokens - 1) / config_.page_tokens + 3;
      slots_.reserve(static_cast<std::size_t>(config_.max_sequences));
      for (int s = 0; s < config_.max_sequences; ++s) slots_.push_back(std::make_unique<Slot>(*this));
      free_slots_.reserve(slots_.size());
      for (int s = config_.max_sequences; s-- > 0;) free_slots_.push_back(s);
      task_offsets_.assign(slots_.size() + 1, 0);
    } catch (const std::bad_alloc&) {
      SINKKV_CHECK(false, "cannot allocate a pool of " << config_.max_pages << " pages of "
                                                       << page_elements * sizeof(T) << " bytes and "
                                                       << config_.max_sequences << " sequences");
    }
  }

  SequencePool(const SequencePool&) = delete;
  SequencePool& operator=(const SequencePool&) = delete;

  const PoolConfig& pool_config() const { return config_; }
  const CacheConfig& config() const { return config_.cache; }

  // ---- sequences ------------------------------------------------------------

  /// A new, empty sequence. Holds no page until its first step. Throws
  /// sinkkv::Error when max_sequences are live. O(1), no allocation.
  SequenceId add() {
    std::lock_guard<std::mutex> lock(mutex_);
    SINKKV_CHECK(!free_slots_.empty(),
                 "pool: " << config_.max_sequences << " sequences are live (max_sequences); release one first");
    const int index = free_slots_.back();
    free_slots_.pop_back();
    Slot& slot = *slots_[static_cast<std::size_t>(index)];
    const std::uint32_t generation = slot.generation.load(std::memory_order_relaxed) + 1;
    slot.generation.store(generation, std::memory_order_relaxed);
    slot.live.store(true, std::memory_order_release);
    ++live_sequences_;
    return SequenceId{(static_cast<std::uint64_t>(generation) << 32) | static_cast<std::uint64_t>(index + 1)};
  }

  /// Ends a sequence: its pages are free for others at once, and its id is
  /// stale from now on. Throws sinkkv::Error for an unknown or stale id.
  void release(SequenceId id) {
    // Checked under the lock: two releases of one id must not both pass.
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = live_slot(id, "release");
    give_back_pages(slot);
    slot.sequence.clear();
    slot.live.store(false, std::memory_order_release);
    free_slots_.push_back(static_cast<int>((id.value & 0xFFFFFFFFu) - 1));
    --live_sequences_;
  }

  /// Forgets a sequence's tokens (a new conversation under the same id) and
  /// gives its pages back.
  void reset(SequenceId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = live_slot(id, "reset");
    give_back_pages(slot);
    slot.sequence.clear();
  }

  /// True while `id` names a live sequence.
  bool contains(SequenceId id) const { return find(id) != nullptr; }
  int num_sequences() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_sequences_;
  }

  // ---- the budget -------------------------------------------------------------

  /// Bytes of one page: keys and values of page_tokens tokens of one head.
  std::size_t page_bytes() const { return arena_->page_elements() * sizeof(T); }
  std::int64_t max_pages() const { return config_.max_pages; }
  std::int64_t free_pages() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return arena_->free_pages();
  }
  std::int64_t pages_in_use() const { return max_pages() - free_pages(); }
  /// Pages one sequence holds once its every head's ring is in use.
  std::int64_t pages_per_full_sequence() const { return pages_per_full_sequence_; }
  /// Pages a sequence holds now.
  std::int64_t pages_held(SequenceId id) const { return live_slot(id, "pages_held").pages_held; }
  /// Pages the sequence's next step of `num_tokens` tokens would take (0
  /// once its rings are in use).
  std::int64_t pages_needed(SequenceId id, int num_tokens = 1) const {
    const Slot& slot = live_slot(id, "pages_needed");
    SINKKV_CHECK(num_tokens >= 1 && num_tokens <= config().max_chunk,
                 "pages_needed for " << num_tokens << " tokens outside [1, max_chunk " << config().max_chunk << "]");
    return new_pages(slot, num_tokens);
  }

  // ---- one sequence (as SinkKVCache) -------------------------------------------

  /// As SinkKVCache::tokens_seen(): the step in progress included once begun.
  std::uint64_t tokens_seen(SequenceId id) const { return live_slot(id, "tokens_seen").sequence.tokens_seen(); }
  /// True when every layer holds the sequence's current step.
  bool step_complete(SequenceId id) const {
    return live_slot(id, "step_complete").sequence.protocol().step_complete();
  }
  const CachePositions& positions(SequenceId id, int layer, int kv_head) const {
    const Slot& slot = live_slot(id, "positions");
    SINKKV_CHECK(layer >= 0 && layer < config().num_layers && kv_head >= 0 && kv_head < config().num_kv_heads,
                 "positions: layer " << layer << ", KV head " << kv_head << " outside [0, " << config().num_layers
                                     << ") x [0, " << config().num_kv_heads << ")");
    return slot.sequence.positions(model_->groups.group_of(layer, kv_head));
  }
  /// Log-sum-exp of query `query`, query head `head`, of the sequence's last
  /// attend (single or batched).
  compute_type log_sum_exp(SequenceId id, int query, int head) const {
    const Slot& slot = live_slot(id, "log_sum_exp");
    const int n = slot.sequence.protocol().step_length();
    SINKKV_CHECK(slot.sequence.last_attended_layer >= 0, "log_sum_exp: nothing was attended yet");
    SINKKV_CHECK(query >= 0 && query < n && head >= 0 && head < config().query_heads(),
                 "log_sum_exp(" << query << ", " << head << ") outside [0, " << n << ") x [0, "
                                << config().query_heads() << ")");
    // Each KV head is its own run: its query heads' rows form one block.
    const int group = config().group_size();
    const int first_head = head / group * group;
    return slot.sequence.log_sum_exp()[static_cast<std::ptrdiff_t>(n) * first_head + query * group + (head - first_head)];
  }

  /// As SinkKVCache::begin_step, for one sequence; takes the pages the step
  /// needs (throws, changing nothing, when too few are free).
  void begin_step(SequenceId id, std::uint64_t stream_index, int num_tokens = 1) {
    Slot& slot = live_slot(id, "begin_step");
    slot.sequence.protocol().check_begin_step(stream_index, num_tokens, config().max_chunk);
    take_pages(slot, id, num_tokens);
    slot.sequence.advance(num_tokens);
    slot.sequence.protocol().record_begin_step(num_tokens);
  }

  /// As SinkKVCache::append, for one sequence.
  template <class Src>
  void append(SequenceId id, int layer, const HeadsView<Src>& keys, const HeadsView<Src>& values) {
    append(id, layer, single(keys), single(values));
  }
  template <class Src>
  void append(SequenceId id, int layer, const TokensView<Src>& keys, const TokensView<Src>& values) {
    Slot& slot = live_slot(id, "append");
    detail::PagedRows<T> rows = rows_of(slot);
    detail::append_rows(slot.sequence, rows, layer, keys, values, [&](int count) { take_pages(slot, id, count); });
  }

  /// As SinkKVCache::attend, for one sequence (the kernel runs once per KV
  /// head: each head's pages are its own).
  template <class Kernel, class Src>
  void attend(SequenceId id, int layer, const HeadsView<Src>& query, const MutableHeadsView<compute_type>& out,
              Kernel&& kernel, const Options& options = {}) {
    attend(id, layer, single(query),
           MutableTokensView<compute_type>{out.data, 1, out.num_heads, out.head_dim, 0, out.head_stride},
           std::forward<Kernel>(kernel), options);
  }
  template <class Kernel, class Src>
  void attend(SequenceId id, int layer, const TokensView<Src>& queries, const MutableTokensView<compute_type>& out,
              Kernel&& kernel, const Options& options = {}) {
    Slot& slot = live_slot(id, "attend");
    detail::attend_rows(slot.sequence, rows_of(slot), layer, queries, out, kernel, options);
  }

  // ---- many sequences at once ------------------------------------------------------

  /// attend_batch on the calling thread alone (`pool` = nullptr).
  template <class Src, class Kernel>
  void attend_batch(int layer, const Item<Src>* items, int count, Kernel&& kernel, std::nullptr_t,
                    const Options& options = {}) {
    attend_batch(layer, items, count, kernel, static_cast<ThreadPool*>(nullptr), options);
  }

  /// Attention of `count` sequences on `layer` in one call: each item's
  /// queries (one per token its current step appended: single tokens and
  /// prefill chunks may mix) over what its sequence keeps, written to the
  /// item's output. Work is spread over `pool` (a sinkkv::ThreadPool or any
  /// type of is_task_pool_v; nullptr runs on the caller) by (sequence, KV
  /// head), each reading its K/V once; when the batch has fewer such tasks
  /// than threads, long single-token caches are also split into token ranges
  /// (at page boundaries) merged by log-sum-exp (max_token_splits = 1 turns
  /// that off, so results do not depend on the batch or the thread count).
  /// `kernel` is called concurrently from the pool's threads: it must allow
  /// that and must not throw (CpuKernel and ReferenceKernel qualify;
  /// ParallelCpuKernel, whose scratch is per object, is rejected at compile
  /// time). `pool` must not run anything else during the call (its run() is
  /// one caller at a time). Every item is checked before any work: a bad item
  /// throws sinkkv::Error and no output is written. No allocation.
  template <class Src, class Kernel, class TaskPool>
  void attend_batch(int layer, const Item<Src>* items, int count, Kernel&& kernel, TaskPool* pool,
                    const Options& options = {}) {
    static_assert(!std::is_same_v<std::decay_t<Kernel>, ParallelCpuKernel>,
                  "sinkkv::SequencePool::attend_batch calls the kernel from several threads at once; "
                  "ParallelCpuKernel allows one call at a time per object: pass a CpuKernel");
    static_assert(is_task_pool_v<TaskPool>,
                  "sinkkv::SequencePool::attend_batch: the pool needs `int num_threads() const` and "
                  "`run(int count, IndexTask& task)`");
    static_assert(is_attention_kernel_v<Kernel, T> || is_chunk_kernel_v<Kernel, T>,
                  "sinkkv: the kernel must be callable as kernel(const AttentionArgs<T>&, ...) and/or "
                  "kernel(const ChunkArgs<T>&, ...); see attention.hpp");
    SINKKV_CHECK(count >= 0 && count <= config_.max_sequences,
                 "attend_batch of " << count << " items outside [0, max_sequences " << config_.max_sequences << "]");
    SINKKV_CHECK(count == 0 || items != nullptr, "attend_batch: items pointer is null");
    const CacheConfig& c = config();
    SINKKV_CHECK(layer >= 0 && layer < c.num_layers,
                 "attend_batch: layer " << layer << " outside [0, num_layers " << c.num_layers << ")");
    detail::check_options(options, c.query_heads(), layer);
    std::lock_guard<std::mutex> batch_lock(batch_mutex_);  // one batch at a time: it uses the pool's task table
    ++batch_mark_;
    for (int i = 0; i < count; ++i) {
      Slot& slot = live_slot(items[i].sequence, "attend_batch");
      SINKKV_CHECK(slot.batch_mark != batch_mark_,
                   "attend_batch: item " << i << " repeats sequence " << items[i].sequence.value);
      slot.batch_mark = batch_mark_;
      const int n = items[i].queries.num_tokens;
      slot.sequence.protocol().check_attend(layer, n);
      detail::check_input(items[i].queries, n, c.query_heads(), c.head_dim, "query");
      detail::check_output(items[i].out, n, c.query_heads(), c.head_dim, layer);
    }

    const int threads = pool != nullptr ? std::max(1, static_cast<int>(pool->num_threads())) : 1;
    const compute_type scale =
        options.scale != 0 ? options.scale : compute_type(1) / std::sqrt(static_cast<compute_type>(c.head_dim));
    // 1. per item: rotate its queries and list every KV head's segments.
    auto prepare = [&](int i) { prepare_batch_item<is_attention_kernel_v<Kernel, T>>(layer, items[i], scale); };
    run_tasks(pool, count, prepare);

    // 2. tasks: (item, KV head, token range).
    const int heads = c.num_kv_heads;
    const int units = count * heads;
    const int wanted = 4 * threads;
    int total = 0;
    for (int i = 0; i < count; ++i) {
      Slot& slot = slot_of(items[i].sequence);
      int splits = 1;
      if (units < wanted && items[i].queries.num_tokens == 1 && is_attention_kernel_v<Kernel, T>) {
        splits = std::min({config_.max_token_splits, slot.most_tokens / kMinTokensPerSplit, (wanted + units - 1) / units});
        splits = std::max(1, splits);
      }
      slot.splits = splits;
      task_offsets_[static_cast<std::size_t>(i)] = total;
      total += heads * splits;
    }
    task_offsets_[static_cast<std::size_t>(count)] = total;
    auto work = [&](int task) {
      const int i = static_cast<int>(std::upper_bound(task_offsets_.begin(), task_offsets_.begin() + count + 1, task) -
                                     task_offsets_.begin()) - 1;
      Slot& slot = slot_of(items[i].sequence);
      const int local = task - task_offsets_[static_cast<std::size_t>(i)];
      run_batch_task(slot, items[i], local / slot.splits, local % slot.splits, kernel);
    };
    run_tasks(pool, total, work);

    // 3. per item: merge the token ranges, apply sink logits.
    auto finish = [&](int i) { finish_batch_item(layer, items[i], options); };
    run_tasks(pool, count, finish);
  }

 private:
  /// Everything one sequence owns besides its pages' contents.
  struct Slot {
    explicit Slot(const SequencePool& pool)
        : sequence(*pool.model_, pool.segments_per_head_ * pool.config_.cache.num_kv_heads),
          table(pool.config_.cache, pool.model_->groups, pool.config_.page_tokens),
          partials(static_cast<std::size_t>(pool.config_.cache.num_kv_heads) *
                       static_cast<std::size_t>(pool.config_.max_token_splits - 1) *
                       static_cast<std::size_t>(pool.config_.cache.group_size()) *
                       static_cast<std::size_t>(pool.config_.cache.head_dim + 1),
                   compute_type(0)),
          head_segments(static_cast<std::size_t>(pool.config_.cache.num_kv_heads), 0),
          head_args(static_cast<std::size_t>(pool.config_.cache.num_kv_heads)),
          head_chunk_args(static_cast<std::size_t>(pool.config_.cache.num_kv_heads)) {}

    detail::Sequence<T> sequence;
    detail::PageTable table;
    std::int64_t pages_held = 0;
    // Atomic: contains() and the stale-id check of every call read them
    // while add() and release() (under mutex_) write another id's view.
    std::atomic<std::uint32_t> generation{0};
    std::atomic<bool> live{false};
    // attend_batch scratch
    std::uint64_t batch_mark = 0;
    int splits = 1;
    int most_tokens = 0;                              // tokens of the largest head of the batch call
    detail::Vector<compute_type> partials;            // [kv_heads][splits - 1][group][head_dim + 1]
    detail::Vector<int> head_segments;                // [kv_heads] segments listed per head
    detail::Vector<AttentionArgs<T>> head_args;       // [kv_heads] one-token steps
    detail::Vector<ChunkArgs<T>> head_chunk_args;     // [kv_heads] chunks
  };

  const Slot* find(SequenceId id) const {
    const std::uint64_t index = id.value & 0xFFFFFFFFu;
    if (index == 0 || index > slots_.size()) return nullptr;
    const Slot& slot = *slots_[static_cast<std::size_t>(index - 1)];
    if (!slot.live.load(std::memory_order_acquire) ||
        slot.generation.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(id.value >> 32)) {
      return nullptr;
    }
    return &slot;
  }
  const Slot& live_slot(SequenceId id, const char* operation) const {
    const Slot* slot = find(id);
    SINKKV_CHECK(slot != nullptr, operation << ": sequence " << id.value
                                            << " is not in this pool (never added, or released)");
    return *slot;
  }
  Slot& live_slot(SequenceId id, const char* operation) {
    return const_cast<Slot&>(std::as_const(*this).live_slot(id, operation));
  }
  Slot& slot_of(SequenceId id) { return *slots_[static_cast<std::size_t>((id.value & 0xFFFFFFFFu) - 1)]; }

  detail::PagedRows<T> rows_of(Slot& slot) const {
    return detail::PagedRows<T>(*arena_, slot.table, page_shift_, config_.cache.head_dim);
  }

  template <class Src>
  static TokensView<Src> single(const HeadsView<Src>& view) {
    return TokensView<Src>{view.data, 1, view.num_heads, view.head_dim, 0, view.head_stride, view.element_stride};
  }

  /// Pages a step of `count` tokens adds: per group, the page blocks its
  /// slots in use grow into, for every member.
  std::int64_t new_pages(const Slot& slot, int count) const {
    std::int64_t total = 0;
    for (int g = 0; g < model_->groups.num_groups(); ++g) {
      const CachePositions& positions = slot.sequence.positions(g);
      const std::uint64_t after =
          std::min<std::uint64_t>(positions.tokens_seen() + static_cast<std::uint64_t>(count),
                                  static_cast<std::uint64_t>(positions.slots()));
      const std::int64_t blocks_before = (positions.slots_in_use() + config_.page_tokens - 1) >> page_shift_;
      const std::int64_t blocks_after = (static_cast<std::int64_t>(after) + config_.page_tokens - 1) >> page_shift_;
      total += (blocks_after - blocks_before) * model_->groups.num_members(g);
    }
    return total;
  }

  /// Takes the pages a step of `count` tokens needs, or throws changing
  /// nothing.
  void take_pages(Slot& slot, SequenceId id, int count) {
    const std::int64_t needed = new_pages(slot, count);
    if (needed == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    SINKKV_CHECK(arena_->free_pages() >= needed,
                 "pool: sequence " << id.value << " needs " << needed << " more pages for its next step of " << count
                                   << " tokens, but " << arena_->free_pages() << " of " << config_.max_pages
                                   << " are free");
    for (int g = 0; g < model_->groups.num_groups(); ++g) {
      const CachePositions& positions = slot.sequence.positions(g);
      const int after = static_cast<int>(std::min<std::uint64_t>(positions.tokens_seen() + static_cast<std::uint64_t>(count),
                                                                  static_cast<std::uint64_t>(positions.slots())));
      const int first_block = (positions.slots_in_use() + config_.page_tokens - 1) >> page_shift_;
      const int end_block = (after + config_.page_tokens - 1) >> page_shift_;
      for (int member = 0; member < model_->groups.num_members(g); ++member) {
        for (int block = first_block; block < end_block; ++block) slot.table.at(g, member, block) = arena_->take();
      }
    }
    slot.pages_held += needed;
  }

  /// @pre mutex_ held
  void give_back_pages(Slot& slot) {
    for (std::int32_t& page : slot.table.entries()) {
      if (page >= 0) arena_->give_back(page);
      page = -1;
    }
    slot.pages_held = 0;
  }

  template <class TaskPool, class Work>
  static void run_tasks(TaskPool* pool, int count, Work& work) {
    if (pool == nullptr || count <= 1) {
      for (int i = 0; i < count; ++i) work(i);
      return;
    }
    IndexTask task(work);
    pool->run(count, task);
  }

  /// Rotates one item's queries and lists each KV head's segments: as
  /// AttentionArgs for a one-token step on a kernel that takes single
  /// queries (kSingle), else as ChunkArgs.
  template <bool kSingle, class Src>
  void prepare_batch_item(int layer, const Item<Src>& item, compute_type scale) {
    Slot& slot = slot_of(item.sequence);
    detail::Sequence<T>& sequence = slot.sequence;
    const detail::PagedRows<T> rows = rows_of(slot);
    const int n = item.queries.num_tokens;
    const int group = config().group_size();
    const int head_dim = config().head_dim;
    slot.most_tokens = 0;
    detail::for_each_kernel_run<detail::PagedRows<T>>(model_->groups, layer, [&](const detail::PolicyGroups::HeadRun& run) {
      const int h = run.first_kv_head;
      const std::ptrdiff_t block = static_cast<std::ptrdiff_t>(n) * h * group;
      compute_type* stream_rows = sequence.stream_rows() + block * head_dim;
      const compute_type* sink_rows =
          detail::load_queries(sequence, run, item.queries, stream_rows, sequence.sink_rows() + block * head_dim);
      if (n == 1 && kSingle) {
        KVSegment<T>* segments = sequence.segments() + static_cast<std::ptrdiff_t>(h) * segments_per_head_;
        AttentionArgs<T>& args = slot.head_args[static_cast<std::size_t>(h)];
        args = detail::single_query_args(sequence, rows, run, stream_rows, sink_rows, scale, segments);
        slot.head_segments[static_cast<std::size_t>(h)] = args.num_segments;
        slot.most_tokens = std::max(slot.most_tokens, args.num_tokens());
      } else {
        ChunkSegment<T>* segments = sequence.chunk_segments() + static_cast<std::ptrdiff_t>(h) * segments_per_head_;
        slot.head_chunk_args[static_cast<std::size_t>(h)] =
            detail::chunk_args(sequence, rows, run, stream_rows, sink_rows, scale, segments);
      }
    });
  }

  template <class Src, class Kernel>
  void run_batch_task(Slot& slot, const Item<Src>& item, int h, int split, Kernel& kernel) {
    const int n = item.queries.num_tokens;
    const int group = config().group_size();
    const int head_dim = config().head_dim;
    compute_type* lse = slot.sequence.log_sum_exp() + static_cast<std::ptrdiff_t>(n) * h * group;
    compute_type* out_rows = item.out.data + static_cast<std::ptrdiff_t>(h) * group * item.out.head_stride;
    if (n > 1 || !is_attention_kernel_v<Kernel, T>) {
      const ChunkArgs<T>& chunk = slot.head_chunk_args[static_cast<std::size_t>(h)];
      if constexpr (is_chunk_kernel_v<Kernel, T>) {
        kernel(chunk, ChunkOutput<compute_type>{out_rows, item.out.token_stride, item.out.head_stride, lse});
      } else {
        // The head's single-query segment area is free during a chunk step.
        detail::attend_per_query(chunk, ChunkOutput<compute_type>{out_rows, item.out.token_stride, item.out.head_stride, lse},
                                 kernel, slot.sequence.segments() + static_cast<std::ptrdiff_t>(h) * segments_per_head_);
      }
      return;
    }
    const AttentionArgs<T>& all = slot.head_args[static_cast<std::size_t>(h)];
    // Split `split` of `slot.splits`: whole segments (pages) around equal
    // token counts.
    const int total = all.num_tokens();
    const auto boundary = [&](int part) {
      const std::int64_t target = static_cast<std::int64_t>(total) * part / slot.splits;
      int s = 0;
      for (std::int64_t seen = 0; s < all.num_segments && seen < target; ++s) seen += all.segments[s].length;
      return s;
    };
    const int first = split == 0 ? 0 : boundary(split);
    const int last = split + 1 == slot.splits ? all.num_segments : boundary(split + 1);
    AttentionArgs<T> args = all;
    args.segments = all.segments + first;
    args.num_segments = last - first;
    AttentionOutput<compute_type> out{out_rows, item.out.head_stride, lse};
    if (split > 0) out = partial_output(slot, h, split);
    if (args.num_segments == 0) {  // a part without tokens: the contract's empty result
      for (int q = 0; q < group; ++q) {
        std::fill(out.data + q * out.head_stride, out.data + q * out.head_stride + head_dim, compute_type(0));
        out.log_sum_exp[q] = -std::numeric_limits<compute_type>::infinity();
      }
      return;
    }
    if constexpr (is_attention_kernel_v<Kernel, T>) kernel(args, out);
  }

  AttentionOutput<compute_type> partial_output(Slot& slot, int h, int split) {
    const int group = config().group_size();
    const std::size_t rows = static_cast<std::size_t>(group) * static_cast<std::size_t>(config().head_dim + 1);
    compute_type* base = slot.partials.data() +
                         (static_cast<std::size_t>(h) * static_cast<std::size_t>(config_.max_token_splits - 1) +
                          static_cast<std::size_t>(split - 1)) *
                             rows;
    return AttentionOutput<compute_type>{base, config().head_dim,
                                         base + static_cast<std::ptrdiff_t>(group) * config().head_dim};
  }

  template <class Src>
  void finish_batch_item(int layer, const Item<Src>& item, const Options& options) {
    (void)layer;
    Slot& slot = slot_of(item.sequence);
    const int n = item.queries.num_tokens;
    const int group = config().group_size();
    const int head_dim = config().head_dim;
    for (int h = 0; h < config().num_kv_heads; ++h) {
      compute_type* lse = slot.sequence.log_sum_exp() + static_cast<std::ptrdiff_t>(n) * h * group;
      compute_type* out_rows = item.out.data + static_cast<std::ptrdiff_t>(h) * group * item.out.head_stride;
      const AttentionOutput<compute_type> out{out_rows, item.out.head_stride, lse};
      for (int split = 1; n == 1 && split < slot.splits; ++split) {
        merge_partial(group, head_dim, out, partial_output(slot, h, split));
      }
      if (options.sink_logits != nullptr) {
        for (int i = 0; i < n; ++i) {
          apply_sink_logits(group, head_dim, options.sink_logits + h * group,
                            AttentionOutput<compute_type>{out_rows + i * item.out.token_stride, item.out.head_stride,
                                                          lse + i * group});
        }
      }
    }
    slot.sequence.last_attended_layer = layer;
  }

  PoolConfig config_;
  int page_shift_ = 0;
  int segments_per_head_ = 0;
  std::int64_t pages_per_full_sequence_ = 0;
  std::unique_ptr<const detail::CacheModel<compute_type>> model_;  // shared by every sequence
  std::unique_ptr<detail::PageArena<T>> arena_;
  detail::Vector<std::unique_ptr<Slot>> slots_;  // [max_sequences]
  detail::Vector<int> free_slots_;               // indices of slots not live
  int live_sequences_ = 0;
  mutable std::mutex mutex_;                  // guards arena_'s free list, free_slots_, live flags
  std::mutex batch_mutex_;                    // serialises attend_batch calls
  std::uint64_t batch_mark_ = 0;              // attend_batch call counter (duplicate items)
  detail::Vector<int> task_offsets_;             // [max_sequences + 1] attend_batch: first task of each item
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv

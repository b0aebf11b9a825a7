// sinkkv: which stream tokens the cache holds, and where.
//
// Every cached token has three positions, never to be confused:
//   stream index   - its index in the whole stream (0, 1, 2, ... past 2^32);
//   slot           - where its K/V rows live in storage (sinks in slots
//                    0..S-1, the window as a ring in slots S..S+R-1);
//   cache position - its position for RoPE/ALiBi: sinks at 0..S-1, window
//                    tokens after them in stream order, newest last.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

#include "detail/abi_namespace.hpp"
#include "error.hpp"

namespace sinkkv {
inline namespace SINKKV_ABI_NAMESPACE {

/// Bookkeeping of a sink + rolling-window cache, independent of storage.
///
/// The *logical* cache after every token is the StreamingLLM one: the first
/// num_sinks tokens plus the `window` most recent. Physically the ring has
/// `ring_slots >= window` slots, so that a chunk of up to
/// chunk_room() = ring_slots - window + 1 tokens can be appended at once
/// while its oldest query still finds its whole window: a ring slot is
/// reused only ring_slots tokens later.
///
/// Invariants: size() == min(tokens_seen(), capacity()); the cached tokens
/// are stream indices [0, cached_sinks()) and [first_window_index(),
/// tokens_seen()); cache position i holds the i-th of those in stream order;
/// the ring still holds every window token of [first_kept_index(),
/// tokens_seen()).
/// Cost: push() is O(1) with no division; every query is O(1).
class CachePositions {
 public:
  /// One physically contiguous run of window slots, in stream order.
  struct WindowRun {
    int first_slot = 0;
    int length = 0;
    std::uint64_t first_stream_index = 0;
  };

  /// Throws sinkkv::Error unless num_sinks >= 0, window >= 1 and
  /// window <= ring_slots <= 2^30 - num_sinks (ring_slots 0 means window).
  CachePositions(int num_sinks, int window, int ring_slots = 0)
      : num_sinks_(num_sinks), window_(window), ring_slots_(ring_slots == 0 ? window : ring_slots) {
    SINKKV_CHECK(num_sinks >= 0, "num_sinks " << num_sinks << " must be >= 0");
    SINKKV_CHECK(window >= 1, "window " << window << " must be >= 1");
    SINKKV_CHECK(ring_slots_ >= window, "ring_slots " << ring_slots_ << " must be >= window " << window);
    SINKKV_CHECK(static_cast<std::int64_t>(num_sinks) + ring_slots_ <= (std::int64_t{1} << 30),
                 "num_sinks " << num_sinks << " + ring slots " << ring_slots_ << " exceeds 2^30 slots");
  }

  /// Records `count` more tokens (1 <= count <= chunk_room()): each takes
  /// the next sink slot while sinks are not all seen, else the next ring
  /// slot (the slot of the token ring_slots() earlier).
  void push(int count = 1) noexcept {
    SINKKV_ASSERT(count >= 1 && count <= chunk_room());
    const std::uint64_t sinks = static_cast<std::uint64_t>(num_sinks_);
    const std::uint64_t seen = tokens_seen_ + static_cast<std::uint64_t>(count);
    if (seen > sinks) {
      // Window tokens before this push, and after it.
      const std::uint64_t before = tokens_seen_ > sinks ? tokens_seen_ - sinks : 0;
      int advance = static_cast<int>(seen - sinks - before);  // <= count <= ring_slots
      if (before == 0) {
        newest_ring_ = advance - 1;
      } else {
        newest_ring_ += advance;
        if (newest_ring_ >= ring_slots_) newest_ring_ -= ring_slots_;
      }
    }
    tokens_seen_ = seen;
  }

  /// Jumps to the state after `tokens_seen` tokens, as if pushed one by one
  /// (restoring a snapshot). O(1), one division.
  void seek(std::uint64_t tokens_seen) noexcept {
    tokens_seen_ = tokens_seen;
    const std::uint64_t sinks = static_cast<std::uint64_t>(num_sinks_);
    newest_ring_ = tokens_seen > sinks
                       ? static_cast<int>((tokens_seen - sinks - 1) % static_cast<std::uint64_t>(ring_slots_))
                       : 0;
  }

  /// Forgets every token (a new sequence).
  void clear() noexcept {
    tokens_seen_ = 0;
    newest_ring_ = 0;
  }

  int num_sinks() const noexcept { return num_sinks_; }
  int window() const noexcept { return window_; }
  /// Tokens the logical cache holds at most: num_sinks + window.
  int capacity() const noexcept { return num_sinks_ + window_; }
  /// Physical ring slots (>= window).
  int ring_slots() const noexcept { return ring_slots_; }
  /// Storage slots: num_sinks + ring_slots.
  int slots() const noexcept { return num_sinks_ + ring_slots_; }
  /// The most tokens one push() may add.
  int chunk_room() const noexcept { return ring_slots_ - window_ + 1; }
  std::uint64_t tokens_seen() const noexcept { return tokens_seen_; }

  int size() const noexcept {
    return static_cast<int>(std::min<std::uint64_t>(tokens_seen_, static_cast<std::uint64_t>(capacity())));
  }
  int cached_sinks() const noexcept {
    return static_cast<int>(std::min<std::uint64_t>(tokens_seen_, static_cast<std::uint64_t>(num_sinks_)));
  }
  int cached_window() const noexcept { return size() - cached_sinks(); }
  /// Tokens dropped from the (logical) window so far.
  std::uint64_t evicted() const noexcept { return tokens_seen_ - static_cast<std::uint64_t>(size()); }
  /// Storage slots holding a token, sinks and ring (<= slots()).
  int slots_in_use() const noexcept {
    return static_cast<int>(std::min<std::uint64_t>(tokens_seen_, static_cast<std::uint64_t>(slots())));
  }

  /// Stream index of the oldest window token (== tokens_seen() when the
  /// window is empty).
  std::uint64_t first_window_index() const noexcept {
    return static_cast<std::uint64_t>(cached_sinks()) + evicted();
  }
  /// Stream index of the oldest window token still in the ring (<=
  /// first_window_index(); older by up to chunk_room() - 1).
  std::uint64_t first_kept_index() const noexcept {
    const std::uint64_t sinks = static_cast<std::uint64_t>(cached_sinks());
    const std::uint64_t ring = static_cast<std::uint64_t>(ring_slots_);
    return tokens_seen_ - sinks > ring ? tokens_seen_ - ring : sinks;
  }

  /// @pre tokens_seen() > 0
  std::uint64_t newest_stream_index() const noexcept { return tokens_seen_ - 1; }
  /// @pre tokens_seen() > 0
  int newest_slot() const noexcept {
    return tokens_seen_ <= static_cast<std::uint64_t>(num_sinks_) ? static_cast<int>(tokens_seen_ - 1)
                                                                   : num_sinks_ + newest_ring_;
  }
  /// Cache position of the newest token, i.e. of the query. @pre tokens_seen() > 0
  int query_position() const noexcept { return size() - 1; }

  /// The cache position stream token t had when it was the newest (its
  /// query position): t itself until the first eviction, then the last
  /// position of a full cache. O(1), any t.
  std::uint64_t query_position_of(std::uint64_t stream_index) const noexcept {
    const std::uint64_t full = static_cast<std::uint64_t>(capacity());
    return stream_index < full ? stream_index : full - 1;
  }

  /// Stream index of the token at a cache position; throws if out of range.
  std::uint64_t stream_index(int cache_position) const {
    check_cache_position(cache_position);
    const int sinks = cached_sinks();
    if (cache_position < sinks) return static_cast<std::uint64_t>(cache_position);
    return first_window_index() + static_cast<std::uint64_t>(cache_position - sinks);
  }

  /// Storage slot of the token at a cache position; throws if out of range.
  int slot(int cache_position) const {
    check_cache_position(cache_position);
    if (cache_position < cached_sinks()) return cache_position;
    return slot_of(stream_index(cache_position));
  }

  /// Storage slot of a stream token the storage still holds: a sink or a
  /// window token of [first_kept_index(), tokens_seen()). O(1), no division.
  int slot_of(std::uint64_t stream_index) const noexcept {
    SINKKV_ASSERT(stream_index < tokens_seen_);
    if (stream_index < static_cast<std::uint64_t>(num_sinks_)) return static_cast<int>(stream_index);
    SINKKV_ASSERT(stream_index >= first_kept_index());
    int ring = newest_ring_ - static_cast<int>(newest_stream_index() - stream_index);
    if (ring < 0) ring += ring_slots_;
    return num_sinks_ + ring;
  }

  /// Cache position of a stream token, or nullopt if it was evicted or not
  /// yet seen.
  std::optional<int> cache_position(std::uint64_t stream_index) const noexcept {
    if (stream_index >= tokens_seen_) return std::nullopt;
    const int sinks = cached_sinks();
    if (stream_index < static_cast<std::uint64_t>(sinks)) return static_cast<int>(stream_index);
    const std::uint64_t first = first_window_index();
    if (stream_index < first) return std::nullopt;
    return sinks + static_cast<int>(stream_index - first);
  }

  /// Window tokens [first, last) (stream indices; all kept, all >=
  /// num_sinks) as at most two runs of consecutive slots, oldest first.
  /// Returns how many runs were written (0 for an empty range).
  int window_runs(std::uint64_t first, std::uint64_t last, std::array<WindowRun, 2>& runs) const noexcept {
    if (first >= last) return 0;
    SINKKV_ASSERT(first >= first_kept_index() && last <= tokens_seen_ && first >= static_cast<std::uint64_t>(num_sinks_));
    const int count = static_cast<int>(last - first);
    const int first_ring = slot_of(first) - num_sinks_;
    const int first_length = std::min(count, ring_slots_ - first_ring);
    runs[0] = WindowRun{num_sinks_ + first_ring, first_length, first};
    if (first_length == count) return 1;
    runs[1] = WindowRun{num_sinks_, count - first_length, first + static_cast<std::uint64_t>(first_length)};
    return 2;
  }

  /// The logical window as at most two runs of consecutive slots, oldest
  /// first. Returns how many runs were written (0 when the window is empty).
  int window_runs(std::array<WindowRun, 2>& runs) const noexcept {
    return window_runs(first_window_index(), tokens_seen_, runs);
  }

 private:
  void check_cache_position(int cache_position) const {
    SINKKV_CHECK(cache_position >= 0 && cache_position < size(),
                 "cache_position " << cache_position << " outside [0, size " << size() << ")");
  }

  int num_sinks_;
  int window_;
  int ring_slots_;
  std::uint64_t tokens_seen_ = 0;
  int newest_ring_ = 0;  // ring index (slot - num_sinks) of the newest window token
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv

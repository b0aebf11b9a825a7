// sinkkv: which stream tokens the cache holds, and where.
//
// Every cached token has three positions, never to be confused:
//   stream index   - its index in the whole stream (0, 1, 2, ... past 2^32);
//   slot           - where its K/V rows live in storage (sinks in slots
//                    0..S-1, the window as a ring in slots S..S+W-1);
//   cache position - its position for RoPE/ALiBi: sinks at 0..S-1, window
//                    tokens after them in stream order, newest last.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

#include "error.hpp"

namespace sinkkv {

/// Bookkeeping of a sink + rolling-window cache, independent of storage.
///
/// Invariants: size() == min(tokens_seen(), capacity()); the cached tokens
/// are stream indices [0, cached_sinks()) and [first_window_index(),
/// tokens_seen()); cache position i holds the i-th of those in stream order.
/// Cost: push() is O(1) with no division; every query is O(1).
class CachePositions {
 public:
  /// One physically contiguous run of window slots, in stream order.
  struct WindowRun {
    int first_slot = 0;
    int length = 0;
    std::uint64_t first_stream_index = 0;
  };

  CachePositions(int num_sinks, int window) : num_sinks_(num_sinks), window_(window) {
    SINKKV_CHECK(num_sinks >= 0, "num_sinks " << num_sinks << " must be >= 0");
    SINKKV_CHECK(window >= 1, "window " << window << " must be >= 1");
  }

  /// Records one more token: it takes the next sink slot while sinks are not
  /// all seen, else the ring slot of the oldest window token (evicting it
  /// once the window is full).
  void push() noexcept {
    if (tokens_seen_ >= static_cast<std::uint64_t>(num_sinks_)) {
      newest_ring_ = (tokens_seen_ == static_cast<std::uint64_t>(num_sinks_) || newest_ring_ + 1 == window_)
                         ? 0
                         : newest_ring_ + 1;
    }
    ++tokens_seen_;
  }

  /// Forgets every token (a new sequence).
  void clear() noexcept {
    tokens_seen_ = 0;
    newest_ring_ = 0;
  }

  int num_sinks() const noexcept { return num_sinks_; }
  int window() const noexcept { return window_; }
  int capacity() const noexcept { return num_sinks_ + window_; }
  std::uint64_t tokens_seen() const noexcept { return tokens_seen_; }

  int size() const noexcept {
    return static_cast<int>(std::min<std::uint64_t>(tokens_seen_, static_cast<std::uint64_t>(capacity())));
  }
  int cached_sinks() const noexcept {
    return static_cast<int>(std::min<std::uint64_t>(tokens_seen_, static_cast<std::uint64_t>(num_sinks_)));
  }
  int cached_window() const noexcept { return size() - cached_sinks(); }
  /// Tokens dropped from the window so far.
  std::uint64_t evicted() const noexcept { return tokens_seen_ - static_cast<std::uint64_t>(size()); }

  /// Stream index of the oldest window token (== tokens_seen() when the
  /// window is empty).
  std::uint64_t first_window_index() const noexcept {
    return static_cast<std::uint64_t>(cached_sinks()) + evicted();
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
    const int sinks = cached_sinks();
    if (cache_position < sinks) return cache_position;
    // The oldest window token sits just after the newest in the ring once it
    // is full, and at ring index 0 before.
    const int oldest_ring = cached_window() == window_ ? (newest_ring_ + 1) % window_ : 0;
    return num_sinks_ + (oldest_ring + (cache_position - sinks)) % window_;
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

  /// The window as at most two runs of consecutive slots, oldest first.
  /// Returns how many runs were written (0 when the window is empty).
  int window_runs(std::array<WindowRun, 2>& runs) const noexcept {
    const int count = cached_window();
    if (count == 0) return 0;
    const int oldest_ring = count == window_ ? (newest_ring_ + 1) % window_ : 0;
    const int first_length = std::min(count, window_ - oldest_ring);
    runs[0] = WindowRun{num_sinks_ + oldest_ring, first_length, first_window_index()};
    if (first_length == count) return 1;
    runs[1] = WindowRun{num_sinks_, count - first_length,
                        first_window_index() + static_cast<std::uint64_t>(first_length)};
    return 2;
  }

 private:
  void check_cache_position(int cache_position) const {
    SINKKV_CHECK(cache_position >= 0 && cache_position < size(),
                 "cache_position " << cache_position << " outside [0, size " << size() << ")");
  }

  int num_sinks_;
  int window_;
  std::uint64_t tokens_seen_ = 0;
  int newest_ring_ = 0;  // ring index (slot - num_sinks) of the newest window token
};

}  // namespace sinkkv

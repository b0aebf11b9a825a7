// sinkkv::detail: K/V rows in fixed-size pages shared by many sequences.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "abi_namespace.hpp"
#include "policy_groups.hpp"
#include "storage.hpp"
#include "tagged_vector.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// The pages of a pool: one allocation of max_pages pages, each the keys
/// and values of page_tokens tokens of one KV head of one layer ([K/V]
/// [page_tokens][head_dim]), and a stack of free page ids. The memory is
/// reserved once and never zero-filled, so the OS commits a page's memory
/// when it is first written. Not thread-safe (the pool locks around it).
template <class T>
class PageArena {
 public:
  PageArena(std::int64_t max_pages, int page_tokens, int head_dim)
      : page_elements_(2 * static_cast<std::size_t>(page_tokens) * static_cast<std::size_t>(head_dim)),
        rows_(static_cast<std::size_t>(max_pages) * page_elements_, /*zero=*/false) {
    free_.reserve(static_cast<std::size_t>(max_pages));
    for (std::int64_t page = max_pages; page-- > 0;) free_.push_back(static_cast<std::int32_t>(page));
    max_pages_ = max_pages;
  }

  std::int64_t max_pages() const { return max_pages_; }
  std::int64_t free_pages() const { return static_cast<std::int64_t>(free_.size()); }
  std::size_t page_elements() const { return page_elements_; }
  T* page(std::int32_t id) { return rows_.data() + static_cast<std::size_t>(id) * page_elements_; }
  const T* page(std::int32_t id) const { return rows_.data() + static_cast<std::size_t>(id) * page_elements_; }

  /// @pre free_pages() > 0
  std::int32_t take() {
    const std::int32_t id = free_.back();
    free_.pop_back();
    return id;
  }
  /// @pre id was taken and not given back since
  void give_back(std::int32_t id) { free_.push_back(id); }

 private:
  std::size_t page_elements_;
  AlignedArray<T> rows_;       // [max_pages][2][page_tokens][head_dim]
  Vector<std::int32_t> free_;  // ids of free pages (a stack: recently freed pages are reused first)
  std::int64_t max_pages_ = 0;
};

/// Which pages hold one sequence's rows: for each policy group, for each of
/// its members, the page of each page_tokens-slot block of its slots (-1:
/// none yet). Sized once for the sequence's largest state.
class PageTable {
 public:
  PageTable(const CacheConfig& config, const PolicyGroups& groups, int page_tokens) {
    for (int g = 0; g < groups.num_groups(); ++g) {
      const int slots = config.slots_of(groups.policy(g));
      const int pages = (slots + page_tokens - 1) / page_tokens;
      group_offset_.push_back(entries_.size());
      pages_per_member_.push_back(pages);
      entries_.resize(entries_.size() + static_cast<std::size_t>(groups.num_members(g)) * static_cast<std::size_t>(pages),
                      -1);
    }
  }

  int pages_per_member(int group) const { return pages_per_member_[static_cast<std::size_t>(group)]; }
  std::int32_t& at(int group, int member, int page_index) {
    return entries_[group_offset_[static_cast<std::size_t>(group)] +
                    static_cast<std::size_t>(member) * static_cast<std::size_t>(pages_per_member(group)) +
                    static_cast<std::size_t>(page_index)];
  }
  std::int32_t at(int group, int member, int page_index) const {
    return const_cast<PageTable&>(*this).at(group, member, page_index);
  }
  /// Every entry, for giving the pages back.
  Vector<std::int32_t>& entries() { return entries_; }

 private:
  Vector<std::size_t> group_offset_;  // [groups] first entry of each group
  Vector<int> pages_per_member_;      // [groups]
  Vector<std::int32_t> entries_;      // [groups][members][pages per member]
};

/// One sequence's rows as a store for append_rows/attend_rows: row(group,
/// member, kind, slot) looks the page up in its table. A run of slots
/// splits at page boundaries, and each KV head is its own kernel run (its
/// pages are anywhere in the arena).
template <class T>
class PagedRows {
 public:
  static constexpr bool kHeadsShareRuns = false;

  PagedRows(PageArena<T>& arena, const PageTable& table, int page_shift, int head_dim)
      : arena_(&arena), table_(&table), page_shift_(page_shift), head_dim_(head_dim) {}

  T* row(int group, int member, int kind, int slot) const {
    const int page_tokens = 1 << page_shift_;
    const std::int32_t page = table_->at(group, member, slot >> page_shift_);
    SINKKV_ASSERT(page >= 0);
    return arena_->page(page) + (static_cast<std::size_t>(kind) * static_cast<std::size_t>(page_tokens) +
                                 static_cast<std::size_t>(slot & (page_tokens - 1))) *
                                    static_cast<std::size_t>(head_dim_);
  }

  /// Calls visit(RowRun) for each page-contiguous piece of slots
  /// [first_slot, first_slot + length) of one member. @pre num_members == 1
  template <class Visit>
  void for_each_run(int group, int first_member, int num_members, int first_slot, int length, Visit&& visit) const {
    SINKKV_ASSERT(num_members == 1);
    (void)num_members;
    const int page_tokens = 1 << page_shift_;
    for (int slot = first_slot, end = first_slot + length; slot < end;) {
      const int piece = std::min(end - slot, page_tokens - (slot & (page_tokens - 1)));
      RowRun<T> run;
      run.keys = row(group, first_member, 0, slot);
      run.values = row(group, first_member, 1, slot);
      run.token_stride = head_dim_;
      run.head_stride = 0;  // one head per run
      run.first_slot = slot;
      run.length = piece;
      visit(run);
      slot += piece;
    }
  }

 private:
  PageArena<T>* arena_;
  const PageTable* table_;
  int page_shift_;
  int head_dim_;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

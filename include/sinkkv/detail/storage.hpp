// sinkkv::detail: where K/V rows live.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "abi_namespace.hpp"
#include "policy_groups.hpp"
#include "tagged_vector.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// Bytes every row store aligns to, whatever the compiler flags. (It must
/// not follow EIGEN_MAX_ALIGN_BYTES, which differs between translation units
/// built with and without -mavx: memory allocated in one and freed in the
/// other then took the wrong deallocation path.)
inline constexpr std::size_t kStorageAlignment = 64;

/// A fixed-size array of trivially copyable T, aligned to kStorageAlignment,
/// allocated once. Move-only; copy() is explicit.
template <class T>
class AlignedArray {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedArray holds raw rows");

 public:
  AlignedArray() = default;
  /// Allocates `size` elements; zero-filled when `zero` (all-zero bits are
  /// +0 for float, double, half and bfloat16).
  explicit AlignedArray(std::size_t size, bool zero = true) : size_(size) {
    if (size_ == 0) return;
    data_.reset(static_cast<T*>(::operator new(size_ * sizeof(T), std::align_val_t{kStorageAlignment})));
    if (zero) std::memset(static_cast<void*>(data_.get()), 0, size_ * sizeof(T));
  }
  AlignedArray(AlignedArray&& other) noexcept : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}
  AlignedArray& operator=(AlignedArray&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  AlignedArray copy() const {
    AlignedArray result(size_, false);
    if (size_ > 0) std::memcpy(static_cast<void*>(result.data_.get()), data_.get(), size_ * sizeof(T));
    return result;
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete(static_cast<void*>(p), std::align_val_t{kStorageAlignment}); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

/// A contiguous run of slots of consecutive members of one group: what a
/// kernel segment needs. Member k's key for the run's slot j is at
/// keys + k * head_stride + j * token_stride.
template <class T>
struct RowRun {
  const T* keys = nullptr;
  const T* values = nullptr;
  std::ptrdiff_t token_stride = 0;
  std::ptrdiff_t head_stride = 0;
  int first_slot = 0;
  int length = 0;
};

/// One sequence's rows in one allocation: per group, [member][K/V][slot]
/// [head_dim] (a member's keys and values are each a contiguous [slots,
/// head_dim] block). Sized once from the configuration; nothing moves.
template <class T>
class ContiguousStore {
 public:
  /// A run of consecutive members keeps one head stride: a kernel takes a
  /// whole head run in one call.
  static constexpr bool kHeadsShareRuns = true;

  ContiguousStore() = default;
  /// @pre config.validate() passed and config.storage_elements() fits memory.
  ContiguousStore(const CacheConfig& config, const PolicyGroups& groups) : head_dim_(config.head_dim) {
    std::size_t offset = 0;
    for (int g = 0; g < groups.num_groups(); ++g) {
      const int slots = config.slots_of(groups.policy(g));
      group_offset_.push_back(offset);
      group_slots_.push_back(slots);
      offset += static_cast<std::size_t>(groups.num_members(g)) * 2 * static_cast<std::size_t>(slots) *
                static_cast<std::size_t>(head_dim_);
    }
    rows_ = AlignedArray<T>(offset);
  }

  ContiguousStore copy() const {
    ContiguousStore result;
    result.head_dim_ = head_dim_;
    result.group_offset_ = group_offset_;
    result.group_slots_ = group_slots_;
    result.rows_ = rows_.copy();
    return result;
  }

  std::size_t bytes() const { return rows_.size() * sizeof(T); }

  /// kind 0: key, 1: value. [head_dim]
  T* row(int group, int member, int kind, int slot) {
    return const_cast<T*>(std::as_const(*this).row(group, member, kind, slot));
  }
  const T* row(int group, int member, int kind, int slot) const {
    const std::size_t slots = static_cast<std::size_t>(group_slots_[static_cast<std::size_t>(group)]);
    const std::size_t block = (static_cast<std::size_t>(member) * 2 + static_cast<std::size_t>(kind)) * slots +
                              static_cast<std::size_t>(slot);
    return rows_.data() + group_offset_[static_cast<std::size_t>(group)] + block * static_cast<std::size_t>(head_dim_);
  }

  /// Calls visit(RowRun) for slots [first_slot, first_slot + length) of
  /// members [first_member, first_member + num_members): always one run.
  template <class Visit>
  void for_each_run(int group, int first_member, int /*num_members*/, int first_slot, int length,
                    Visit&& visit) const {
    const std::ptrdiff_t slots = group_slots_[static_cast<std::size_t>(group)];
    RowRun<T> run;
    run.keys = row(group, first_member, 0, first_slot);
    run.values = row(group, first_member, 1, first_slot);
    run.token_stride = head_dim_;
    run.head_stride = 2 * slots * head_dim_;
    run.first_slot = first_slot;
    run.length = length;
    visit(run);
  }

 private:
  int head_dim_ = 0;
  Vector<std::size_t> group_offset_;  // [groups] first element of each group's block
  Vector<int> group_slots_;           // [groups] slots per member
  AlignedArray<T> rows_;
};

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

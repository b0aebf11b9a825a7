// sinkkv::detail: std::vector with an allocator in sinkkv's tagged namespace.
//
// std::vector<float> is a standard-library template on a plain type: its
// out-of-line members (fill, resize, growth) are compiled in every unit that
// uses them, with that unit's flags, under one mangled name for the whole
// program. A unit built with -mavx2 gives them VEX-encoded (at -O2 also
// vectorised) code, and the linker may hand that copy to a generic unit:
// SinkKVCache<Eigen::half>'s constructor died that way on a CPU without AVX
// (vector<float>::_M_fill_assign, issue 12 finding 2). An allocator type
// from the ABI-tagged namespace makes every member of the vector a distinct
// symbol per flag set. Free standard algorithms on raw pointers that those
// members call (std::fill on float*) stay shared; the optimiser inlines them
// at -O1 and above, not at -O0 (see docs/testing.md, "Mixing flag sets").
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "abi_namespace.hpp"

namespace sinkkv::detail {
inline namespace SINKKV_ABI_NAMESPACE {

/// std::allocator under another name: same storage, same cost, stateless.
template <class T>
struct TaggedAllocator : std::allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = TaggedAllocator<U>;
  };
  TaggedAllocator() noexcept = default;
  template <class U>
  TaggedAllocator(const TaggedAllocator<U>&) noexcept {}
  // Element construction is the vector's per-element code (std::allocator's
  // own construct<float> is another shared symbol).
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  void destroy(U* p) {
    p->~U();
  }
};
template <class T, class U>
bool operator==(const TaggedAllocator<T>&, const TaggedAllocator<U>&) noexcept {
  return true;
}
template <class T, class U>
bool operator!=(const TaggedAllocator<T>&, const TaggedAllocator<U>&) noexcept {
  return false;
}

/// The library's internal growable array (never in a public signature).
template <class T>
using Vector = std::vector<T, TaggedAllocator<T>>;

}  // namespace SINKKV_ABI_NAMESPACE
}  // namespace sinkkv::detail

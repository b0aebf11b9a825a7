// Test support: counts every call into the C library's allocator made by the
// binary that includes this header (include it in exactly one translation
// unit, after every other header). operator new and Eigen's aligned allocator both end in malloc.
// glibc-specific: the program's definitions interpose the library's and
// forward to its internal entry points.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SINKKV_TEST_COUNTS_ALLOCATIONS 0  // the sanitizer owns malloc (TSan crashes at start-up otherwise)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SINKKV_TEST_COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef SINKKV_TEST_COUNTS_ALLOCATIONS
#define SINKKV_TEST_COUNTS_ALLOCATIONS 1
#endif

namespace sinkkv::testing {
/// Allocations so far; compare two readings around the code under test.
inline std::atomic<std::size_t> allocation_count{0};  // atomic: thread-pool tests
/// The largest single request so far (bytes); reset it before the code under test.
inline std::atomic<std::size_t> largest_allocation{0};

inline void record_allocation(std::size_t bytes) {
  ++allocation_count;
  std::size_t largest = largest_allocation.load();
  while (bytes > largest && !largest_allocation.compare_exchange_weak(largest, bytes)) {
  }
}
/// False under AddressSanitizer and ThreadSanitizer, whose allocators cannot
/// be interposed: the count then stays 0 and tests that need it skip.
inline constexpr bool kCountsAllocations = SINKKV_TEST_COUNTS_ALLOCATIONS == 1;
}  // namespace sinkkv::testing

#if SINKKV_TEST_COUNTS_ALLOCATIONS
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* memory, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);

void* malloc(std::size_t size) {
  sinkkv::testing::record_allocation(size);
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
  sinkkv::testing::record_allocation(count * size);
  return __libc_calloc(count, size);
}
void* realloc(void* memory, std::size_t size) {
  sinkkv::testing::record_allocation(size);
  return __libc_realloc(memory, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  sinkkv::testing::record_allocation(size);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  sinkkv::testing::record_allocation(size);
  *out = __libc_memalign(alignment, size);
  return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}
#endif

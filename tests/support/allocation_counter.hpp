// Test support: counts every call into the C library's allocator made by the
// binary that includes this header (include it in exactly one translation
// unit, after every other header). operator new and Eigen's aligned allocator both end in malloc.
// glibc-specific: the program's definitions interpose the library's and
// forward to its internal entry points.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>

namespace sinkkv::testing {
/// Allocations so far; compare two readings around the code under test.
inline std::atomic<std::size_t> allocation_count{0};  // atomic: thread-pool tests
}  // namespace sinkkv::testing

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* memory, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);

void* malloc(std::size_t size) {
  ++sinkkv::testing::allocation_count;
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
  ++sinkkv::testing::allocation_count;
  return __libc_calloc(count, size);
}
void* realloc(void* memory, std::size_t size) {
  ++sinkkv::testing::allocation_count;
  return __libc_realloc(memory, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  ++sinkkv::testing::allocation_count;
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  ++sinkkv::testing::allocation_count;
  *out = __libc_memalign(alignment, size);
  return *out == nullptr ? 12 /* ENOMEM */ : 0;
}
}

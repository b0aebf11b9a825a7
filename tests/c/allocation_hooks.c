/* See allocation_hooks.h. */
#include "allocation_hooks.h"

#include <errno.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SINKKV_HOOKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define SINKKV_HOOKS 0
#endif
#endif
#if !defined(SINKKV_HOOKS) && defined(__GLIBC__)
#define SINKKV_HOOKS 1
#endif
#ifndef SINKKV_HOOKS
#define SINKKV_HOOKS 0
#endif

#if SINKKV_HOOKS
/* Thread pools allocate on their threads too: counters are atomic. */
static size_t calls;
static long live;
static long fail_at = -1; /* calls value at which to fail, -1 none */
static int failed;

int allocation_hooks_active(void) { return 1; }
size_t allocation_count(void) { return __atomic_load_n(&calls, __ATOMIC_SEQ_CST); }
long live_allocations(void) { return __atomic_load_n(&live, __ATOMIC_SEQ_CST); }
void fail_allocation_after(long index) {
  if (index >= 0) __atomic_store_n(&failed, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&fail_at, index < 0 ? -1 : (long)allocation_count() + index, __ATOMIC_SEQ_CST);
}
int allocation_failure_happened(void) { return __atomic_load_n(&failed, __ATOMIC_SEQ_CST); }

/* Counts one call; returns 1 when this one must fail. */
static int count_call(void) {
  const long index = (long)__atomic_fetch_add(&calls, 1, __ATOMIC_SEQ_CST);
  long expected = index;
  if (__atomic_compare_exchange_n(&fail_at, &expected, -1L, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    __atomic_store_n(&failed, 1, __ATOMIC_SEQ_CST);
    return 1;
  }
  return 0;
}
static void* counted(void* block) {
  if (block != NULL) __atomic_fetch_add(&live, 1, __ATOMIC_SEQ_CST);
  return block;
}

void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* block, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
void __libc_free(void* block);

void* malloc(size_t size) {
  if (count_call()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_malloc(size));
}
void* calloc(size_t count, size_t size) {
  if (count_call()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_calloc(count, size));
}
void* realloc(void* block, size_t size) {
  void* moved;
  if (count_call()) {
    errno = ENOMEM;
    return NULL;
  }
  moved = __libc_realloc(block, size);
  if (block == NULL && moved != NULL) __atomic_fetch_add(&live, 1, __ATOMIC_SEQ_CST);
  if (block != NULL && size == 0) __atomic_fetch_sub(&live, 1, __ATOMIC_SEQ_CST); /* glibc frees */
  return moved;
}
void* aligned_alloc(size_t alignment, size_t size) {
  if (count_call()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_memalign(alignment, size));
}
void* memalign(size_t alignment, size_t size) {
  if (count_call()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_memalign(alignment, size));
}
int posix_memalign(void** out, size_t alignment, size_t size) {
  if (count_call()) return ENOMEM;
  *out = counted(__libc_memalign(alignment, size));
  return *out == NULL ? ENOMEM : 0;
}
void free(void* block) {
  if (block != NULL) __atomic_fetch_sub(&live, 1, __ATOMIC_SEQ_CST);
  __libc_free(block);
}
#else
int allocation_hooks_active(void) { return 0; }
size_t allocation_count(void) { return 0; }
long live_allocations(void) { return 0; }
void fail_allocation_after(long index) { (void)index; }
int allocation_failure_happened(void) { return 0; }
#endif

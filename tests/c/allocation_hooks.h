/* Test support for the C interface's tests: counts the program's calls into
 * the C library's allocator and can make one of them fail.
 *
 * glibc only: allocation_hooks.c defines malloc & co., which interpose the
 * library's (operator new and Eigen end in malloc) and forward to glibc's
 * internal entry points. Under AddressSanitizer, which owns malloc, nothing
 * is interposed and allocation_hooks_active() is 0; tests that need the
 * hooks then skip. */
#ifndef SINKKV_TESTS_C_ALLOCATION_HOOKS_H
#define SINKKV_TESTS_C_ALLOCATION_HOOKS_H

#include <stddef.h>

/* 1 when allocations are counted (and can be made to fail). */
int allocation_hooks_active(void);
/* Allocation calls so far (malloc, calloc, realloc, aligned_alloc,
 * posix_memalign, memalign), failed ones included. */
size_t allocation_count(void);
/* Blocks allocated and not yet freed. */
long live_allocations(void);
/* Makes the allocation call `index` calls from now (0: the next one) fail
 * with NULL / ENOMEM; every later call succeeds again. -1 disarms (and
 * keeps allocation_failure_happened()). */
void fail_allocation_after(long index);
/* 1 once the armed failure has happened (re-armed by fail_allocation_after). */
int allocation_failure_happened(void);

#endif

/* failpoint.c - allocation-failure injection for tests (CMake option
 * WEFT_FAILPOINTS=ON; without it this file is empty and every check in
 * lib/ is the constant `false`).
 *
 * Every allocation weft makes asks weft__fail_alloc() first. A test arms
 * the counter with N: the Nth allocation from then on (counted over all
 * threads) fails as if the system were out of memory, every other one
 * goes through. Armed with 0 it only counts, so a test can learn how many
 * allocations a scenario makes and then fail each of them in turn
 * (test/scenario_allocfail.c). */
#include "internal.h"

#ifdef WEFT_FAILPOINTS

/* Allocations checked since the last arm. relaxed: a counter; only its own
 * value matters (each fetch_add gives every allocation a distinct number). */
static atomic_uint_fast64_t calls;
/* The number that fails, 0 for none. relaxed: set by the test before the
 * scenario starts any thread (thread creation orders it). */
static atomic_uint_fast64_t fail_at;
/* Whether the armed failure happened. relaxed: read by the test after the
 * scenario's threads are done (joined through weft's exit messages). */
static atomic_bool fired;

bool weft__fail_alloc(void) {
  uint_fast64_t n =
      atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed) + 1;
  if (n != atomic_load_explicit(&fail_at, memory_order_relaxed))
    return false;
  atomic_store_explicit(&fired, true, memory_order_relaxed);
  return true;
}

void weft__failpoint_arm(uint64_t nth) {
  atomic_store_explicit(&fail_at, 0, memory_order_relaxed);
  atomic_store_explicit(&calls, 0, memory_order_relaxed);
  atomic_store_explicit(&fired, false, memory_order_relaxed);
  atomic_store_explicit(&fail_at, nth, memory_order_relaxed);
}

uint64_t weft__failpoint_count(void) {
  return atomic_load_explicit(&calls, memory_order_relaxed);
}

bool weft__failpoint_fired(void) {
  return atomic_load_explicit(&fired, memory_order_relaxed);
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int weft__failpoint_unused_t;
#endif

/* test_shared.c - Criterion suite for shared buffers, atomics, wait/notify
 * and waitAsync. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include <weft/weft.h>

/* weft__shared_waiters(): waiters queued on a slot, so tests wait for
 * sleepers without sleeping. */
#include "internal.h"
#include "support.h"

TestSuite(shared, .timeout = 30);

/* --- Allocation and references ------------------------------------------ */

Test(shared, new_is_zeroed_and_64_byte_aligned) {
  size_t sizes[] = {1, 4, 63, 64, 100, 4096, 1 << 20};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    weft_shared_t* sh = new_shared(sizes[i]);
    unsigned char* p = weft_shared_data(sh);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % 64, 0, "size %zu not aligned", sizes[i]);
    cr_assert_eq(weft_shared_size(sh), sizes[i]);
    for (size_t j = 0; j < sizes[i]; j++)
      cr_assert_eq(p[j], 0, "byte %zu of %zu not zero", j, sizes[i]);
    memset(p, 0xab, sizes[i]); /* The whole size is writable. */
    weft_shared_release(sh);
  }
}

Test(shared, new_rejects_null_out) {
  cr_assert_eq(weft_shared_new(NULL, 16), WEFT_EINVAL);
}

Test(shared, new_zero_size_is_empty) {
  weft_shared_t* sh = new_shared(0);
  int32_t v;
  cr_assert_eq(weft_shared_size(sh), 0);
  cr_assert_eq(weft_atomic_load32(sh, 0, &v), WEFT_ERANGE);
  weft_shared_release(sh);
}

Test(shared, new_too_large_is_enomem) {
  weft_shared_t* sh = (weft_shared_t*)1;
  cr_assert_eq(weft_shared_new(&sh, SIZE_MAX), WEFT_ENOMEM);
  cr_assert_null(sh);
}

Test(shared, null_handles_are_harmless) {
  cr_assert_null(weft_shared_retain(NULL));
  weft_shared_release(NULL);
  cr_assert_null(weft_shared_data(NULL));
  cr_assert_eq(weft_shared_size(NULL), 0);
}

Test(shared, memory_stays_valid_while_a_reference_exists) {
  weft_shared_t* sh = new_shared(64);
  cr_assert_eq(weft_shared_retain(sh), sh);
  cr_assert_eq(weft_shared_retain(sh), sh);
  cr_assert_eq(weft_atomic_store32(sh, 3, 42), 0);
  weft_shared_release(sh);
  weft_shared_release(sh);
  /* One reference left: still readable and writable. */
  int32_t v = 0;
  cr_assert_eq(weft_atomic_load32(sh, 3, &v), 0);
  cr_assert_eq(v, 42);
  cr_assert_eq(weft_atomic_add32(sh, 3, 1, NULL), 0);
  cr_assert_eq(((int32_t*)weft_shared_data(sh))[3], 43);
  weft_shared_release(sh);
}

/* --- 32-bit atomics ------------------------------------------------------ */

Test(shared, load_store_32) {
  weft_shared_t* sh = new_shared(16);
  int32_t v = 1;
  cr_assert_eq(weft_atomic_load32(sh, 2, &v), 0);
  cr_assert_eq(v, 0);
  cr_assert_eq(weft_atomic_store32(sh, 2, -7), 0);
  cr_assert_eq(weft_atomic_load32(sh, 2, &v), 0);
  cr_assert_eq(v, -7);
  cr_assert_eq(((int32_t*)weft_shared_data(sh))[2], -7);
  weft_shared_release(sh);
}

Test(shared, rmw_32_values_and_old_values) {
  weft_shared_t* sh = new_shared(16);
  int32_t old, v;

  weft_atomic_store32(sh, 1, 10);
  cr_assert_eq(weft_atomic_add32(sh, 1, 5, &old), 0);
  cr_assert_eq(old, 10);
  cr_assert_eq(weft_atomic_sub32(sh, 1, 3, &old), 0);
  cr_assert_eq(old, 15);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 12);

  weft_atomic_store32(sh, 1, 0x0ff0);
  cr_assert_eq(weft_atomic_and32(sh, 1, 0x00ff, &old), 0);
  cr_assert_eq(old, 0x0ff0);
  cr_assert_eq(weft_atomic_or32(sh, 1, 0x1000, &old), 0);
  cr_assert_eq(old, 0x00f0);
  cr_assert_eq(weft_atomic_xor32(sh, 1, 0x1010, &old), 0);
  cr_assert_eq(old, 0x10f0);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 0x00e0);

  cr_assert_eq(weft_atomic_exchange32(sh, 1, -1, &old), 0);
  cr_assert_eq(old, 0x00e0);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, -1);

  /* The generic form does the same. */
  cr_assert_eq(weft_atomic_rmw32(sh, 1, WEFT_ATOMIC_ADD, 2, &old), 0);
  cr_assert_eq(old, -1);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 1);

  /* `old` may be NULL. */
  cr_assert_eq(weft_atomic_add32(sh, 1, 1, NULL), 0);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 2);

  /* Neighbours untouched. */
  weft_atomic_load32(sh, 0, &v);
  cr_assert_eq(v, 0);
  weft_atomic_load32(sh, 2, &v);
  cr_assert_eq(v, 0);
  weft_shared_release(sh);
}

Test(shared, add_32_wraps_around) {
  weft_shared_t* sh = new_shared(4);
  int32_t old, v;
  weft_atomic_store32(sh, 0, INT32_MAX);
  cr_assert_eq(weft_atomic_add32(sh, 0, 1, &old), 0);
  cr_assert_eq(old, INT32_MAX);
  weft_atomic_load32(sh, 0, &v);
  cr_assert_eq(v, INT32_MIN);
  cr_assert_eq(weft_atomic_sub32(sh, 0, 1, &old), 0);
  cr_assert_eq(old, INT32_MIN);
  weft_atomic_load32(sh, 0, &v);
  cr_assert_eq(v, INT32_MAX);
  weft_shared_release(sh);
}

Test(shared, cas_32) {
  weft_shared_t* sh = new_shared(8);
  int32_t old, v;
  weft_atomic_store32(sh, 1, 5);
  /* Mismatch: no store, old is the value found. */
  cr_assert_eq(weft_atomic_cas32(sh, 1, 4, 9, &old), 0);
  cr_assert_eq(old, 5);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 5);
  /* Match: store, old is the expected value. */
  cr_assert_eq(weft_atomic_cas32(sh, 1, 5, 9, &old), 0);
  cr_assert_eq(old, 5);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 9);
  cr_assert_eq(weft_atomic_cas32(sh, 1, 9, 10, NULL), 0);
  weft_atomic_load32(sh, 1, &v);
  cr_assert_eq(v, 10);
  weft_shared_release(sh);
}

/* --- 64-bit atomics ------------------------------------------------------ */

Test(shared, load_store_64) {
  weft_shared_t* sh = new_shared(16);
  int64_t v = 1;
  cr_assert_eq(weft_atomic_load64(sh, 1, &v), 0);
  cr_assert_eq(v, 0);
  cr_assert_eq(weft_atomic_store64(sh, 1, INT64_C(-0x123456789)), 0);
  cr_assert_eq(weft_atomic_load64(sh, 1, &v), 0);
  cr_assert_eq(v, INT64_C(-0x123456789));
  cr_assert_eq(((int64_t*)weft_shared_data(sh))[1], INT64_C(-0x123456789));
  weft_atomic_load64(sh, 0, &v);
  cr_assert_eq(v, 0);
  weft_shared_release(sh);
}

Test(shared, rmw_64_values_and_old_values) {
  weft_shared_t* sh = new_shared(16);
  int64_t old, v;
  const int64_t big = INT64_C(1) << 40;

  weft_atomic_store64(sh, 1, big);
  cr_assert_eq(weft_atomic_add64(sh, 1, big, &old), 0);
  cr_assert_eq(old, big);
  cr_assert_eq(weft_atomic_sub64(sh, 1, 1, &old), 0);
  cr_assert_eq(old, 2 * big);
  weft_atomic_load64(sh, 1, &v);
  cr_assert_eq(v, 2 * big - 1);

  weft_atomic_store64(sh, 1, INT64_C(0x0ff000000000));
  cr_assert_eq(weft_atomic_and64(sh, 1, INT64_C(0x00ff00000000), &old), 0);
  cr_assert_eq(old, INT64_C(0x0ff000000000));
  cr_assert_eq(weft_atomic_or64(sh, 1, INT64_C(0x100000000000), &old), 0);
  cr_assert_eq(old, INT64_C(0x00f000000000));
  cr_assert_eq(weft_atomic_xor64(sh, 1, INT64_C(0x101000000000), &old), 0);
  cr_assert_eq(old, INT64_C(0x10f000000000));
  weft_atomic_load64(sh, 1, &v);
  cr_assert_eq(v, INT64_C(0x00e000000000));

  cr_assert_eq(weft_atomic_exchange64(sh, 1, -1, &old), 0);
  cr_assert_eq(old, INT64_C(0x00e000000000));
  cr_assert_eq(weft_atomic_rmw64(sh, 1, WEFT_ATOMIC_ADD, 2, &old), 0);
  cr_assert_eq(old, -1);
  weft_atomic_load64(sh, 1, &v);
  cr_assert_eq(v, 1);
  weft_atomic_load64(sh, 0, &v);
  cr_assert_eq(v, 0);
  weft_shared_release(sh);
}

Test(shared, add_64_wraps_around) {
  weft_shared_t* sh = new_shared(8);
  int64_t old, v;
  weft_atomic_store64(sh, 0, INT64_MAX);
  cr_assert_eq(weft_atomic_add64(sh, 0, 1, &old), 0);
  cr_assert_eq(old, INT64_MAX);
  weft_atomic_load64(sh, 0, &v);
  cr_assert_eq(v, INT64_MIN);
  weft_shared_release(sh);
}

Test(shared, cas_64) {
  weft_shared_t* sh = new_shared(8);
  int64_t old, v;
  const int64_t big = INT64_C(5) << 33;
  weft_atomic_store64(sh, 0, big);
  cr_assert_eq(weft_atomic_cas64(sh, 0, 5, 9, &old), 0);
  cr_assert_eq(old, big);
  weft_atomic_load64(sh, 0, &v);
  cr_assert_eq(v, big);
  cr_assert_eq(weft_atomic_cas64(sh, 0, big, 9, &old), 0);
  cr_assert_eq(old, big);
  weft_atomic_load64(sh, 0, &v);
  cr_assert_eq(v, 9);
  weft_shared_release(sh);
}

/* --- Bad input ----------------------------------------------------------- */

Test(shared, index_bounds_are_exact) {
  weft_shared_t* sh = new_shared(16);
  int32_t v32;
  int64_t v64;
  weft_wait_result_t r;
  int woken = -1;

  cr_assert_eq(weft_atomic_load32(sh, 3, &v32), 0);
  cr_assert_eq(weft_atomic_load32(sh, 4, &v32), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_store32(sh, 4, 1), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_add32(sh, 4, 1, NULL), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_cas32(sh, 4, 0, 1, NULL), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_load64(sh, 1, &v64), 0);
  cr_assert_eq(weft_atomic_load64(sh, 2, &v64), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_exchange64(sh, 2, 1, NULL), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_wait32(sh, 4, 0, 0, &r), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_wait64(sh, 2, 0, 0, &r), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_notify32(sh, 4, 1, &woken), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_notify64(sh, 2, 1, NULL), WEFT_ERANGE);
  /* No overflow in index * width. */
  cr_assert_eq(weft_atomic_load32(sh, SIZE_MAX, &v32), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_load64(sh, SIZE_MAX / 4, &v64), WEFT_ERANGE);
  weft_shared_release(sh);

  /* A 64-bit slot must fit whole: 12 bytes hold one, not two. */
  sh = new_shared(12);
  cr_assert_eq(weft_atomic_load64(sh, 0, &v64), 0);
  cr_assert_eq(weft_atomic_load64(sh, 1, &v64), WEFT_ERANGE);
  cr_assert_eq(weft_atomic_load32(sh, 2, &v32), 0);
  cr_assert_eq(weft_atomic_load32(sh, 3, &v32), WEFT_ERANGE);
  weft_shared_release(sh);
}

Test(shared, null_buffer_is_einval) {
  int32_t v32;
  int64_t v64;
  weft_wait_result_t r;
  int woken = -1;
  cr_assert_eq(weft_atomic_load32(NULL, 0, &v32), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_store32(NULL, 0, 1), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_rmw32(NULL, 0, WEFT_ATOMIC_OR, 1, &v32),
               WEFT_EINVAL);
  cr_assert_eq(weft_atomic_add32(NULL, 0, 1, &v32), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_cas32(NULL, 0, 1, 2, &v32), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_load64(NULL, 0, &v64), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_store64(NULL, 0, 1), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_xor64(NULL, 0, 1, &v64), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_cas64(NULL, 0, 1, 2, &v64), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait32(NULL, 0, 0, 0, &r), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait64(NULL, 0, 0, 0, &r), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_notify32(NULL, 0, 1, &woken), WEFT_EINVAL);
  cr_assert_eq(woken, 0);
  cr_assert_eq(weft_atomic_notify64(NULL, 0, 1, NULL), WEFT_EINVAL);
}

Test(shared, null_out_pointers_and_bad_op) {
  weft_shared_t* sh = new_shared(8);
  cr_assert_eq(weft_atomic_load32(sh, 0, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_load64(sh, 0, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait32(sh, 0, 0, 0, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait64(sh, 0, 0, 0, NULL), WEFT_EINVAL);
  cr_assert_eq(weft_atomic_rmw32(sh, 0, (weft_atomic_op_t)99, 1, NULL),
               WEFT_EINVAL);
  cr_assert_eq(weft_atomic_rmw64(sh, 0, (weft_atomic_op_t)-1, 1, NULL),
               WEFT_EINVAL);
  weft_shared_release(sh);
}

/* --- wait / notify -------------------------------------------------------- */

Test(shared, wait_not_equal) {
  weft_shared_t* sh = new_shared(16);
  weft_wait_result_t r = WEFT_WAIT_OK;
  weft_atomic_store32(sh, 1, 3);
  cr_assert_eq(weft_atomic_wait32(sh, 1, 4, -1, &r), 0);
  cr_assert_eq(r, WEFT_WAIT_NOT_EQUAL);
  weft_atomic_store64(sh, 1, INT64_C(1) << 35);
  r = WEFT_WAIT_OK;
  /* Same low 32 bits as the expected value, different high bits. */
  cr_assert_eq(weft_atomic_wait64(sh, 1, 0, -1, &r), 0);
  cr_assert_eq(r, WEFT_WAIT_NOT_EQUAL);
  cr_assert_eq(weft__shared_waiters(sh, 1, 4), 0);
  weft_shared_release(sh);
}

Test(shared, wait_times_out) {
  weft_shared_t* sh = new_shared(16);
  weft_wait_result_t r = WEFT_WAIT_OK;
  cr_assert_eq(weft_atomic_wait32(sh, 0, 0, 20, &r), 0);
  cr_assert_eq(r, WEFT_WAIT_TIMED_OUT);
  r = WEFT_WAIT_OK;
  cr_assert_eq(weft_atomic_wait32(sh, 0, 0, 0, &r), 0);
  cr_assert_eq(r, WEFT_WAIT_TIMED_OUT);
  r = WEFT_WAIT_OK;
  cr_assert_eq(weft_atomic_wait64(sh, 1, 0, 20, &r), 0);
  cr_assert_eq(r, WEFT_WAIT_TIMED_OUT);
  /* A timed-out waiter leaves no trace: notify finds nobody. */
  int woken = -1;
  cr_assert_eq(weft_atomic_notify32(sh, 0, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  cr_assert_eq(weft__shared_waiters(sh, 0, 4), 0);
  cr_assert_eq(weft__shared_waiters(sh, 1, 8), 0);
  weft_shared_release(sh);
}

Test(shared, notify_without_waiters_wakes_none) {
  weft_shared_t* sh = new_shared(16);
  int woken = -1;
  cr_assert_eq(weft_atomic_notify32(sh, 2, 1, &woken), 0);
  cr_assert_eq(woken, 0);
  woken = -1;
  cr_assert_eq(weft_atomic_notify64(sh, 1, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  cr_assert_eq(weft_atomic_notify32(sh, 2, 1, NULL), 0);
  weft_shared_release(sh);
}

typedef struct waiter_arg_s {
  weft_shared_t* sh;
  size_t index;
  bool wide;
  int64_t timeout_ms;
  int rc;
  weft_wait_result_t result;
} waiter_arg_t;

static void waiter_thread(void* p) {
  waiter_arg_t* a = p;
  if (a->wide)
    a->rc = weft_atomic_wait64(a->sh, a->index, 0, a->timeout_ms, &a->result);
  else
    a->rc = weft_atomic_wait32(a->sh, a->index, 0, a->timeout_ms, &a->result);
}

static void wait_notify_across_threads(bool wide) {
  weft_shared_t* sh = new_shared(64);
  size_t width = wide ? 8 : 4;
  waiter_arg_t a = {sh, 3, wide, -1, -1, WEFT_WAIT_TIMED_OUT};
  uv_thread_t t;
  int woken = 0;

  cr_assert_eq(uv_thread_create(&t, waiter_thread, &a), 0);
  await_waiters(sh, 3, width, 1);
  /* A notify on another slot wakes nobody. */
  if (wide)
    cr_assert_eq(weft_atomic_notify64(sh, 2, -1, &woken), 0);
  else
    cr_assert_eq(weft_atomic_notify32(sh, 2, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  if (wide)
    cr_assert_eq(weft_atomic_notify64(sh, 3, 1, &woken), 0);
  else
    cr_assert_eq(weft_atomic_notify32(sh, 3, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(a.rc, 0);
  cr_assert_eq(a.result, WEFT_WAIT_OK);
  weft_shared_release(sh);
}

Test(shared, wait_notify_across_threads_32) {
  wait_notify_across_threads(false);
}

Test(shared, wait_notify_across_threads_64) {
  wait_notify_across_threads(true);
}

Test(shared, waiter_asleep_long_is_woken) {
  /* Well past the spin phase, so the notify must use the futex. */
  weft_shared_t* sh = new_shared(64);
  waiter_arg_t a = {sh, 0, false, -1, -1, WEFT_WAIT_TIMED_OUT};
  uv_thread_t t;
  int woken = 0;
  cr_assert_eq(uv_thread_create(&t, waiter_thread, &a), 0);
  await_waiters(sh, 0, 4, 1);
  uv_sleep(50);
  cr_assert_eq(weft_atomic_notify32(sh, 0, -1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(a.result, WEFT_WAIT_OK);
  weft_shared_release(sh);
}

static void notify_count_is_exact(bool wide) {
  weft_shared_t* sh = new_shared(64);
  size_t width = wide ? 8 : 4;
  waiter_arg_t a[3];
  uv_thread_t t[3];
  int woken = -1;
  int ok = 0;

  for (int i = 0; i < 3; i++) {
    a[i] = (waiter_arg_t){sh, 1, wide, -1, -1, WEFT_WAIT_TIMED_OUT};
    cr_assert_eq(uv_thread_create(&t[i], waiter_thread, &a[i]), 0);
  }
  await_waiters(sh, 1, width, 3);
  if (wide)
    cr_assert_eq(weft_atomic_notify64(sh, 1, 2, &woken), 0);
  else
    cr_assert_eq(weft_atomic_notify32(sh, 1, 2, &woken), 0);
  cr_assert_eq(woken, 2);
  cr_assert_eq(weft__shared_waiters(sh, 1, width), 1);
  if (wide)
    cr_assert_eq(weft_atomic_notify64(sh, 1, -1, &woken), 0);
  else
    cr_assert_eq(weft_atomic_notify32(sh, 1, -1, &woken), 0);
  cr_assert_eq(woken, 1);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(uv_thread_join(&t[i]), 0);
    cr_assert_eq(a[i].rc, 0);
    ok += a[i].result == WEFT_WAIT_OK;
  }
  cr_assert_eq(ok, 3);
  cr_assert_eq(weft_atomic_notify32(sh, 1, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  weft_shared_release(sh);
}

Test(shared, notify_count_is_exact_32) {
  notify_count_is_exact(false);
}

Test(shared, notify_count_is_exact_64) {
  notify_count_is_exact(true);
}

Test(shared, notify_zero_count_wakes_none) {
  weft_shared_t* sh = new_shared(16);
  waiter_arg_t a = {sh, 0, false, -1, -1, WEFT_WAIT_TIMED_OUT};
  uv_thread_t t;
  int woken = -1;
  cr_assert_eq(uv_thread_create(&t, waiter_thread, &a), 0);
  await_waiters(sh, 0, 4, 1);
  cr_assert_eq(weft_atomic_notify32(sh, 0, 0, &woken), 0);
  cr_assert_eq(woken, 0);
  cr_assert_eq(weft__shared_waiters(sh, 0, 4), 1);
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(a.result, WEFT_WAIT_OK);
  weft_shared_release(sh);
}

Test(shared, notify_wakes_oldest_first) {
  weft_shared_t* sh = new_shared(16);
  waiter_arg_t a[2];
  uv_thread_t t[2];
  int woken = -1;
  for (int i = 0; i < 2; i++) {
    a[i] = (waiter_arg_t){sh, 0, false, -1, -1, WEFT_WAIT_NOT_EQUAL};
    cr_assert_eq(uv_thread_create(&t[i], waiter_thread, &a[i]), 0);
    await_waiters(sh, 0, 4, (size_t)i + 1);
  }
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t[0]), 0);
  cr_assert_eq(a[0].result, WEFT_WAIT_OK);
  cr_assert_eq(a[1].rc, -1); /* Still waiting. */
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t[1]), 0);
  cr_assert_eq(a[1].result, WEFT_WAIT_OK);
  weft_shared_release(sh);
}

Test(shared, notify32_and_notify64_share_an_address) {
  /* As in JavaScript, waiters are keyed by byte address: int32 slot 2 and
   * int64 slot 1 both start at byte 8. */
  weft_shared_t* sh = new_shared(16);
  waiter_arg_t a = {sh, 1, true, -1, -1, WEFT_WAIT_TIMED_OUT};
  uv_thread_t t;
  int woken = -1;
  cr_assert_eq(uv_thread_create(&t, waiter_thread, &a), 0);
  await_waiters(sh, 1, 8, 1);
  cr_assert_eq(weft_atomic_notify32(sh, 2, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(a.result, WEFT_WAIT_OK);
  weft_shared_release(sh);
}

/* --- waitAsync ------------------------------------------------------------ */

typedef struct async_case_s {
  int calls;
  weft_wait_result_t result;
  uv_thread_t self;
  bool on_loop_thread;
} async_case_t;

static void on_wait(weft_loop_t* loop, void* arg, weft_wait_result_t r) {
  async_case_t* c = arg;
  uv_thread_t me = uv_thread_self();
  (void)loop;
  c->calls++;
  c->result = r;
  c->on_loop_thread = uv_thread_equal(&me, &c->self);
}

typedef struct notifier_arg_s {
  weft_shared_t* sh;
  int woken;
} notifier_arg_t;

static void notifier_thread(void* p) {
  notifier_arg_t* n = p;
  await_waiters(n->sh, 0, 4, 1);
  weft_atomic_notify32(n->sh, 0, 1, &n->woken);
}

Test(shared, wait_async_ok_via_notify_from_another_thread) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  async_case_t c = {0, WEFT_WAIT_TIMED_OUT, uv_thread_self(), false};
  notifier_arg_t n = {sh, -1};
  uv_thread_t t;

  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 0, 0, 10000, on_wait, &c), 0);
  cr_assert_eq(c.calls, 0);
  /* The waiter holds its own reference. */
  weft_shared_release(sh);
  cr_assert_eq(uv_thread_create(&t, notifier_thread, &n), 0);
  run_loop(loop);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(n.woken, 1);
  cr_assert_eq(c.calls, 1);
  cr_assert_eq(c.result, WEFT_WAIT_OK);
  cr_assert(c.on_loop_thread);
  free_loop(loop);
}

Test(shared, wait_async_without_timeout_ok_via_notify) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  async_case_t c = {0, WEFT_WAIT_TIMED_OUT, uv_thread_self(), false};
  notifier_arg_t n = {sh, -1};
  uv_thread_t t;

  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 0, 0, -1, on_wait, &c), 0);
  cr_assert_eq(uv_thread_create(&t, notifier_thread, &n), 0);
  run_loop(loop);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(n.woken, 1);
  cr_assert_eq(c.calls, 1);
  cr_assert_eq(c.result, WEFT_WAIT_OK);
  free_loop(loop);
  weft_shared_release(sh);
}

Test(shared, wait_async_not_equal_is_never_synchronous) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  async_case_t c = {0, WEFT_WAIT_OK, uv_thread_self(), false};

  weft_atomic_store32(sh, 1, 7);
  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 1, 0, 1000, on_wait, &c), 0);
  cr_assert_eq(c.calls, 0);
  run_loop(loop);
  cr_assert_eq(c.calls, 1);
  cr_assert_eq(c.result, WEFT_WAIT_NOT_EQUAL);
  cr_assert(c.on_loop_thread);
  free_loop(loop);
  weft_shared_release(sh);
}

Test(shared, wait_async_times_out) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  async_case_t c1 = {0, WEFT_WAIT_OK, uv_thread_self(), false};
  async_case_t c2 = {0, WEFT_WAIT_OK, uv_thread_self(), false};
  int woken = -1;

  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 2, 0, 20, on_wait, &c1), 0);
  /* Zero timeout: timed out at once, still on a later turn. */
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 2, 0, 0, on_wait, &c2), 0);
  cr_assert_eq(c1.calls + c2.calls, 0);
  run_loop(loop);
  cr_assert_eq(c1.calls, 1);
  cr_assert_eq(c1.result, WEFT_WAIT_TIMED_OUT);
  cr_assert_eq(c2.calls, 1);
  cr_assert_eq(c2.result, WEFT_WAIT_TIMED_OUT);
  cr_assert_eq(weft_atomic_notify32(sh, 2, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  free_loop(loop);
  weft_shared_release(sh);
}

Test(shared, wait_async_and_sync_waiters_share_one_fifo) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  async_case_t c = {0, WEFT_WAIT_TIMED_OUT, uv_thread_self(), false};
  waiter_arg_t a = {sh, 0, false, -1, -1, WEFT_WAIT_TIMED_OUT};
  uv_thread_t t;
  int woken = -1;

  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 0, 0, -1, on_wait, &c), 0);
  cr_assert_eq(uv_thread_create(&t, waiter_thread, &a), 0);
  await_waiters(sh, 0, 4, 2);
  /* The async waiter is older: notify(1) resolves it, not the thread. */
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(weft__shared_waiters(sh, 0, 4), 1);
  run_loop(loop);
  cr_assert_eq(c.calls, 1);
  cr_assert_eq(c.result, WEFT_WAIT_OK);
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(a.result, WEFT_WAIT_OK);
  free_loop(loop);
  weft_shared_release(sh);
}

Test(shared, wait_async_bad_input) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(8);
  async_case_t c = {0, WEFT_WAIT_OK, uv_thread_self(), false};

  loop = new_loop();
  cr_assert_eq(weft_atomic_wait_async32(NULL, sh, 0, 0, 10, on_wait, &c),
               WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait_async32(loop, NULL, 0, 0, 10, on_wait, &c),
               WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 0, 0, 10, NULL, &c),
               WEFT_EINVAL);
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 2, 0, 10, on_wait, &c),
               WEFT_ERANGE);
  run_loop(loop);
  cr_assert_eq(c.calls, 0);
  free_loop(loop);
  weft_shared_release(sh);
}

typedef struct wrong_thread_s {
  weft_loop_t* loop;
  weft_shared_t* sh;
  int rc;
} wrong_thread_t;

static void wrong_thread(void* p) {
  wrong_thread_t* w = p;
  w->rc = weft_atomic_wait_async32(w->loop, w->sh, 0, 0, 10, on_wait, NULL);
}

Test(shared, wait_async_from_another_thread_is_rejected) {
  wrong_thread_t w = {NULL, new_shared(8), 0};
  uv_thread_t t;
  w.loop = new_loop();
  cr_assert_eq(uv_thread_create(&t, wrong_thread, &w), 0);
  cr_assert_eq(uv_thread_join(&t), 0);
  cr_assert_eq(w.rc, WEFT_EWRONGTHREAD);
  cr_assert_eq(weft_loop_run(w.loop), 0);
  cr_assert_eq(weft_loop_free(w.loop), 0);
  weft_shared_release(w.sh);
}

/* --- waitAsync on a worker's loop ------------------------------------------
 */

/* Slots used below: 0 the waited slot, 1 "queued" flag, 2 the callback's
 * result + 1 (0: the callback did not run). */

static void record_result(weft_loop_t* loop, void* arg, weft_wait_result_t r) {
  (void)loop;
  weft_atomic_store32(arg, 2, (int32_t)r + 1);
  weft_worker_exit(0);
}

static void queue_then_signal(weft_loop_t* loop, weft_shared_t* sh) {
  cr_assert_eq(weft_atomic_wait_async32(loop, sh, 0, 0, -1, record_result, sh),
               0);
  weft_atomic_store32(sh, 1, 1);
  weft_atomic_notify32(sh, 1, -1, NULL);
}

static void entry_wait_then_exit(weft_loop_t* loop, void* arg) {
  queue_then_signal(loop, arg);
  /* Ends the worker with the wait still pending. */
  weft_worker_exit(0);
}

static void entry_wait(weft_loop_t* loop, void* arg) {
  queue_then_signal(loop, arg);
}

static int exit_code_seen = -1;

static void on_worker_exit(weft_worker_t* w, int code) {
  (void)w;
  exit_code_seen = code;
}

static void run_worker(weft_shared_t* sh,
                       weft_worker_entry_cb entry,
                       bool notify_it) {
  weft_loop_t* loop = NULL;
  weft_worker_t* w = NULL;
  weft_worker_opts_t opts = {0};
  weft_wait_result_t r;
  int32_t queued;
  int woken = -1;

  opts.arg = sh; /* The test holds its reference until the end. */
  opts.events.exit = on_worker_exit;
  loop = new_loop();
  w = spawn_worker(loop, entry, &opts);
  if (notify_it) {
    /* Wait for the worker to queue its wait, then resolve it from here. */
    for (;;) {
      weft_atomic_load32(sh, 1, &queued);
      if (queued)
        break;
      weft_atomic_wait32(sh, 1, 0, -1, &r);
    }
    await_waiters(sh, 0, 4, 1);
    cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
    cr_assert_eq(woken, 1);
  }
  run_loop(loop);
  cr_assert_eq(exit_code_seen, 0);
  weft_worker_free(w);
  free_loop(loop);
}

Test(shared, wait_async_on_a_worker_resolved_from_main) {
  weft_shared_t* sh = new_shared(16);
  int32_t result;
  run_worker(sh, entry_wait, true);
  weft_atomic_load32(sh, 2, &result);
  cr_assert_eq(result, WEFT_WAIT_OK + 1);
  weft_shared_release(sh);
}

Test(shared, wait_async_pending_when_worker_ends_is_dropped) {
  weft_shared_t* sh = new_shared(16);
  int32_t queued, result;
  int woken = -1;
  run_worker(sh, entry_wait_then_exit, false);
  weft_atomic_load32(sh, 1, &queued);
  cr_assert_eq(queued, 1);
  /* The wait left the list with its loop, without calling back. */
  cr_assert_eq(weft__shared_waiters(sh, 0, 4), 0);
  cr_assert_eq(weft_atomic_notify32(sh, 0, -1, &woken), 0);
  cr_assert_eq(woken, 0);
  weft_atomic_load32(sh, 2, &result);
  cr_assert_eq(result, 0);
  weft_shared_release(sh);
}

/* Issue 5, item 1: a wait with a timer is notified (the notify queues the
 * completion task) and the worker ends before that task runs. The
 * teardown and the task must close the wait's timer exactly once (libuv
 * aborts on a second close) and free the waiter once (ASan). The worker
 * notifies itself, so the task is queued for sure, then exits before its
 * loop runs. */
static void entry_notified_then_exit(weft_loop_t* loop, void* arg) {
  weft_shared_t* sh = arg;
  int woken = -1;
  cr_assert_eq(
      weft_atomic_wait_async32(loop, sh, 0, 0, 10000, record_result, sh), 0);
  cr_assert_eq(weft_atomic_notify32(sh, 0, 1, &woken), 0);
  cr_assert_eq(woken, 1);
  weft_worker_exit(0);
}

Test(shared, wait_async_notified_then_worker_ends_closes_timer_once) {
  weft_shared_t* sh = new_shared(16);
  int32_t result;
  for (int i = 0; i < 20; i++) {
    exit_code_seen = -1;
    run_worker(sh, entry_notified_then_exit, false);
    /* The loop was closing when the task ran: no callback. */
    weft_atomic_load32(sh, 2, &result);
    cr_assert_eq(result, 0);
    cr_assert_eq(weft__shared_waiters(sh, 0, 4), 0);
  }
  weft_shared_release(sh);
}

/* Issue 5, item 8: a waitAsync timeout counts from the call, not from the
 * loop's cached time (as old as its last turn). Lower bound only. */
typedef struct timed_wait_s {
  uint64_t set_at;
  uint64_t done_at;
  weft_wait_result_t result;
  int calls;
} timed_wait_t;

static void on_timed_wait(weft_loop_t* loop, void* arg, weft_wait_result_t r) {
  timed_wait_t* t = arg;
  (void)loop;
  t->done_at = uv_hrtime();
  t->result = r;
  t->calls++;
}

Test(shared, wait_async_timeout_counts_from_the_call) {
  weft_loop_t* loop = NULL;
  weft_shared_t* sh = new_shared(16);
  timed_wait_t a = {0, 0, WEFT_WAIT_OK, 0};
  timed_wait_t b = {0, 0, WEFT_WAIT_OK, 0};

  loop = new_loop();
  busy_ms(300);
  a.set_at = uv_hrtime();
  cr_assert_eq(
      weft_atomic_wait_async32(loop, sh, 0, 0, 50, on_timed_wait, &a), 0);
  busy_ms(20);
  b.set_at = uv_hrtime();
  cr_assert_eq(
      weft_atomic_wait_async32(loop, sh, 1, 0, 200, on_timed_wait, &b), 0);
  run_loop(loop);
  cr_assert_eq(a.calls, 1);
  cr_assert_eq(a.result, WEFT_WAIT_TIMED_OUT);
  cr_assert_geq(a.done_at - a.set_at, 50 * 1000000u, "timed out after %.1f ms",
                (double)(a.done_at - a.set_at) / 1e6);
  cr_assert_eq(b.calls, 1);
  cr_assert_eq(b.result, WEFT_WAIT_TIMED_OUT);
  cr_assert_geq(b.done_at - b.set_at, 200 * 1000000u,
                "timed out after %.1f ms", (double)(b.done_at - b.set_at) / 1e6);
  free_loop(loop);
  weft_shared_release(sh);
}
